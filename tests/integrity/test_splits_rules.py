"""Hand-edited splits files are refused on load (issue 17.7): probe and adapt read them through load_splits,
which checks the file against the rules make_splits builds by and names the offending ids in one line."""

from __future__ import annotations

import json

import pytest

from medtransfer.errors import MedtransferError
from medtransfer.splits.schema import load_splits
from probe.probe_support import setup


def _train_into_test(doc):
    fold = doc["folds"][0]
    fold["test"] = sorted(fold["test"] + fold["train"][:10])
    return "in both train and test"


def _fewshot_from_test(doc):
    fold = doc["folds"][0]
    fold["fewshot"]["2"]["0"] = fold["test"][:4]
    return "2-shot seed 0 id(s) are not in its train part"


def _test_cut_to_one(doc):
    fold = doc["folds"][1]
    fold["test"] = fold["test"][:1]
    return "labelled id(s) are in no part"


def _label_past_classes(doc):
    doc["labels"]["s0003"] = 7
    return "index past the 2 classes (s0003=7)"


def _id_without_label(doc):
    del doc["labels"]["s0005"]
    return "have no label (s0005)"


def _val_overlaps_train(doc):
    fold = doc["folds"][2]
    fold["val"] = sorted(fold["val"] + fold["train"][:2])
    return "in both train and val"


def _patient_in_two_roles(doc):
    fold = doc["folds"][0]
    doc["groups"] = {i: i for i in doc["labels"]}
    doc["groups"][fold["test"][0]] = doc["groups"][fold["train"][0]] = "p-shared"
    return "p-shared in test and train"


def _empty_test(doc):
    doc["strategy"] = "imported"
    doc["folds"] = doc["folds"][:1]
    doc["folds"][0]["test"] = []
    return "the test part is empty"


def _test_twice_across_folds(doc):
    doc["folds"][1]["test"] = sorted(doc["folds"][1]["test"] + doc["folds"][0]["test"][:1])
    doc["folds"][1]["train"] = [i for i in doc["folds"][1]["train"] if i != doc["folds"][0]["test"][0]]
    doc["folds"][1]["val"] = [i for i in doc["folds"][1]["val"] if i != doc["folds"][0]["test"][0]]
    for by_seed in doc["folds"][1]["fewshot"].values():
        for seed, ids in by_seed.items():
            by_seed[seed] = [i for i in ids if i != doc["folds"][0]["test"][0]]
    return "also in the test part of fold 0"


EDITS = [_train_into_test, _fewshot_from_test, _test_cut_to_one, _label_past_classes, _id_without_label,
         _val_overlaps_train, _patient_in_two_roles, _empty_test, _test_twice_across_folds]


@pytest.fixture()
def made(tmp_path):
    store, splits, _, _ = setup(tmp_path)
    return store, splits


def test_an_unedited_splits_file_loads(made):
    assert len(load_splits(made[1]).folds) == 3


@pytest.mark.parametrize("edit", EDITS, ids=lambda e: e.__name__.strip("_"))
def test_a_hand_edited_splits_file_is_refused_naming_the_ids(made, edit):
    doc = json.loads(made[1].read_text())
    expected = edit(doc)
    made[1].write_text(json.dumps(doc))
    with pytest.raises(MedtransferError, match="breaks its own rules") as caught:
        load_splits(made[1])
    assert expected in str(caught.value)
    assert "\n" not in str(caught.value)


def test_probe_refuses_ten_train_ids_copied_into_test_with_one_line(made, cli, tmp_path):
    store, splits = made
    doc = json.loads(splits.read_text())
    copied = doc["folds"][0]["train"][:10]
    _train_into_test(doc)
    splits.write_text(json.dumps(doc))
    result = cli("probe", "--store", store, "--splits", splits, "--backbone", "tiny", "--out", tmp_path / "res")
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ")
    assert "10 id(s) in both train and test" in lines[0] and copied[0] in lines[0]
    assert not (tmp_path / "res").exists()


def test_repeated_cv_tests_each_id_once_per_repeat_and_loads(small_manifest, tmp_path):
    """``splits --repeats``: an id is tested once in every repeat, which the loader's rule allows per repeat."""
    from medtransfer.data.manifest import load_manifest
    from medtransfer.splits import SplitSpec, make_splits, save_splits

    splits = make_splits(load_manifest(small_manifest), SplitSpec(n_folds=3, shots=(2,), fewshot_seeds=1, repeats=2))
    assert {fold.repeat for fold in splits.folds} == {0, 1}
    save_splits(splits, tmp_path / "repeated.json")
    assert len(load_splits(tmp_path / "repeated.json").folds) == 6
