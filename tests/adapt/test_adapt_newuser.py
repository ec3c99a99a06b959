"""Issue 19 through the CLI, adapt side: a changed configuration is never kept by --resume (point 2), a
mismatched results folder is refused before training (point 3), --image-size, --task and the CPU-time warning
(point 7)."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from typer.testing import CliRunner

from medtransfer.cli import app
from medtransfer.data.manifest import load_manifest
from medtransfer.data.synthetic import SyntheticSpec, make_synthetic_dataset
from medtransfer.splits import SplitSpec, make_splits, save_splits
from medtransfer.testing.backbones import TINY_CNN


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    folder = tmp_path_factory.mktemp("newuser-adapt")
    manifest = make_synthetic_dataset(folder / "data", SyntheticSpec(n_patients=60, image_size=32, signal=1.5))
    splits = save_splits(make_splits(load_manifest(manifest), SplitSpec(n_folds=2)), folder / "splits.json")
    other = save_splits(make_splits(load_manifest(manifest), SplitSpec(n_folds=2, seed=5)), folder / "other.json")
    return manifest, splits, other


def _adapt(data, out, *extra):
    manifest, splits, _ = data
    args = ["adapt", manifest, "--splits", splits, "--backbone", TINY_CNN, "--method", "lora", "--rank", "2",
            "--weights", "random", "--regime", "full", "--folds", "0", "--batch-size", "16", "--out", out, *extra]
    return CliRunner().invoke(app, [str(a) for a in args], catch_exceptions=False)


def test_resume_with_another_configuration_is_refused_not_kept(data, tmp_path):
    first = _adapt(data, tmp_path, "--epochs", "1", "--lr", "1e-5", "--task", "cxr-icu")
    assert first.exit_code == 0, first.output
    row = pd.read_parquet(tmp_path / "results.parquet").iloc[0]
    assert row["task"] == "cxr-icu" and len(row["config"]) == 12
    changed = _adapt(data, tmp_path, "--epochs", "2", "--lr", "1e-3", "--resume")
    assert changed.exit_code == 2
    assert changed.stderr.startswith("error: --resume: task full-fold0") and "another configuration" in changed.stderr
    assert len(changed.stderr.strip().splitlines()) == 1
    same = _adapt(data, tmp_path, "--epochs", "1", "--lr", "1e-5", "--resume")
    assert same.exit_code == 0 and "kept (--resume)" in same.output
    again = _adapt(data, tmp_path, "--epochs", "2", "--lr", "1e-3")  # without --resume: a new run, replaced
    assert again.exit_code == 0
    table = pd.read_parquet(tmp_path / "results.parquet")
    assert len(table) == 1 and table["config"].iloc[0] != row["config"]
    assert json.loads(table["hyperparameters"].iloc[0])["lr"] == pytest.approx(1e-3)


def test_mismatched_results_folder_is_refused_before_training(data, tmp_path, monkeypatch):
    manifest, splits, other = data
    assert _adapt(data, tmp_path, "--epochs", "1").exit_code == 0
    import medtransfer.adapt.run as run

    def no_training(*args, **kwargs):
        raise AssertionError("trained before checking the results folder")

    monkeypatch.setattr(run, "load_backbone", no_training)
    args = ["adapt", manifest, "--splits", other, "--backbone", TINY_CNN, "--weights", "random", "--out", tmp_path]
    result = CliRunner().invoke(app, [str(a) for a in args], catch_exceptions=False)
    assert result.exit_code == 2 and "another splits file" in result.stderr


def test_image_size_is_recorded_and_a_long_cpu_run_warns(data, tmp_path, monkeypatch):
    quick = _adapt(data, tmp_path, "--epochs", "1", "--image-size", "16")
    assert quick.exit_code == 0, quick.output
    full = _adapt(data, tmp_path, "--epochs", "1")
    assert full.exit_code == 0
    table = pd.read_parquet(tmp_path / "results.parquet")
    assert sorted(table["preprocessing"]) == ["standardize", "standardize+16px"]  # neither replaced the other

    import medtransfer.adapt.run as run

    monkeypatch.setattr(run, "seconds_per_image", lambda *a, **k: 200.0)  # 45 images: over an hour
    with pytest.warns(UserWarning, match=r"this CPU run will take about [\d.]+ h .*--image-size"):
        assert _adapt(data, tmp_path / "long", "--epochs", "1", "--device", "cpu").exit_code == 0
