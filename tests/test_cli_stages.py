"""Every later stage through the CLI on one small study: cache info/verify, probe options, adapt into the same
results folder, report and summary. The units are tested in each stage's own test file; this checks the wiring."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from typer.testing import CliRunner

from medtransfer.cli import app
from medtransfer.testing.backbones import TINY_CNN, register_tiny_backbones

register_tiny_backbones()


@pytest.fixture(scope="module")
def study(small_manifest, tmp_path_factory):
    work = tmp_path_factory.mktemp("stages")
    runner = CliRunner()
    for args in (
        ["splits", small_manifest, "--folds", "3", "--shots", "2,4", "--seeds", "2", "--fractions", "0.5",
         "--out", work / "splits.json"],
        ["extract", small_manifest, "--backbone", TINY_CNN, "--backbone", "resnet18", "--weights", "random",
         "--store", work / "f.zarr", "--pixel-cache", work / "pixels.zarr"],
    ):
        result = runner.invoke(app, [str(a) for a in args], catch_exceptions=False)
        assert result.exit_code == 0, result.output
    return work


def test_cache_info_and_verify(study, cli):
    result = cli("cache", "info", study / "f.zarr", "--json")
    assert result.exit_code == 0, result.output
    groups = json.loads(result.stdout)
    assert {g["backbone"] for g in groups} == {TINY_CNN, "resnet18"}
    assert all(g["complete"] and g["n_valid"] == g["n"] for g in groups)
    result = cli("cache", "verify", study / "f.zarr")
    assert result.exit_code == 0 and "ok" in result.output


def test_probe_heads_regimes_and_threshold(study, cli):
    result = cli("probe", "--store", study / "f.zarr", "--splits", study / "splits.json", "--backbone", "all",
                 "--head", "logreg", "--head", "centroid", "--regime", "full", "--regime", "fewshot",
                 "--regime", "fraction", "--threshold", "val-mcc", "--out", study / "results")
    assert result.exit_code == 0, result.output
    table = pd.read_parquet(study / "results" / "results.parquet")
    assert set(table["backbone"]) == {TINY_CNN, "resnet18"}
    assert set(table["method"]) == {"logreg", "centroid"}
    assert set(table["regime"]) == {"full", "fewshot", "fraction"}
    assert (table["threshold_rule"] == "val-mcc").all()


def test_adapt_writes_into_the_same_table(study, small_manifest, cli):
    result = cli("adapt", small_manifest, "--splits", study / "splits.json", "--backbone", TINY_CNN,
                 "--method", "lora", "--rank", "4", "--weights", "random", "--epochs", "1", "--regime", "full",
                 "--folds", "0", "--pixel-cache", study / "pixels.zarr", "--out", study / "results")
    assert result.exit_code == 0, result.output
    assert "trainable" in result.output
    table = pd.read_parquet(study / "results" / "results.parquet")
    adapted = table[table["method"].str.startswith("lora")]
    assert len(adapted) == 1 and adapted["pct_trainable"].iloc[0] > 0
    # the default --targets preset, and the modules it wrapped (the tiny CNN's conv1 and conv2)
    assert adapted["peft_targets"].iloc[0] == "attn-mlp" and adapted["n_wrapped_modules"].iloc[0] == 2
    assert {"logreg", "centroid"} <= set(table["method"]), "probe rows are kept"


def test_adapt_targets_is_a_peft_option(study, small_manifest, tmp_path, cli):
    for method, targets, says in (("fft", "attn", "no option(s) targets"),
                                  ("lora", "everything", "--targets must be one of")):
        result = cli("adapt", small_manifest, "--splits", study / "splits.json", "--backbone", TINY_CNN,
                     "--method", method, "--targets", targets, "--weights", "random", "--out", tmp_path / "r")
        assert result.exit_code == 2 and result.stderr.startswith("error: ") and says in result.stderr, result.output


def test_adapt_refuses_a_splits_file_from_another_manifest(study, small_manifest, tmp_path, cli):
    table = pd.read_csv(small_manifest)
    table["image"] = [str(small_manifest.parent / p) for p in table["image"]]
    table.loc[0, "label"] = 1 - table.loc[0, "label"]
    table.to_csv(tmp_path / "other.csv", index=False)
    result = cli("adapt", tmp_path / "other.csv", "--splits", study / "splits.json", "--backbone", TINY_CNN,
                 "--method", "lp", "--weights", "random", "--out", tmp_path / "r")
    assert result.exit_code == 2 and "another manifest" in result.stderr


def test_report_and_summary(study, cli):
    # runs after the probe and adapt tests above (pytest keeps file order)
    result = cli("report", study / "results", "--out", study / "report")
    assert result.exit_code == 0, result.output
    page = (study / "report" / "index.html").read_text()
    assert page.count("data:image/svg+xml;base64") >= 4 and "logreg" in page and "lora" in page
    assert (study / "report" / "tables").is_dir()
    result = cli("summary", study / "results")
    assert result.exit_code == 0 and "logreg" in result.output
    result = cli("report", study / "missing", "--out", study / "r2")
    assert result.exit_code == 2 and result.stderr.startswith("error: ")
