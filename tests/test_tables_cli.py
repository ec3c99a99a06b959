"""Tables in narrow terminals and logs (issue 10 point 8): key cells are never cut, and every command that
prints a table offers --json (the same rows, stable keys, nothing else on stdout)."""

from __future__ import annotations

import io
import json

import pytest
from rich.console import Console
from typer.testing import CliRunner

from medtransfer.cli import app
from medtransfer.listing import Column, Listing, show
from medtransfer.testing.backbones import TINY_CNN, register_tiny_backbones

register_tiny_backbones()
NARROW = {"COLUMNS": "40"}  # a narrow terminal's width, on output that is not a terminal (CliRunner: a log)


def _listing() -> Listing:
    listing = Listing(title="t", columns=(Column("backbone", key=True), Column("method", key=True),
                                          Column("note"), Column("MCC", justify="right")))
    for backbone, method in (("resnet50-v2", "fewshot-logreg@cls_mean"), ("dinov2-s", "lora-r16-attn-mlp")):
        listing.add([backbone, method, "a long note that may wrap anywhere it likes", "0.512 ± 0.034"],
                    {"backbone": backbone, "method": method})
    return listing


def _printed(width: int, terminal: bool) -> str:
    out = io.StringIO()
    show(_listing(), Console(file=out, width=width, force_terminal=terminal, color_system=None))
    return out.getvalue()


@pytest.mark.parametrize(("width", "terminal", "boxed"), [(200, True, True), (72, True, True), (40, True, False),
                                                          (40, False, False), (200, False, False)])
def test_key_cells_are_whole_on_any_width(width, terminal, boxed):
    text = _printed(width, terminal)
    lines = text.splitlines()
    for cell in ("resnet50-v2", "fewshot-logreg@cls_mean", "dinov2-s", "lora-r16-attn-mlp"):
        assert any(cell in line for line in lines), (cell, text)
    assert "…" not in text
    assert ("┃" in text) == boxed  # a terminal too narrow for the key cells gets the plain layout
    if boxed:
        assert max(len(line) for line in lines) <= width
    else:  # plain: one line per row, columns aligned, nothing cut
        assert any("a long note that may wrap anywhere it likes" in line and "dinov2-s" in line for line in lines)


@pytest.fixture(scope="module")
def study(small_manifest, tmp_path_factory):
    work = tmp_path_factory.mktemp("tables")
    runner = CliRunner()
    for args in (["splits", small_manifest, "--folds", "3", "--shots", "2", "--seeds", "1",
                  "--out", work / "splits.json"],
                 ["extract", small_manifest, "--backbone", TINY_CNN, "--weights", "random", "--store",
                  work / "f.zarr", "--workers", "0"]):
        result = runner.invoke(app, [str(a) for a in args], catch_exceptions=False)
        assert result.exit_code == 0, result.output
    return work


def _run(*args, json_output: bool = False):
    runner = CliRunner(env=NARROW)
    result = runner.invoke(app, [str(a) for a in args] + (["--json"] if json_output else []),
                           catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result


def _table_and_rows(*args, keys: tuple[str, ...]) -> list[dict]:
    """Run a command plainly and with --json: the JSON parses and has rows with ``keys``; every key cell of
    those rows appears whole in the plain output, none cut with an ellipsis."""
    rows = json.loads(_run(*args, json_output=True).stdout)
    assert isinstance(rows, list) and rows, args
    assert all(set(keys) <= set(row) for row in rows)
    assert len({tuple(sorted(row)) for row in rows}) == 1, "every row has the same keys"
    text = _run(*args).stdout
    assert "…" not in text
    lines = text.splitlines()
    for row in rows:
        cells = [str(row[k]) for k in keys if row[k] not in (None, "")]
        assert any(all(cell in line for cell in cells) for line in lines), (cells, text)
    return rows


def test_backbones_and_datasets(study):
    rows = _table_and_rows("backbones", keys=("name",))
    assert "resnet50-v2" in {r["name"] for r in rows} and "peft_presets" in rows[0]
    rows = _table_and_rows("datasets", "list", keys=("name", "dataset"))
    assert {r["name"] for r in rows} >= {"AFC", "NY_small"}


def test_methods(study):
    rows = _table_and_rows("methods", "--reference", TINY_CNN, keys=("method",))
    lora = next(r for r in rows if r["method"] == "lora")
    assert lora["pct_trainable"][TINY_CNN] > 0 and lora["options"]


def test_cache_info_and_verify(study):
    rows = _table_and_rows("cache", "info", study / "f.zarr", keys=("key", "backbone", "weights"))
    assert [r["backbone"] for r in rows] == [TINY_CNN]
    result = _run("cache", "verify", study / "f.zarr", json_output=True)
    assert json.loads(result.stdout) == []


def test_probe_adapt_and_summary(study, small_manifest):
    probe = ("probe", "--store", study / "f.zarr", "--splits", study / "splits.json", "--backbone", TINY_CNN,
             "--out", study / "results")
    rows = _table_and_rows(*probe, keys=("backbone", "method", "regime"))
    assert {r["regime"] for r in rows} == {"full", "fewshot"} and all(r["method"] == "logreg" for r in rows)
    assert {"mcc_mean", "mcc_ci_low", "n_runs"} <= set(rows[0])

    adapt = ("adapt", small_manifest, "--splits", study / "splits.json", "--backbone", TINY_CNN, "--method", "lora",
             "--rank", "2", "--weights", "random", "--epochs", "1", "--regime", "full", "--folds", "0",
             "--image-size", "32", "--out", study / "results")
    result = _run(*adapt, json_output=True)
    rows = json.loads(result.stdout)  # the epoch lines and "results ->" went to stderr
    assert [(r["row"], r["regime"], r["fold"]) for r in rows] == [("fold", "full", 0), ("mean", "full", None)]
    assert "trainable" in result.stderr and "results ->" in result.stderr
    text = _run(*adapt).stdout
    assert "mean ± std" in text and "…" not in text

    rows = _table_and_rows("summary", study / "results", keys=("task", "backbone", "strategy"))
    assert {r["strategy"].split()[0] for r in rows} >= {"logreg"}
    assert any(r["method"].startswith("lora") for r in rows)
