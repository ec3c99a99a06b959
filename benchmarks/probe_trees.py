"""Benchmark: the tree heads (rf, extratrees, hgb, xgb) on their own path -- successive halving over the grid
(``probe.halving``), optionally spread over worker processes (``probe.workers``) -- vs the plain scikit-learn /
XGBoost loop (``probe.sklearn_fit.fit_each_task``: every candidate fitted whole, fixed rounds for boosting,
then the train + val refit) over the same tasks and grids, in the same process.

Cache: AFC-sized (1,600 x 768) or NY_all-sized (13,600 x 1,024) synthetic features with a label signal
(``probe_sweep.make_cache``); 5 folds x (full + 5 shot counts x 10 seeds) = 255 tasks per head. The loop is run
on a sample of tasks per shot count (``--sample``) and its time extrapolated per shot count: over every task it
would take far over 10 minutes. Printed per head: our time with 1 and with ``--workers`` processes, our time
with a PCA front (``--pca``, fitted on training rows), the loop's time, the speed-ups, and the mean |MCC
difference| to the loop per regime on the sampled tasks, with what changed in the search.

    python benchmarks/probe_trees.py                          # AFC size, every tree head, 3 loop tasks / regime
    python benchmarks/probe_trees.py --sizes large --sample 1 --heads extratrees,hgb
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
from probe_sweep import FOLDS, SIZES, make_cache, synthetic_context  # noqa: E402

from medtransfer.probe.heads import HEADS  # noqa: E402
from medtransfer.probe.options import ProbeOptions  # noqa: E402
from medtransfer.probe.selection import fast_mcc  # noqa: E402
from medtransfer.probe.sklearn_fit import fit_each_task  # noqa: E402
from medtransfer.probe.workers import fit_spread  # noqa: E402
from medtransfer.splits.tasks import Task  # noqa: E402

TREES = ("rf", "extratrees", "hgb", "xgb")
CHANGED = {
    "rf": "successive halving over trees (22/67/200): losers judged on smaller forests; the chosen forest is "
          "the one fitted at once",
    "extratrees": "as rf",
    "hgb": "early stopping on val rows (loop: 100 fixed rounds) + halving over the round cap (33/100/300)",
    "xgb": "early stopping on val rows (loop: 150 fixed rounds) + halving over the round cap (33/100/300)",
}


def sample(tasks: list[Task], per_regime: int) -> list[int]:
    """``per_regime`` task indexes of each shot count (spread over folds and seeds)."""
    by: dict[int, list[int]] = {}
    for j, t in enumerate(tasks):
        by.setdefault(t.shots, []).append(j)
    rng = np.random.default_rng(0)
    return sorted(j for members in by.values() for j in rng.choice(members, min(per_regime, len(members)),
                                                                   replace=False))


def timed(head, ctx, tasks):
    start = time.perf_counter()
    fits = fit_spread(head, ctx, tasks)
    return fits, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="small", help="comma-separated: small (AFC), large (NY_all)")
    parser.add_argument("--heads", default=",".join(TREES), help="comma-separated tree heads")
    parser.add_argument("--sample", type=int, default=3, help="loop tasks per shot count")
    parser.add_argument("--workers", type=int, default=2, help="worker processes for the spread run (0: skip)")
    parser.add_argument("--pca", type=int, default=64, help="components of the PCA-front run (0: skip)")
    args = parser.parse_args()
    print(f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}")
    for size in args.sizes.split(","):
        n, d = SIZES[size]
        x16, y = make_cache(n, d)
        ctx, tasks = synthetic_context(x16.astype(np.float32), y, ProbeOptions())
        picked = sample(tasks, args.sample)
        count = {k: sum(t.shots == k for t in tasks) for k in {t.shots for t in tasks}}
        print(f"\n== cache {n} x {d}: {FOLDS} folds, {len(tasks)} tasks per head; loop on {len(picked)} tasks "
              "(sampled, time extrapolated per shot count) ==")
        print(f"{'head':>10} {'ours s':>8} {'ours Nw s':>9} {'pca s':>7} {'loop s':>8} {'speed-up':>9}  "
              "mean |MCC diff| to the loop per regime")
        for name in args.heads.split(","):
            head = HEADS[name]
            ours, ours_s = timed(head, ctx, tasks)
            spread_s = pca_s = float("nan")
            if args.workers:
                spread, spread_s = timed(head, dataclasses.replace(
                    ctx, options=dataclasses.replace(ctx.options, workers=args.workers)), tasks)
                same = all(isinstance(a, str) and a == b or np.array_equal(a.test_proba, b.test_proba)
                           for a, b in zip(ours, spread, strict=True))
                if not same:
                    print(f"{'':>10} warning: {args.workers} workers gave other probabilities than 1")
            if args.pca:
                pca_ctx = dataclasses.replace(ctx, options=ProbeOptions(preprocess=f"standardize+pca{args.pca}"))
                _, pca_s = timed(head, pca_ctx, tasks)
            per_shots_time: dict[int, list[float]] = {}
            diffs: dict[int, list[float]] = {}
            for j in picked:
                t0 = time.perf_counter()
                (loop_fit,) = list(fit_each_task(head, ctx, [tasks[j]]))
                per_shots_time.setdefault(tasks[j].shots, []).append(time.perf_counter() - t0)
                if isinstance(loop_fit, str) or isinstance(ours[j], str):
                    continue
                y_test = ctx.y_all[ctx.index(tasks[j].test)]
                diffs.setdefault(tasks[j].shots, []).append(
                    abs(fast_mcc(y_test, ours[j].test_proba) - fast_mcc(y_test, loop_fit.test_proba)))
            loop_s = sum(np.mean(v) * count[k] for k, v in per_shots_time.items())
            regimes = "  ".join(f"{'full' if k == 0 else f'{k}-shot'}: {np.mean(v):.3f}"
                                for k, v in sorted(diffs.items()))
            best = min(ours_s, spread_s) if args.workers else ours_s
            print(f"{name:>10} {ours_s:8.1f} {spread_s:9.1f} {pca_s:7.1f} {loop_s:8.1f} {loop_s / best:8.1f}x  "
                  f"{regimes}", flush=True)
            print(f"{'':>10} search changed: {CHANGED[name]}")
        print(f"(load average now {os.getloadavg()[0]:.1f}; Nw = {args.workers} worker processes)")


if __name__ == "__main__":
    main()
