"""Bad inputs through the CLI (issue 10.4): each gives one `error:` line on stderr, exit status 2, no traceback,
and leaves the feature store, the splits file and the results folder byte-identical."""

from __future__ import annotations

import hashlib
import json
import re
import shutil
from pathlib import Path

import pandas as pd
import pytest

from probe.probe_support import setup

PROGRESS = re.compile(r"^[\w -]*:\s+\d+%\|")  # a tqdm bar line (a damaged chunk is met once fitting began)


def _tree_hash(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    """A store, a splits file and a results folder from one real probe run (logreg, full data only)."""
    from typer.testing import CliRunner

    from medtransfer.cli import app

    root = tmp_path_factory.mktemp("bad-inputs")
    store, splits, _, _ = setup(root)
    result = CliRunner().invoke(app, ["probe", "--store", str(store), "--splits", str(splits), "--backbone", "tiny",
                                      "--out", str(root / "results"), "--regime", "full"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return root


def _label_past_classes(work: Path) -> None:
    doc = json.loads((work / "splits.json").read_text())
    doc["labels"]["s0001"] = 5
    (work / "splits.json").write_text(json.dumps(doc))


def _truncate(name: str):
    def corrupt(work: Path) -> None:
        path = next((work / "results").glob(name))
        path.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2])
    return corrupt


def _damage_results_tables(work: Path) -> None:
    """The rows part truncated and the one-file copies gone: report and summary have nothing to fall back to."""
    _truncate(ROWS_PART)(work)
    (work / "results" / "results.csv").unlink()


def _garble(name: str):
    def corrupt(work: Path) -> None:
        path = next((work / "results").glob(name))
        data = bytearray(path.read_bytes())
        data[8:200] = b"\x00" * 192
        path.write_bytes(bytes(data))
    return corrupt


def _without_key_columns(work: Path) -> None:
    """A results table of the one-table layout lacking regime, shots, seed and fold (issue 28 point 1)."""
    folder = work / "results"
    table = pd.read_parquet(folder / "results.parquet").drop(columns=["regime", "shots", "seed", "fold"])
    shutil.rmtree(folder)
    folder.mkdir()
    table.to_parquet(folder / "results.parquet", index=False)


ROWS_PART = "parts/*.rows.json"
PREDICTIONS_PART = "parts/*.predictions.parquet"

KEY = "tiny__random__8-00000000"  # the group ``setup`` writes


def _rewrite_features(transform):
    """The store's features re-written outside medtransfer (another dtype or width), attributes left as they were."""
    def corrupt(work: Path) -> None:
        import zarr

        group = zarr.open_group(str(work / "f.zarr" / KEY), mode="r+")
        values = transform(group["features"][:])
        del group["features"]
        group.create_array("features", data=values, chunks=(64, values.shape[1]))
    return corrupt


def _delete_group_metadata(work: Path) -> None:
    (work / "f.zarr" / KEY / "zarr.json").unlink()


def _truncate_feature_chunk(work: Path) -> None:
    chunk = work / "f.zarr" / KEY / "features" / "c" / "1" / "0"
    chunk.write_bytes(chunk.read_bytes()[: chunk.stat().st_size // 2])


PROBE = ("probe", "--store", "{w}/f.zarr", "--splits", "{w}/splits.json", "--backbone", "tiny", "--out", "{w}/results",
         "--regime", "full")

# (id, edit of the workspace or None, command line; {w} is the workspace, {m} the manifest)
CASES = [
    ("splits-folds-0", None, ("splits", "{m}", "--out", "{w}/new.json", "--folds", "0")),
    ("splits-folds-negative", None, ("splits", "{m}", "--out", "{w}/new.json", "--folds", "-1")),
    ("splits-folds-1", None, ("splits", "{m}", "--out", "{w}/new.json", "--folds", "1")),
    ("splits-shots-0", None, ("splits", "{m}", "--out", "{w}/new.json", "--shots", "0")),
    ("splits-shots-negative", None, ("splits", "{m}", "--out", "{w}/new.json", "--shots", "2,-4")),
    ("splits-seeds-0", None, ("splits", "{m}", "--out", "{w}/new.json", "--shots", "2", "--seeds", "0")),
    ("splits-seeds-negative", None, ("splits", "{m}", "--out", "{w}/new.json", "--shots", "2", "--seeds", "-1")),
    ("splits-shots-text", None, ("splits", "{m}", "--out", "{w}/new.json", "--shots", "two")),
    ("splits-out-is-a-folder", None, ("splits", "{m}", "--out", "{w}/results")),
    ("probe-labels-past-classes", _label_past_classes, PROBE),
    ("probe-truncated-results", _truncate(ROWS_PART), PROBE),
    ("probe-garbled-results", _garble(ROWS_PART), PROBE),
    ("probe-truncated-predictions", _truncate(PREDICTIONS_PART), PROBE),
    ("probe-garbled-predictions", _garble(PREDICTIONS_PART), PROBE),
    ("probe-results-without-key-columns", _without_key_columns, PROBE),
    ("summary-damaged-results", _damage_results_tables, ("summary", "{w}/results")),
    ("report-damaged-results", _damage_results_tables, ("report", "{w}/results", "--out", "{w}/results/rep")),
    ("probe-unknown-head", None, (*PROBE, "--head", "nosuch")),
    ("probe-unknown-regime", None, (*PROBE[:-2], "--regime", "sometimes")),
    ("probe-unknown-embedding", None, (*PROBE, "--embedding", "sideways")),
    ("probe-bad-preprocess", None, (*PROBE, "--preprocess", "pcaX")),
    ("probe-pca-above-fewshot-rows", None, (*PROBE[:-2], "--regime", "fewshot", "--preprocess", "standardize+pca8")),
    ("probe-pca-above-width", None, (*PROBE, "--preprocess", "pca40")),
    ("probe-bad-threshold", None, (*PROBE, "--threshold", "high")),
    ("probe-threshold-out-of-range", None, (*PROBE, "--threshold", "1.5")),
    ("probe-bad-tune", None, (*PROBE, "--tune", "maybe")),
    ("probe-inner-folds-1", None, (*PROBE, "--tune", "cv", "--inner-folds", "1")),
    ("probe-bad-class-weight", None, (*PROBE, "--class-weight", "heavy")),
    ("probe-bad-device", None, (*PROBE, "--device", "tpu")),
    ("probe-bad-fractions", None, (*PROBE, "--fractions", "a,b")),
    ("probe-fraction-not-in-splits", None, (*PROBE[:-2], "--regime", "fraction", "--fractions", "0.3")),
    ("probe-unknown-backbone", None, (*PROBE[:5], "--backbone", "nosuch", *PROBE[7:])),
    ("probe-missing-store", None, (*PROBE[:1], "--store", "{w}/none.zarr", *PROBE[3:])),
    ("probe-int8-features", _rewrite_features(lambda x: x.astype("int8")), PROBE),
    ("probe-features-narrower-than-dim", _rewrite_features(lambda x: x[:, :7]), PROBE),
    ("probe-group-zarr-json-deleted", _delete_group_metadata, PROBE),
    ("probe-truncated-zstd-chunk", _truncate_feature_chunk, PROBE),
    ("probe-folder-not-a-store", None, (*PROBE[:1], "--store", "{w}/results", *PROBE[3:])),
    ("extract-into-folder-not-a-store", None, ("extract", "{m}", "--backbone", "tiny-test-cnn", "--store",
                                               "{w}/results")),
]


@pytest.mark.parametrize(("edit", "argv"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_a_bad_input_is_one_error_line_exit_2_and_changes_nothing(prepared, small_manifest, tmp_path, cli, edit, argv,
                                                                   tiny_backbones):
    work = tmp_path / "w"
    shutil.copytree(prepared, work)
    if edit is not None:
        edit(work)
    before = _tree_hash(work)
    manifest_before = _tree_hash(small_manifest.parent)
    result = cli(*(a.format(w=work, m=small_manifest) for a in argv))
    lines = [line for line in result.stderr.strip().splitlines() if not PROGRESS.match(line)]
    assert result.exit_code == 2, (result.exit_code, result.output)
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.output
    assert _tree_hash(work) == before
    assert _tree_hash(small_manifest.parent) == manifest_before
