"""Issue 19 through the CLI (tried as a new user would), probe and report side: probe writes per (backbone,
head) and skips finished work on rerun (1), a mismatched folder is refused before any fit (3), weights in the
key (4), degenerate heads flagged (5), n=1 and the small items (7). The report at scale is in tests/report."""

from __future__ import annotations

import time
from pathlib import Path

import pandas as pd
import pytest

import medtransfer.probe.run as probe_run
from medtransfer.probe.fitting import fit_tasks
from medtransfer.probe.heads import resolve_heads
from medtransfer.results import read_rows


@pytest.fixture(scope="module")
def work(small_manifest, tmp_path_factory):
    from typer.testing import CliRunner

    from medtransfer.cli import app

    folder = tmp_path_factory.mktemp("newuser")
    runner = CliRunner()
    for args in (
        ["splits", small_manifest, "--folds", "2", "--shots", "2", "--seeds", "1", "--out", folder / "splits.json"],
        ["splits", small_manifest, "--folds", "2", "--seed", "3", "--out", folder / "other.json"],
        ["extract", small_manifest, "--backbone", "resnet18", "--weights", "random", "--store", folder / "f.zarr"],
    ):
        result = runner.invoke(app, [str(a) for a in args], catch_exceptions=False)
        assert result.exit_code == 0, result.output
    return folder


def _probe(cli, work, out, *extra):
    return cli("probe", "--store", work / "f.zarr", "--splits", work / "splits.json", "--backbone", "resnet18",
               "--out", out, *extra)


def _counting(monkeypatch, calls: list, die_on: str | None = None):
    """Heads that count their fits (and one that dies like a killed process)."""
    import dataclasses

    def wrapped(names):
        specs = []
        for spec in resolve_heads(names):
            def fitter(ctx, tasks, *, _spec=spec):
                calls.append(_spec.name)
                if _spec.name == die_on:
                    raise KeyboardInterrupt
                return fit_tasks(_spec, ctx, tasks)
            specs.append(dataclasses.replace(spec, fitter=lambda _s, ctx, tasks, _f=fitter: _f(ctx, tasks)))
        return specs

    monkeypatch.setattr(probe_run, "resolve_heads", wrapped)


def _as_one_table(folder: Path, table: pd.DataFrame) -> None:
    """``folder`` holding only ``table``, in the one-table layout older versions wrote (no parts)."""
    import shutil

    shutil.rmtree(folder / "parts")
    (folder / ".splits").unlink()
    table.to_parquet(folder / "results.parquet", index=False)


def test_probe_writes_each_head_and_skips_it_on_rerun(cli, work, tmp_path, monkeypatch):
    calls: list[str] = []
    _counting(monkeypatch, calls, die_on="centroid")
    killed = _probe(cli, work, tmp_path, "--head", "logreg", "--head", "centroid")  # Ctrl-C: click aborts
    assert killed.exit_code == 130  # what a shell reports for Ctrl-C
    written = read_rows(tmp_path)  # killed before its end: parts only, no one-file export
    assert set(written["method"]) == {"logreg"} and len(written) == 4  # 2 folds x (full + 2-shot)
    _counting(monkeypatch, calls)
    calls.clear()
    assert _probe(cli, work, tmp_path, "--head", "logreg", "--head", "centroid").exit_code == 0
    assert calls == ["centroid"]  # logreg was finished: skipped
    calls.clear()
    assert _probe(cli, work, tmp_path, "--head", "logreg", "--class-weight", "none").exit_code == 0
    assert calls == ["logreg"]  # other settings: fitted again, never the old rows
    calls.clear()
    assert _probe(cli, work, tmp_path, "--head", "logreg", "--head", "centroid", "--force").exit_code == 0
    assert calls == ["logreg", "centroid"]
    assert len(pd.read_parquet(tmp_path / "results.parquet")) == 8


def test_mismatched_folder_is_refused_before_any_fit(cli, work, tmp_path, monkeypatch):
    assert _probe(cli, work, tmp_path).exit_code == 0
    calls: list[str] = []
    _counting(monkeypatch, calls)
    start = time.perf_counter()
    result = cli("probe", "--store", work / "f.zarr", "--splits", work / "other.json", "--backbone", "resnet18",
                 "--out", tmp_path, "--head", "all")
    assert result.exit_code == 2 and "another splits file" in result.stderr and calls == []
    assert time.perf_counter() - start < 10


