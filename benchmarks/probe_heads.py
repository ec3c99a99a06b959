"""Benchmark: every probe head's own path (``probe.fitting.fit_tasks``: batched where the head is) vs the plain
scikit-learn / XGBoost loop (``probe.sklearn_fit.fit_each_task``: one estimator per (task, grid candidate), then
the train + val refit) over the same tasks and grids, in the same process.

Caches: AFC-sized (1,600 x 768) and NY_all-sized (13,600 x 1,024) synthetic float16 features with a label
signal (``probe_sweep.make_cache``); 5 folds x (full + 5 shot counts x 10 seeds) = 255 tasks per head. Printed per
head: our time, the loop's time (measured on a sample of tasks per regime and extrapolated when ``--sample`` is
set: the loop would take far over 10 minutes on the larger cache), the speed-up, and the mean |MCC difference|
per regime on the tasks both sides ran.

    python benchmarks/probe_heads.py                         # both caches, every head, loop sampled (3 / regime)
    python benchmarks/probe_heads.py --sizes small --heads knn,ridge --sample 0   # the whole loop
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(__file__))
from probe_sweep import FOLDS, SIZES, make_cache, synthetic_context  # noqa: E402

from medtransfer.probe.fitting import fit_tasks  # noqa: E402
from medtransfer.probe.heads import HEADS  # noqa: E402
from medtransfer.probe.options import ProbeOptions  # noqa: E402
from medtransfer.probe.selection import fast_mcc  # noqa: E402
from medtransfer.probe.sklearn_fit import fit_each_task  # noqa: E402
from medtransfer.splits.tasks import Task  # noqa: E402

EXACT = {"logreg", "svm", "knn", "centroid", "ridge"}  # same objective / rule as the loop
CHANGED = {  # heads whose search changed, and how
    "mlp": "full-batch Adam early-stopped on val loss (the loop: minibatch Adam, stopped on training loss)",
    "hgb": "early-stopped on the fold's val rows (the loop: 100 fixed rounds)",
    "xgb": "early-stopped on the fold's val rows (the loop: 150 fixed rounds)",
}


def sample(tasks: list[Task], per_regime: int) -> list[int]:
    """Task indexes: ``per_regime`` of each shot count (spread over folds and seeds), or all (0)."""
    if per_regime <= 0:
        return list(range(len(tasks)))
    by: dict[int, list[int]] = {}
    for j, t in enumerate(tasks):
        by.setdefault(t.shots, []).append(j)
    rng = np.random.default_rng(0)
    return sorted(j for members in by.values() for j in rng.choice(members, min(per_regime, len(members)),
                                                                   replace=False))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="small,large", help="comma-separated: small, large")
    parser.add_argument("--heads", default="all", help="comma-separated head names, or all")
    parser.add_argument("--sample", type=int, default=3, help="loop tasks per shot count (0: the whole loop)")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda")
    args = parser.parse_args()
    heads = sorted(HEADS) if args.heads == "all" else args.heads.split(",")
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"torch {torch.__version__}, device {args.device} (cuda: {torch.cuda.is_available()}), "
          f"{os.cpu_count()} CPUs, load average {load:.1f}")
    for size in args.sizes.split(","):
        n, d = SIZES[size]
        x16, y = make_cache(n, d)
        ctx, tasks = synthetic_context(x16.astype(np.float32), y, ProbeOptions(device=args.device))
        picked = sample(tasks, args.sample)
        print(f"\n== cache {n} x {d}: {FOLDS} folds, {len(tasks)} tasks per head; loop on {len(picked)} tasks"
              f"{' (sampled, time extrapolated per shot count)' if len(picked) < len(tasks) else ''} ==")
        print(f"{'head':>10} {'ours s':>8} {'loop s':>9} {'speed-up':>9} {'load':>5}  mean |MCC diff| per regime")
        ours_total = 0.0
        for name in heads:
            head = HEADS[name]
            list(fit_tasks(head, ctx, tasks[:2]))  # warm-up: torch's first calls and lazy imports are not the head's
            start = time.perf_counter()
            ours = list(fit_tasks(head, ctx, tasks))
            ours_s = time.perf_counter() - start
            ours_total += ours_s
            per_shots_time: dict[int, list[float]] = {}
            diffs: dict[int, list[float]] = {}
            for j in picked:
                t0 = time.perf_counter()
                (loop_fit,) = list(fit_each_task(head, ctx, [tasks[j]]))
                per_shots_time.setdefault(tasks[j].shots, []).append(time.perf_counter() - t0)
                y_test = ctx.y_all[ctx.index(tasks[j].test)]
                if isinstance(loop_fit, str) or isinstance(ours[j], str):
                    continue
                diffs.setdefault(tasks[j].shots, []).append(
                    abs(fast_mcc(y_test, ours[j].test_proba) - fast_mcc(y_test, loop_fit.test_proba)))
            count = {k: sum(t.shots == k for t in tasks) for k in per_shots_time}
            loop_s = sum(np.mean(v) * count[k] for k, v in per_shots_time.items())
            regimes = "  ".join(f"{'full' if k == 0 else f'{k}-shot'}: {np.mean(v):.3f}"
                                for k, v in sorted(diffs.items()))
            load = os.getloadavg()[0]
            print(f"{name:>10} {ours_s:8.2f} {loop_s:9.1f} {loop_s / ours_s:8.1f}x {load:5.1f}  {regimes}", flush=True)
            if name in CHANGED:
                print(f"{'':>10} search changed: {CHANGED[name]}")
        print(f"--head all, ours: {ours_total:.1f} s (load average now {os.getloadavg()[0]:.1f})")


if __name__ == "__main__":
    main()
