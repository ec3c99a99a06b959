"""The splits contract: grouped, stratified, LOCO, val carved by patient, few-shot exact and nested, deterministic."""

import json

import numpy as np
import pandas as pd
import pytest

from medtransfer.data.manifest import load_manifest
from medtransfer.errors import MedtransferError
from medtransfer.splits import SCHEMA, SplitSpec, load_splits, make_splits, save_splits


@pytest.fixture(scope="module")
def manifest(small_manifest):
    return load_manifest(small_manifest)


def _patients(manifest, ids):
    by_id = manifest.table.set_index("id")["patient"]
    return set(by_id[list(ids)])


@pytest.mark.parametrize("strategy", ["kfold", "loco", "holdout"])
def test_no_patient_in_two_roles_and_every_role_disjoint(manifest, strategy):
    splits = make_splits(manifest, SplitSpec(strategy=strategy, n_folds=3, shots=(2, 4), fewshot_seeds=2))
    for fold in splits.folds:
        roles = [fold.train, fold.val, fold.test]
        assert all(roles), "every role holds samples"
        assert len(set().union(*map(set, roles))) == sum(map(len, roles)) == len(manifest)
        patients = [_patients(manifest, ids) for ids in roles]
        assert not patients[0] & patients[1]
        assert not patients[0] & patients[2]
        assert not patients[1] & patients[2]


def test_kfold_tests_partition_the_data_and_are_stratified(manifest):
    splits = make_splits(manifest, SplitSpec(strategy="kfold", n_folds=3))
    tests = [sample for fold in splits.folds for sample in fold.test]
    assert sorted(tests) == sorted(manifest.ids)
    overall = np.mean(manifest.labels)
    for fold in splits.folds:
        rate = np.mean([splits.labels[i] for i in fold.test])
        assert abs(rate - overall) < 0.15


def test_loco_holds_out_exactly_one_center_per_fold(manifest):
    splits = make_splits(manifest, SplitSpec(strategy="loco"))
    center = manifest.table.set_index("id")["center"]
    assert [f.held_out_center for f in splits.folds] == ["center0", "center1", "center2"]
    for fold in splits.folds:
        assert set(center[fold.test]) == {fold.held_out_center}
        assert fold.held_out_center not in set(center[fold.train + fold.val])


def test_fewshot_exact_per_class_from_train_and_nested(manifest):
    splits = make_splits(manifest, SplitSpec(shots=(2, 4, 8), fewshot_seeds=3, n_folds=3))
    for fold in splits.folds:
        for seed in range(3):
            previous: set[str] = set()
            for n_shots in (2, 4, 8):
                subset = fold.fewshot[n_shots][seed]
                counts = pd.Series([splits.labels[i] for i in subset]).value_counts()
                assert counts.to_dict() == {0: n_shots, 1: n_shots}
                assert set(subset) <= set(fold.train)
                assert previous <= set(subset)
                previous = set(subset)
        assert fold.fewshot[2][0] != fold.fewshot[2][1], "seeds draw different subsets"


def test_too_many_shots_is_a_clear_error(manifest):
    with pytest.raises(MedtransferError, match=r"fewer than the 500 shots"):
        make_splits(manifest, SplitSpec(shots=(2, 500)))


def test_loco_without_centers_is_a_clear_error(tmp_path, small_manifest):
    table = pd.read_csv(small_manifest).drop(columns="center")
    table.to_csv(tmp_path / "m.csv", index=False)
    with pytest.raises(MedtransferError, match="at least two centers"):
        make_splits(load_manifest(tmp_path / "m.csv", check_files=False), SplitSpec(strategy="loco"))


def test_roundtrip_and_byte_identical(tmp_path, manifest):
    spec = SplitSpec(shots=(2, 4), fewshot_seeds=2, n_folds=3)
    first = save_splits(make_splits(manifest, spec), tmp_path / "a.json")
    second = save_splits(make_splits(manifest, spec), tmp_path / "b.json")
    assert first.read_bytes() == second.read_bytes()
    document = json.loads(first.read_text())
    assert document["schema"] == SCHEMA
    assert document["manifest"]["fingerprint"] == manifest.fingerprint
    assert document["params"]["n_folds"] == 3 and document["strategy"] == "kfold"
    loaded = load_splits(first)
    assert loaded.to_json() == first.read_text()
    other = save_splits(make_splits(manifest, SplitSpec(shots=(2, 4), fewshot_seeds=2, n_folds=3, seed=1)),
                        tmp_path / "c.json")
    assert other.read_bytes() != first.read_bytes()


def test_fingerprint_mismatch_is_detected(manifest):
    splits = make_splits(manifest, SplitSpec(n_folds=3))
    splits.check_manifest(manifest.fingerprint)
    with pytest.raises(MedtransferError, match="made from another manifest"):
        splits.check_manifest("0" * 16)


def test_not_a_splits_file(tmp_path):
    (tmp_path / "x.json").write_text('{"schema": "other"}')
    with pytest.raises(MedtransferError, match="not a medtransfer splits file"):
        load_splits(tmp_path / "x.json")


def test_loco_refuses_patients_seen_at_two_centers(tmp_path, small_manifest):
    table = pd.read_csv(small_manifest)
    patient = table["patient"].value_counts().index[0]  # a patient with several images
    rows = table.index[table["patient"] == patient]
    table.loc[rows[0], "center"] = "center-elsewhere"
    table.to_csv(tmp_path / "m.csv", index=False)
    with pytest.raises(MedtransferError, match=f"more than one center.*{patient}"):
        make_splits(load_manifest(tmp_path / "m.csv", check_files=False), SplitSpec(strategy="loco"))


@pytest.mark.parametrize(("option", "spec"), [("--test-fraction", {"strategy": "holdout", "test_fraction": 0.4}),
                                              ("--val-fraction", {"val_fraction": 0.4})])
def test_a_fraction_that_folds_cannot_meet_is_refused(manifest, option, spec):
    with pytest.raises(MedtransferError, match=f"{option} 0.4 cannot be met.*0.5 is the nearest"):
        make_splits(manifest, SplitSpec(n_folds=3, **spec))


def test_splits_file_carries_patients_for_inner_cv(manifest):
    from types import SimpleNamespace

    from medtransfer.probe.context import inner_splits

    splits = make_splits(manifest, SplitSpec(n_folds=3))
    assert splits.groups == dict(zip(manifest.table["id"], manifest.table["patient"], strict=True))
    all_ids = list(splits.labels)
    context = SimpleNamespace(y_all=np.array([splits.labels[i] for i in all_ids]), splits=splits,
                              data=SimpleNamespace(ids=all_ids), options=SimpleNamespace(inner_folds=3))
    rows = np.array([all_ids.index(i) for i in splits.folds[0].train])
    for fit, evaluate in inner_splits(context, rows):
        assert not {splits.groups[all_ids[r]] for r in rows[fit]} & {splits.groups[all_ids[r]] for r in rows[evaluate]}
