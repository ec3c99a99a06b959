"""The results folder as part files (issue 23 point 2): a write adds one part and touches nothing else; SIGKILLs of
writers at random moments, concurrent writers and compaction during writes lose nothing and duplicate nothing."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pandas as pd
import pytest

from medtransfer.errors import MedtransferError
from medtransfer.results import (
    PARTS,
    RESULTS_FILE,
    ResultRow,
    compact_results,
    read_predictions,
    read_rows,
    read_union,
    write_results,
)

WRITER = textwrap.dedent("""
    import sys
    import pandas as pd
    from medtransfer.results import ResultRow, write_results

    out, backbone, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
    for fold in range(count):
        row = ResultRow(backbone=backbone, method="logreg", regime="full", shots=0, seed=0, fold=fold, mcc=fold / 10,
                        splits="abc")
        predictions = pd.DataFrame({"backbone": backbone, "method": "logreg", "regime": "full", "shots": 0,
                                    "seed": 0, "fold": fold, "fraction": 0.0, "id": [f"s{i}" for i in range(50)],
                                    "label": 0, "probability": fold / 1000})
        write_results(out, [row], predictions)
        print(fold, flush=True)
""")

COMPACTOR = textwrap.dedent("""
    import sys, time
    from medtransfer.results import CompactionBusy, compact_results

    deadline = time.monotonic() + float(sys.argv[2])
    while time.monotonic() < deadline:
        try:
            compact_results(sys.argv[1])
        except CompactionBusy:
            pass
        print("compacted", flush=True)
