"""Benchmark: ``medtransfer probe --head all`` as a user runs it, whole process, on an AFC-sized (1,600 x 768) or
NY_all-sized (13,600 x 1,024) synthetic feature store: 5 folds x (full + 5 shot counts x 10 seeds) = 255 tasks
per head. Shows probe's own per-head timing lines as they come, then the whole-process wall time.

The store and splits file are written by ``medtransfer.testing.features`` (a complete group through
``cache_schema``; stratified outer folds, a val quarter, few-shot subsets per seed) from the same
synthetic features as ``probe_heads.py`` (``probe_sweep.make_cache``).

    python benchmarks/probe_all.py                       # AFC-sized, every head
    python benchmarks/probe_all.py --size large --heads logreg,knn,ridge,svm,centroid
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from probe_sweep import FOLDS, SEEDS, SHOTS, SIZES, make_cache  # noqa: E402

from medtransfer.testing.features import write_feature_store, write_label_splits  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", default="small", choices=sorted(SIZES), help="small (AFC) or large (NY_all)")
    parser.add_argument("--heads", default="all", help="comma-separated heads, or all")
    parser.add_argument("--extra", default="", help="more probe options, e.g. '--workers 2'")
    args = parser.parse_args()
    n, d = SIZES[args.size]
    x, y = make_cache(n, d)
    ids = [f"s{i:04d}" for i in range(n)]
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        write_feature_store(tmp / "f.zarr", "bench", ids, x.astype("float32"))
        write_label_splits(tmp / "splits.json", y, n_folds=FOLDS, shots=SHOTS, seeds=SEEDS)
        command = [sys.executable, "-c", "from medtransfer.cli import main; main()", "probe",
                   "--store", str(tmp / "f.zarr"), "--splits", str(tmp / "splits.json"), "--backbone", "bench",
                   "--out", str(tmp / "out"), "--device", "cpu"]
        command += [part for head in args.heads.split(",") for part in ("--head", head)] + args.extra.split()
        load = os.getloadavg()[0]
        start = time.perf_counter()
        # probe's own output streams through: its per-head timing lines show as each head finishes
        done = subprocess.run(command, env={**os.environ, "COLUMNS": "200"})
        seconds = time.perf_counter() - start
    if done.returncode:
        raise SystemExit(f"probe failed (exit {done.returncode})")
    print(f"cache {n} x {d}, 255 tasks per head, heads {args.heads}: whole process {seconds:.1f} s "
          f"(exit {done.returncode}; load average {load:.1f} at the start)")


if __name__ == "__main__":
    main()
