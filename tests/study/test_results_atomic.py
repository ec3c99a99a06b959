"""Results writes are atomic and locked: a SIGKILL at any moment leaves a readable table (the previous one or
the new one), and concurrent writer processes lose no rows (issue 10 point 7)."""

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

from medtransfer.results import RESULTS_FILE, ResultRow, write_results

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
                                    "label": 0, "probability": 0.5})
        write_results(out, [row], predictions)
        print(fold, flush=True)
""")


def _writer(out: Path, backbone: str, count: int) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    return subprocess.Popen([sys.executable, "-c", WRITER, str(out), backbone, str(count)], env=env,
                            stdout=subprocess.PIPE, text=True)


def _row(fold: int) -> ResultRow:
    return ResultRow(backbone="b", method="m", regime="full", shots=0, seed=0, fold=fold, splits="abc")


def test_sigkill_at_random_moments_leaves_a_whole_table(tmp_path):
    """Three kills at random moments of a writer appending one row per write: each time every file reads back,
    the table holds folds 0..k without a gap or duplicate, and a new writer carries on from it."""
    rng = random.Random(7)
    out = tmp_path / "results"
    for kill in range(3):
        writer = _writer(out, "b", 1000)
        assert writer.stdout is not None
        writer.stdout.readline()  # the interpreter is up and has written at least once
        time.sleep(rng.uniform(0.0, 0.6))
        writer.send_signal(signal.SIGKILL)
        writer.wait()
        table = pd.read_parquet(out / RESULTS_FILE)
        folds = sorted(table["fold"])
        assert folds == list(range(len(folds))), f"kill {kill}: torn or duplicated rows {folds}"
        assert len(pd.read_csv(out / "results.csv")) in (len(folds), len(folds) + 1)
        predicted = pd.read_parquet(out / "predictions.parquet")
        assert set(predicted["fold"]) >= set(folds)
        assert predicted.groupby("fold").size().eq(50).all()
    write_results(out, [ResultRow(backbone="b", method="logreg", regime="full", shots=0, seed=0, fold=10_000,
                                  splits="abc")])
    assert not list(out.glob(".tmp-*")), "a killed writer's temporaries are cleaned up by the next writer"
    assert 10_000 in set(pd.read_parquet(out / RESULTS_FILE)["fold"])


def test_four_concurrent_writer_processes_lose_no_rows(tmp_path):
    out = tmp_path / "results"
    writers = [_writer(out, f"backbone{i}", 8) for i in range(4)]
    for writer in writers:
        writer.communicate(timeout=120)
        assert writer.returncode == 0
    table = pd.read_parquet(out / RESULTS_FILE)
    assert len(table) == 32
    assert sorted(table.groupby("backbone").size()) == [8, 8, 8, 8]
    assert not table.duplicated(["backbone", "fold"]).any()
    assert len(pd.read_parquet(out / "predictions.parquet")) == 32 * 50
    assert len(pd.read_csv(out / "results.csv")) == 32


def test_a_replaced_row_is_logged_and_the_lock_file_stays_out_of_the_tables(tmp_path, caplog):
    write_results(tmp_path, [_row(0), _row(1)])
    write_results(tmp_path, [_row(1)])
    assert "replaced 1 earlier row" in caplog.text
    assert (tmp_path / ".results.lock").exists()
    assert sorted(pd.read_parquet(tmp_path / RESULTS_FILE)["fold"]) == [0, 1]