""")


def _python(code: str, *args: object) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    return subprocess.Popen([sys.executable, "-c", code, *map(str, args)], env=env, stdout=subprocess.PIPE, text=True)


def _row(fold: int, mcc: float = 0.0, splits: str = "abc") -> ResultRow:
    return ResultRow(backbone="b", method="m", regime="full", shots=0, seed=0, fold=fold, mcc=mcc, splits=splits)


def _predictions(fold: int, probability: float, n: int = 3) -> pd.DataFrame:
    return pd.DataFrame({"backbone": "b", "method": "m", "regime": "full", "shots": 0, "seed": 0, "fold": fold,
                         "fraction": 0.0, "id": [f"s{i}" for i in range(n)], "label": 0,
                         "probability": probability})


def _check_whole(out: Path) -> list[int]:
    """The union holds folds 0..k once each, each with its own 50 predictions; returns the folds."""
    rows, predictions = read_union(out)
    folds = sorted(rows["fold"])
    assert folds == list(range(len(folds))), f"torn or duplicated rows {folds}"
    assert predictions.groupby("fold").size().eq(50).all()
    assert set(predictions["fold"]) == set(folds)
    by_fold = predictions.groupby("fold")["probability"].first()
    assert all(abs(by_fold[f] - f / 1000) < 1e-12 for f in folds), "predictions from another write of the key"
    return folds


def test_a_write_adds_its_part_and_touches_no_other_file(tmp_path):
    """What keeps a write's cost flat in the folder's size: it reads, rewrites and locks nothing others wrote."""
    for fold in range(30):
        write_results(tmp_path, [_row(fold)], _predictions(fold, 0.5))
    before = {p: (p.stat().st_mtime_ns, p.stat().st_size) for p in tmp_path.rglob("*") if p.is_file()}
    written = write_results(tmp_path, [_row(99)], _predictions(99, 0.5))
    after = {p: (p.stat().st_mtime_ns, p.stat().st_size) for p in tmp_path.rglob("*") if p.is_file()}
    assert {p: v for p, v in after.items() if p in before} == before
    assert sorted(p.name for p in set(after) - set(before)) == sorted(
        [written.name, written.name.replace(".rows.json", ".predictions.parquet")])
    assert not list(tmp_path.glob("*.lock"))


def test_the_table_has_one_column_order_whichever_part_came_first(tmp_path):
    """A resumed study writes its parts in another order than an uninterrupted one: same table, same columns."""
    probe = ResultRow.create(backbone="b", method="logreg", regime="full", shots=0, seed=0, fold=0, splits="abc",
                             extra={"head_solver": "lbfgs", "halving": "none"})
    adapt = ResultRow.create(backbone="b", method="lora", regime="full", shots=0, seed=0, fold=0, splits="abc",
                             extra={"pack_size": 2, "epochs_run": 3})
    tables = []
    for name, order in (("a", (probe, adapt)), ("b", (adapt, probe))):
        for row in order:
            write_results(tmp_path / name, [row])
        tables.append(read_rows(tmp_path / name))
    assert list(tables[0].columns) == list(tables[1].columns)
    pd.testing.assert_frame_equal(tables[0], tables[1])


def test_the_newest_write_of_a_key_wins_with_its_own_predictions(tmp_path):
    write_results(tmp_path, [_row(0, 0.1), _row(1, 0.2)], pd.concat([_predictions(0, 0.1), _predictions(1, 0.2)]))
    write_results(tmp_path, [_row(1, 0.9)], _predictions(1, 0.9, n=2))
    rows, predictions = read_union(tmp_path)
    assert rows.set_index("fold")["mcc"].to_dict() == {0: 0.1, 1: 0.9}
    assert predictions.groupby("fold")["probability"].agg(["first", "size"]).to_dict("index") == {
        0: {"first": 0.1, "size": 3}, 1: {"first": 0.9, "size": 2}}
    done = compact_results(tmp_path)
    assert (done.parts_before, done.parts_after, done.rows, done.superseded) == (2, 1, 2, 1)
    assert read_rows(tmp_path).equals(rows)
    pd.testing.assert_frame_equal(read_predictions(tmp_path).sort_values(["fold", "id"]).reset_index(drop=True),
                                  predictions.sort_values(["fold", "id"]).reset_index(drop=True), check_dtype=False)
    exported = pd.read_parquet(tmp_path / RESULTS_FILE)
    assert exported.set_index("fold")["mcc"].to_dict() == {0: 0.1, 1: 0.9}
    assert len(pd.read_csv(tmp_path / "results.csv")) == 2


def test_rows_of_another_splits_file_are_refused(tmp_path):
    write_results(tmp_path, [_row(0)])
    with pytest.raises(MedtransferError, match="another splits file"):
        write_results(tmp_path, [_row(1, splits="other")])
    assert sorted(read_rows(tmp_path)["fold"]) == [0]


def test_a_folder_of_the_one_table_layout_reads_and_takes_new_parts(tmp_path):
    old = pd.DataFrame([{**_row(0, 0.3).as_record(), "fraction": 0.0}])
    old.to_parquet(tmp_path / RESULTS_FILE, index=False)
    _predictions(0, 0.3).to_parquet(tmp_path / "predictions.parquet", index=False)
    assert read_rows(tmp_path)["mcc"].tolist() == [0.3]
    write_results(tmp_path, [_row(1, 0.4)], _predictions(1, 0.4))
    rows, predictions = read_union(tmp_path)
    assert rows.set_index("fold")["mcc"].to_dict() == {0: 0.3, 1: 0.4}
    assert sorted(predictions["fold"].unique()) == [0, 1]


def test_a_table_without_key_columns_is_one_line(tmp_path):
    pd.DataFrame({"backbone": ["b"], "method": ["m"], "mcc": [0.1]}).to_parquet(tmp_path / RESULTS_FILE)
    with pytest.raises(MedtransferError, match="lack the key column"):
        read_rows(tmp_path)


def test_a_full_disk_is_one_line_and_leaves_nothing(tmp_path, monkeypatch):
    import errno

    write_results(tmp_path, [_row(0)], _predictions(0, 0.5))
    before = sorted(p.name for p in (tmp_path / PARTS).iterdir())

    def full(self, *args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(pd.DataFrame, "to_parquet", full)
    with pytest.raises(MedtransferError, match="the disk is full"):
        write_results(tmp_path, [_row(1)], _predictions(1, 0.5))
    assert sorted(p.name for p in (tmp_path / PARTS).iterdir()) == before
    assert sorted(read_rows(tmp_path)["fold"]) == [0]


def test_sigkill_of_writers_at_random_moments_loses_and_duplicates_nothing(tmp_path):
    """Three kills at random moments of a writer adding one row per write: each time the union holds folds
    0..k once, each with its own predictions; a new writer carries on; compaction removes the killed writers'
    leftovers."""
    rng = random.Random(7)
    out = tmp_path / "results"
    for kill in range(3):
        writer = _python(WRITER, out, "b", 1000)
        assert writer.stdout is not None
        writer.stdout.readline()
        time.sleep(rng.uniform(0.0, 0.6))
        writer.send_signal(signal.SIGKILL)
        writer.wait()
        folds = _check_whole(out)
        assert folds, f"kill {kill}: nothing written"
    compact_results(out)
    assert not [p for p in (out / PARTS).iterdir() if p.name.startswith(".tmp-")]
    assert _check_whole(out) == folds


def test_concurrent_writers_and_compaction_during_writes_equal_an_uninterrupted_run(tmp_path):
    """Four writer processes and a compactor looping beside them: the union equals what one uninterrupted run
    of the same writes gives (every row once, every prediction once), and so does the final export."""
    out = tmp_path / "results"
    compactor = _python(COMPACTOR, out, 600)
    writers = [_python(WRITER, out, f"backbone{i}", 12) for i in range(4)]
    for writer in writers:
        writer.communicate(timeout=300)
        assert writer.returncode == 0
    compactor.send_signal(signal.SIGKILL)  # killed at whatever step it was at
    compactor.wait()
    reference = tmp_path / "reference"
    for i in range(4):
        done = _python(WRITER, reference, f"backbone{i}", 12)
        done.communicate(timeout=300)
    got, want = read_union(out), read_union(reference)
    keys = ["backbone", "fold"]
    drop = ["fit_seconds"]
    pd.testing.assert_frame_equal(got[0].drop(columns=drop).sort_values(keys).reset_index(drop=True),
                                  want[0].drop(columns=drop).sort_values(keys).reset_index(drop=True))
    assert len(got[1]) == len(want[1]) == 4 * 12 * 50
    assert not got[1].duplicated([*keys, "id"]).any()
    compact_results(out)
    assert len(pd.read_parquet(out / RESULTS_FILE)) == 48
    assert len(pd.read_parquet(out / "predictions.parquet")) == 48 * 50


def test_results_compact_through_the_cli(tmp_path):
    from typer.testing import CliRunner

    from medtransfer.cli import app

    for fold in range(3):
        write_results(tmp_path, [_row(fold, fold / 10)], _predictions(fold, 0.5))
    result = CliRunner().invoke(app, ["results", "compact", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert "3 part(s) -> 1; 3 rows (0 superseded" in result.output
    assert sorted(pd.read_csv(tmp_path / "results.csv")["fold"]) == [0, 1, 2]
    empty = CliRunner().invoke(app, ["results", "compact", str(tmp_path / "nothing")])
    assert empty.exit_code == 2
    assert empty.output.strip().splitlines()[-1].startswith("error: no results in")
