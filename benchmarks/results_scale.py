"""Benchmark: results folders at the benchmark's size (issue 23 point 2).

1. One adapt-sized write (1 row, 2,728 test predictions: an NY_all test fold) into a folder already holding
   10, 100 and 1,000 such jobs: median seconds of 5 writes, and the ratio against the 10-job folder.
2. The benchmark preset's study (`study init --preset benchmark`: 6 tasks, 11 backbones, 10 adapt configs),
   planned from its expected sizes, with a row and its test predictions written through ``write_results`` for
   every adapt job (about 21,000 jobs, ``--predictions`` per job: 570 gives about 12 million prediction rows):
   ``medtransfer study status`` and ``medtransfer summary`` over one task folder and over all, whole process.

    python benchmarks/results_scale.py                     # both parts
    python benchmarks/results_scale.py --part writes
    python benchmarks/results_scale.py --part study --predictions 100   # a smaller folder, quicker
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from medtransfer.results import ResultRow, write_results

TEST_ROWS = 2728  # an NY_all test fold (13,639 images / 5)


def _job(index: int, key: tuple, n_predictions: int, rng: np.random.Generator, splits: str = "bench"):
    backbone, method, regime, shots, seed, fold, fraction = key
    labels = rng.integers(0, 2, n_predictions)
    probability = np.clip(labels * 0.3 + rng.random(n_predictions) * 0.7, 0, 1)
    row = ResultRow.create(backbone=backbone, method=method, regime=regime, shots=shots, seed=seed, fold=fold,
                           fraction=fraction, splits=splits, n_test=n_predictions,
                           metrics={"mcc": float(rng.random()), "pr_auc": float(rng.random())})
    predictions = pd.DataFrame({
        "backbone": backbone, "method": method, "regime": regime, "shots": shots, "seed": seed, "fold": fold,
        "fraction": fraction, "id": [f"img{i:05d}" for i in range(n_predictions)],
        "patient": [f"p{i // 2:05d}" for i in range(n_predictions)], "label": labels,
        "probability": probability, "predicted": (probability >= 0.5).astype(int)})
    return [row], predictions


def writes() -> None:
    rng = np.random.default_rng(0)
    print(f"one adapt-sized write (1 row, {TEST_ROWS} predictions) into a folder of N jobs; "
          f"load average {os.getloadavg()[0]:.1f}")
    baseline = None
    for n_jobs in (10, 100, 1000):
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp)
            for i in range(n_jobs):
                write_results(out, *_job(i, ("b", "lora-r8", "fewshot", 4, i, 0, 0.0), TEST_ROWS, rng))
            times = []
            for extra in range(5):
                rows, predictions = _job(0, ("b", "lora-r8", "fewshot", 8, extra, 1, 0.0), TEST_ROWS, rng)
                start = time.perf_counter()
                write_results(out, rows, predictions)
                times.append(time.perf_counter() - start)
        median = statistics.median(times)
        baseline = baseline or median
        print(f"  N = {n_jobs:5d}: {median * 1000:7.1f} ms per write ({median / baseline:.2f}x the 10-job folder)")


def study(n_predictions: int) -> None:
    from medtransfer.study import load_study, write_preset
    from medtransfer.study.plan import build_plan

    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        path = write_preset("benchmark", tmp / "study.toml")
        spec = load_study(path)
        plan = build_plan(spec)
        adapt = [job for job in plan.jobs if job.kind == "adapt"]
        start = time.perf_counter()
        for i, job in enumerate(adapt):
            write_results(spec.results_path(job.task), *_job(i, job.keys[0], n_predictions, rng))
        seconds = time.perf_counter() - start
        print(f"benchmark preset: {len(plan.jobs)} jobs; wrote {len(adapt)} adapt jobs' rows and "
              f"{len(adapt) * n_predictions:,} predictions through write_results in {seconds:.0f} s "
              f"({seconds / len(adapt) * 1000:.1f} ms per job)")
        biggest = max({job.task for job in adapt}, key=lambda t: sum(job.task == t for job in adapt))
        commands = {
            "study status": ["study", "status", str(path)],
            f"summary {biggest} ({sum(j.task == biggest for j in adapt)} jobs)": [
                "summary", str(spec.results_path(biggest))],
            "summary, every task": ["summary", str(spec.results)],
            "results compact, every task": ["results", "compact",
                                            *[str(spec.results_path(t.name)) for t in spec.tasks]],
            "study status after compaction": ["study", "status", str(path)],
        }
        for label, arguments in commands.items():
            load = os.getloadavg()[0]
            start = time.perf_counter()
            done = subprocess.run([sys.executable, "-m", "medtransfer.cli", *arguments], capture_output=True,
                                  text=True, env={**os.environ, "COLUMNS": "200"})
            seconds = time.perf_counter() - start
            status = "ok" if done.returncode == 0 else f"exit {done.returncode}: {done.stderr.strip()[-300:]}"
            print(f"  {label}: {seconds:.1f} s whole process ({status}; load average {load:.1f})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--part", choices=("all", "writes", "study"), default="all")
    parser.add_argument("--predictions", type=int, default=570, help="test predictions per generated adapt job")
    args = parser.parse_args()
    if args.part in ("all", "writes"):
        writes()
    if args.part in ("all", "study"):
        study(args.predictions)


if __name__ == "__main__":
    main()