def test_weights_are_part_of_the_key_and_shown(cli, work, tmp_path, small_manifest):
    assert _probe(cli, work, tmp_path, "--regime", "full", "--task", "cxr").exit_code == 0
    table = pd.read_parquet(tmp_path / "results.parquet")
    table["weights"] = "checkpoint.pt"  # as a second probe with --weights PATH writes it
    from medtransfer.results import ResultRow, write_results

    columns = {f for f in ResultRow.__dataclass_fields__} - {"extra"}
    write_results(tmp_path, [ResultRow(**{k: v for k, v in r.items() if k in columns})
                             for r in table.to_dict("records")])
    both = read_rows(tmp_path)
    assert sorted(both["weights"].unique()) == ["checkpoint.pt", "random"] and len(both) == 4
    assert set(both["task"]) == {"cxr"}
    summary = cli("summary", tmp_path)
    assert "resnet18 [random]" in summary.output and "resnet18 [checkpoint.pt]" in summary.output
    assert "cxr" in summary.output and "results " not in summary.output.split("\n")[2]
    report = cli("report", tmp_path, "--out", tmp_path / "report")
    page = (tmp_path / "report" / "index.html").read_text()
    assert report.exit_code == 0 and 'id="weights"' in page and "Random (untrained) weights" in page


def test_older_tables_without_the_new_key_columns_still_read(cli, work, tmp_path):
    assert _probe(cli, work, tmp_path, "--regime", "full").exit_code == 0
    old = pd.read_parquet(tmp_path / "results.parquet").drop(
        columns=["weights", "embedding", "peft_targets", "config", "task", "degenerate"])
    predictions = pd.read_parquet(tmp_path / "predictions.parquet")
    _as_one_table(tmp_path, old)  # a folder as versions before part files wrote it
    predictions.drop(columns=["weights", "embedding", "preprocessing", "peft_targets"]).to_parquet(
        tmp_path / "predictions.parquet", index=False)
    assert cli("summary", tmp_path).exit_code == 0
    assert _probe(cli, work, tmp_path, "--regime", "full").exit_code == 0  # old rows (weights "") kept beside
    assert cli("summary", tmp_path).exit_code == 0
    table = read_rows(tmp_path)
    assert sorted(table["weights"].unique()) == ["", "random"]


def test_degenerate_heads_are_flagged(cli, work, tmp_path, monkeypatch):
    import numpy as np

    from medtransfer.probe.context import HeadFit

    def constant(ctx, tasks):
        for task in tasks:
            proba = np.tile([0.7, 0.3], (len(task.test), 1))
            yield HeadFit({}, None, None, proba, 0.0, len(task.train))

    import dataclasses

    monkeypatch.setattr(probe_run, "resolve_heads", lambda names: [
        dataclasses.replace(s, fitter=lambda _s, ctx, tasks: constant(ctx, tasks)) for s in resolve_heads(names)])
    result = _probe(cli, work, tmp_path, "--head", "hgb")
    assert result.exit_code == 0
    assert "predicted one class for every test sample" in result.stderr
    table = pd.read_parquet(tmp_path / "results.parquet")
    assert table["degenerate"].all() and (table["status"] == "ok").all()
    cli("report", tmp_path, "--out", tmp_path / "report")
    page = (tmp_path / "report" / "index.html").read_text()
    assert "degenerate: one class predicted" in page and "constant)" in page
    assert "(2 constant)" in cli("summary", tmp_path).output


def test_small_items(cli, work, tmp_path):
    result = _probe(cli, work, tmp_path, "--regime", "fraction")
    assert result.exit_code == 2 and "splits MANIFEST --fractions" in result.stderr
    one = cli("probe", "--store", work / "f.zarr", "--splits", work / "splits.json", "--backbone", "resnet18",
              "--out", tmp_path / "one", "--regime", "full")
    assert one.exit_code == 0
    table = pd.read_parquet(tmp_path / "one" / "results.parquet")
    _as_one_table(tmp_path / "one", table[table["fold"] == 0])
    summary = cli("summary", tmp_path / "one").output
    assert "(n=1)" in summary and "nan" not in summary
    listed = cli("backbones").output
    assert "extract --backbone seed" in " ".join(listed.split())
    marked = {line.split()[0] for line in listed.splitlines()[3:] if line.split()[1:2] == ["*"]}
    assert {"resnet50", "dinov2-s"} <= marked and "rad-dino" not in marked and "resnet18" not in marked
    gitignore = (__import__("pathlib").Path(__file__).parents[1] / ".gitignore").read_text().split()
    assert "*.lock" in gitignore


def test_hf_offline_fails_fast_without_the_flag_already_given(cli, small_manifest, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    from medtransfer.backbones import hub

    hub.hub_offline.cache_clear()
    start = time.perf_counter()
    result = cli("extract", small_manifest, "--backbone", "hf:nobody/no-such-model", "--weights", "random",
                 "--store", tmp_path / "f.zarr")
    elapsed = time.perf_counter() - start
    hub.hub_offline.cache_clear()
    assert result.exit_code == 2 and result.stderr.startswith("error: ")
    assert "--weights random" not in result.stderr.replace("with any --weights, random included", "")
    assert "hf:FOLDER" in result.stderr and elapsed < 20
