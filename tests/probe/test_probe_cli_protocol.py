"""`probe --unit patient` and `probe --tune budget` end to end through the CLI (splits -> extract -> probe):
the results table records the unit and the tuning, patient-level rows score one prediction per test patient (the
mean of its images' probabilities), and budget tuning of a few-shot task reads no val label (issue 18, points 6
and 7; the units are tested in tests/stats)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from medtransfer.testing.backbones import TINY_CNN, register_tiny_backbones

register_tiny_backbones()

KEY = ["fold", "regime", "shots", "seed"]


@pytest.fixture(scope="module")
def study(small_manifest, tmp_path_factory):
    from typer.testing import CliRunner

    from medtransfer.cli import app

    work = tmp_path_factory.mktemp("probe-cli")
    runner = CliRunner()
    for args in (
        ["splits", small_manifest, "--folds", "3", "--shots", "2,4", "--seeds", "2", "--out", work / "splits.json"],
        ["extract", small_manifest, "--backbone", TINY_CNN, "--weights", "random", "--store", work / "f.zarr"],
    ):
        result = runner.invoke(app, [str(a) for a in args], catch_exceptions=False)
        assert result.exit_code == 0, result.output
    return work


def _probe(cli, study, out, *options, splits="splits.json"):
    result = cli("probe", "--store", study / "f.zarr", "--splits", study / splits, "--backbone", TINY_CNN,
                 "--regime", "full", "--regime", "fewshot", "--out", study / out, *options)
    assert result.exit_code in (0, 1), result.output  # 1: some task failed (a row says why)
    return (pd.read_parquet(study / out / "results.parquet").sort_values(KEY).reset_index(drop=True),
            pd.read_parquet(study / out / "predictions.parquet"))


def test_unit_patient_scores_each_test_patient_once_by_the_mean_of_its_images(study, cli):
    per_image, image_predictions = _probe(cli, study, "image")
    per_patient, patient_predictions = _probe(cli, study, "patient", "--unit", "patient")
    assert (per_image["unit"] == "image").all() and (per_patient["unit"] == "patient").all()
    assert (per_patient["status"] == "ok").all()
    splits = json.loads((study / "splits.json").read_text())
    groups = splits["groups"]
    for row in per_patient.itertuples():
        test_patients = sorted({groups[i] for i in splits["folds"][row.fold]["test"]})
        mine = patient_predictions[(patient_predictions[KEY] == pd.Series(row._asdict())[KEY]).all(axis=1)]
        assert row.n_test == len(test_patients) == len(mine)
        assert sorted(mine["id"]) == test_patients and (mine["id"] == mine["patient"]).all()
    # some test patient has several images, or the aggregation would be the identity
    assert (per_patient["n_test"] < per_image["n_test"]).all()
    expected = (image_predictions.groupby([*KEY, "patient"])["probability"].mean().rename("expected")
                .reset_index().rename(columns={"patient": "id"}))
    joined = patient_predictions.merge(expected, on=[*KEY, "id"], validate="one_to_one")
    assert len(joined) == len(patient_predictions)
    assert np.allclose(joined["probability"], joined["expected"], atol=1e-6)
    # the same fits (same C), scored per patient
    assert (per_patient["hyperparameters"] == per_image["hyperparameters"]).all()


def _flip_val_labels(study, fold: int) -> str:
    """A copy of the splits file whose fold-``fold`` val rows carry the other class."""
    splits = json.loads((study / "splits.json").read_text())
    for sample_id in splits["folds"][fold]["val"]:
        splits["labels"][sample_id] = 1 - splits["labels"][sample_id]
    name = f"splits-flipped-val{fold}.json"
    (study / name).write_text(json.dumps(splits))
    return name


def test_tune_budget_records_inner_cv_and_reads_no_val_label_for_few_shot_tasks(study, cli):
    flipped = _flip_val_labels(study, fold=0)
    options = ("--tune", "budget", "--threshold", "val-mcc")
    budget, budget_predictions = _probe(cli, study, "budget", *options)
    assert set(budget.loc[budget["regime"] == "fewshot", "tuning"]) == {"cv"}
    assert set(budget.loc[budget["regime"] == "full", "tuning"]) == {"val"}
    fewshot_ok = budget[(budget["regime"] == "fewshot") & (budget["status"] == "ok")]
    assert len(fewshot_ok) >= 6  # most few-shot tasks have two patients per class for the inner folds
    assert all(json.loads(h)["tuned_by"] == "inner_cv" for h in fewshot_ok["hyperparameters"])
    assert set(fewshot_ok["threshold_rule"]) == {"val-mcc (inner cv)"}
    assert set(budget.loc[budget["regime"] == "full", "threshold_rule"]) == {"val-mcc"}

    # fold 0's val labels flipped: its few-shot rows are the same to the last digit, its full row is not
    again, again_predictions = _probe(cli, study, "budget-flipped", *options, splits=flipped)
    compared = ["status", "hyperparameters", "threshold", "mcc", "pr_auc", "n_train"]
    fold0 = (budget["fold"] == 0) & (budget["regime"] == "fewshot")
    pd.testing.assert_frame_equal(budget.loc[fold0, compared], again.loc[fold0, compared])
    def fold0_fewshot(predictions: pd.DataFrame) -> pd.DataFrame:
        chosen = predictions.query("fold == 0 and regime == 'fewshot'")[[*KEY, "id", "probability"]]
        return chosen.sort_values([*KEY, "id"]).reset_index(drop=True)

    pd.testing.assert_frame_equal(fold0_fewshot(budget_predictions), fold0_fewshot(again_predictions))
    full0 = (budget["fold"] == 0) & (budget["regime"] == "full")
    assert not budget.loc[full0, compared].equals(again.loc[full0, compared])  # full data is tuned (and refit) on val

    # --tune val reads those labels for few-shot tasks too: the same flip changes what it chooses
    by_val, _ = _probe(cli, study, "val", "--threshold", "val-mcc")
    by_val_flipped, _ = _probe(cli, study, "val-flipped", "--threshold", "val-mcc", splits=flipped)
    assert set(by_val["tuning"]) == {"val"}
    chose = ["hyperparameters", "threshold"]
    assert not by_val.loc[fold0, chose].equals(by_val_flipped.loc[fold0, chose])
