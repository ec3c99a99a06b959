"""The benchmark's six tasks as presets, on small synthetic replicas of each public layout."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from dicom_replicas import afc_replica, car_replica, cc_replica, ny_replica
from medtransfer.datasets import DATASETS, PresetOverrides, prepare_dataset

REPLICAS = {"AFC": afc_replica, "AFC_m": afc_replica, "CAR": car_replica, "CC": cc_replica,
            "NY_small": ny_replica, "NY_all": ny_replica}
# what each replica holds: images, patients, centers, balance (0:1 %), folds
EXPECTED = {
    "AFC": (48, 48, 6, "50:50", 6),
    "AFC_m": (48, 48, 6, "75:25", 6),
    "CAR": (30, 30, 1, "67:33", 5),  # one radiograph per patient; the CT and later CXRs left out
    "CC": (59, 20, 1, "76:24", 5),
    "NY_small": (40, 40, 1, "75:25", 5),
    "NY_all": (79, 40, 1, "76:24", 5),
}


@pytest.fixture(scope="module")
def replicas(tmp_path_factory):
    made = {}
    for builder in {afc_replica, car_replica, cc_replica, ny_replica}:
        made[builder] = builder(tmp_path_factory.mktemp(builder.__name__))
    return {name: made[builder] for name, builder in REPLICAS.items()}


def test_registry_holds_the_six_tasks():
    assert list(DATASETS) == ["AFC", "AFC_m", "CAR", "CC", "NY_small", "NY_all"]
    assert DATASETS["AFC"].strategy == "loco" and {DATASETS[n].strategy for n in ("CAR", "CC", "NY_all")} == {"kfold"}


@pytest.mark.parametrize("name", list(REPLICAS))
def test_prepare_each_preset(name, replicas, tmp_path):
    prepared = prepare_dataset(DATASETS[name], replicas[name], tmp_path, progress=False)
    images, patients, centers, balance, n_folds = EXPECTED[name]
    figures = prepared.figures
    assert (figures.images, figures.patients, figures.centers, figures.balance) == (images, patients, centers,
                                                                                    balance)
    manifest = pd.read_csv(prepared.manifest_path, dtype=str)
    assert set(manifest["label"]) == {"0", "1"} and manifest["outcome"].ne("").all()
    splits = json.loads(prepared.splits_path.read_text())
    assert len(splits["folds"]) == n_folds and splits["strategy"] == DATASETS[name].strategy
    for fold in splits["folds"]:  # no patient in two roles of a fold
        patient = dict(zip(manifest["id"], manifest["patient"], strict=True))
        train = {patient[i] for i in fold["train"] + fold["val"]}
        assert not train & {patient[i] for i in fold["test"]}
    if name == "AFC":
        assert sorted(manifest["center"].unique()) == ["A", "B", "C", "D", "E", "F"]  # upper-cased
        assert sorted(f["held_out_center"] for f in splits["folds"]) == ["A", "B", "C", "D", "E", "F"]
    if name == "CAR":
        assert set(manifest["modality"]) <= {"CR", "DX"}


def test_overrides_reach_the_preset(replicas, tmp_path):
    """NY's ICU variant: another label column and its values, from the command-line overrides."""
    overrides = PresetOverrides(label_column="is_icu", positive=("True",), negative=("False",))
    prepared = prepare_dataset(DATASETS["NY_all"], replicas["NY_all"], tmp_path, overrides=overrides,
                               progress=False)
    assert prepared.figures.balance == "80:20"  # every fifth patient, weighted by their images


def test_unknown_label_values_and_missing_sheet_are_one_line_errors(replicas, cli, tmp_path):
    result = cli("datasets", "prepare", "CC", replicas["CC"], "--out", tmp_path, "--positive", "Deceased")
    assert result.exit_code == 2 and "'Death'" in result.stderr and "--positive" in result.stderr
    result = cli("datasets", "prepare", "AFC", tmp_path, "--out", tmp_path / "o")
    assert result.exit_code == 2 and "AIforCOVID*.xlsx" in result.stderr
    result = cli("datasets", "prepare", "NOPE", tmp_path, "--out", tmp_path / "o")
    assert result.exit_code == 2 and "AFC" in result.stderr


@pytest.mark.parametrize("name", ["AFC", "NY_all"])
def test_prepare_extract_probe_end_to_end(name, replicas, cli, tmp_path):
    """prepare -> extract (tiny random backbone) -> probe, through the CLI, on the replica."""
    result = cli("datasets", "prepare", name, replicas[name], "--out", tmp_path / "study", "--shots", "2",
                 "--seeds", "1")
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    paper_images = f"{DATASETS[name].paper.images:,}"  # the paper's figures are printed beside the download's
    assert "your download" in text and "paper" in text and paper_images in text
    study = tmp_path / "study"
    result = cli("extract", study / "manifest.csv", "--backbone", "resnet18", "--weights", "random",
                 "--store", tmp_path / "f.zarr", "--workers", "0")
    assert result.exit_code == 0, result.output
    result = cli("probe", "--store", tmp_path / "f.zarr", "--splits", study / "splits.json", "--backbone",
                 "resnet18", "--out", tmp_path / "results", "--manifest", study / "manifest.csv")
    assert result.exit_code == 0, result.output
    results = pd.read_csv(tmp_path / "results" / "results.csv")
    n_folds = EXPECTED[name][4]
    assert (results["status"] == "ok").all() and len(results) == n_folds * 2  # full + one 2-shot draw per fold


def test_prepare_json_prints_the_figures_rows(replicas, tmp_path):
    """--json: the download's figures beside the paper's as JSON rows on stdout; the scan lines go to stderr."""
    from typer.testing import CliRunner

    from medtransfer.cli import app

    result = CliRunner(env={"COLUMNS": "40"}).invoke(
        app, ["datasets", "prepare", "CAR", str(replicas["CAR"]), "--out", str(tmp_path / "o"), "--json"],
        catch_exceptions=False)
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    assert [r["source"] for r in rows] == ["your download", "paper"]
    assert rows[0]["images"] == EXPECTED["CAR"][0] and rows[1]["images"] == DATASETS["CAR"].paper.images
    assert "scanned" in result.stderr
