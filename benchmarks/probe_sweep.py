"""Benchmark: the logistic-regression probe sweep from a feature cache, batched solver vs a scikit-learn loop.

Grid per cache: 5 folds x (full + 5 shot counts x 10 seeds) x 8 values of C (logspace(-4, 3, 8)). Both sides
do the same thing on the same rows in the same process: standardize on each task's training rows, fit every
C on them (class-balanced), pick C by validation MCC (threshold 0.5; ties to the lower validation log loss,
as ``run_probe``), report the test MCC of that fit. (No train + val refit here: the loop would need it too;
``run_probe`` does it.)

    python benchmarks/probe_sweep.py                 # both caches (N=1,600 x 768 and N=13,600 x 1,024, float16)
    python benchmarks/probe_sweep.py --sizes small   # only the small one

The features are synthetic (a class signal in a 32-dimensional subspace plus heavy noise, stored as float16),
which is what matters for the solver: the shapes, the dtype and a realistic, not separable, full-data problem.
"""

from __future__ import annotations

import argparse
import time
import warnings
from types import SimpleNamespace

import numpy as np
import torch
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold
from sklearn.preprocessing import StandardScaler

from medtransfer.probe.context import FeatureMatrix, ProbeContext
from medtransfer.probe.heads import get_head
from medtransfer.probe.options import ProbeOptions
from medtransfer.probe.selection import choose_on_val, fast_mcc
from medtransfer.probe.solvers import batched
from medtransfer.splits.tasks import Task

SHOTS = (1, 2, 4, 8, 16)
SEEDS = 10
FOLDS = 5
SIZES = {"small": (1600, 768), "large": (13600, 1024)}


def make_cache(n: int, d: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < 0.35).astype(int)
    basis = np.linalg.qr(rng.normal(size=(d, 32)))[0]
    signal = rng.normal(size=(n, 32)) + 0.55 * y[:, None] * rng.normal(size=32)[None]
    x = signal @ basis.T * 3 + rng.normal(size=(n, d)) + rng.normal(size=d) * 2
    return x.astype(np.float16), y


def make_tasks(y: np.ndarray, seed: int = 0):
    """(shots, seed, fold, train, val, test) index arrays, few-shot subsets nested across shots."""
    tasks = []
    outer = StratifiedKFold(FOLDS, shuffle=True, random_state=seed)
    for fold, (train_val, test) in enumerate(outer.split(y, y)):
        inner = StratifiedKFold(5, shuffle=True, random_state=seed + fold)
        tr, va = next(inner.split(train_val, y[train_val]))
        train, val = train_val[tr], train_val[va]
        tasks.append((0, 0, fold, train, val, test))
        for s in range(SEEDS):
            rng = np.random.default_rng([seed, fold, s])
            orders = [rng.permutation(train[y[train] == c]) for c in np.unique(y)]
            for k in SHOTS:
                tasks.append((k, s, fold, np.sort(np.concatenate([o[:k] for o in orders])), val, test))
    return tasks


def synthetic_context(x: np.ndarray, y: np.ndarray, options: ProbeOptions) -> tuple[ProbeContext, list[Task]]:
    """The probe context and tasks of ``make_tasks`` over a synthetic cache (probe_heads, probe_trees)."""
    ids = [f"s{i}" for i in range(len(y))]
    splits = SimpleNamespace(classes=["0", "1"], groups={}, params={}, fingerprint="bench")
    ctx = ProbeContext(backbone="bench", embedding="", data=FeatureMatrix.create(x, y, ids), splits=splits,
                       options=options)
    tasks = []
    for shots, seed, fold, train, val, test in make_tasks(y):
        names = [[ids[r] for r in rows] for rows in (train, val, test)]
        tasks.append(Task("full" if shots == 0 else "fewshot", shots, seed, fold, *names, shots == 0))
    return ctx, tasks


def run_grid(x, y, tasks, cs, max_iter):
    """The batched path: every (task, C) in one stacked solve; scoring batched per fold."""
    fit = batched.fit_linear_grid(x, y, [t[3] for t in tasks], cs, n_classes=2, steps=("standardize",), balanced=True,
                                  solver=batched.SolverSettings(max_iter=max_iter))
    mcc = np.zeros(len(tasks))
    folds: dict[int, list[int]] = {}
    for j, t in enumerate(tasks):
        folds.setdefault(t[2], []).append(j)
    for members in folds.values():
        val, test = tasks[members[0]][4], tasks[members[0]][5]
        val_proba = batched.probabilities_many(fit, members, x[val], 2)
        chosen = [choose_on_val(y[val], val_proba[m]) for m in range(len(members))]
        test_proba = batched.probabilities_many(fit, members, x[test], 2, grid_index=chosen)
        for m, j in enumerate(members):
            mcc[j] = fast_mcc(y[test], test_proba[m])
    return mcc


def run_loop(x, y, tasks, cs, max_iter):
    """The reference: one scikit-learn LogisticRegression per (task, C)."""
    mcc = np.zeros(len(tasks))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        for j, (_, _, _, train, val, test) in enumerate(tasks):
            scaler = StandardScaler().fit(x[train])
            xtr, xva, xte = scaler.transform(x[train]), scaler.transform(x[val]), scaler.transform(x[test])
            models = [LogisticRegression(C=c, class_weight="balanced", max_iter=max_iter).fit(xtr, y[train])
                      for c in cs]
            best = models[choose_on_val(y[val], np.stack([m.predict_proba(xva) for m in models]))]
            mcc[j] = fast_mcc(y[test], best.predict_proba(xte))
    return mcc


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="small,large", help="comma-separated: small, large")
    parser.add_argument("--max-iter", type=int, default=200, help="iteration cap, both solvers (default 200)")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} CPU thread(s), device: "
          f"{'cuda' if torch.cuda.is_available() else 'cpu'}")
    cs = np.array([p["C"] for p in get_head("logreg").grid])
    for size in args.sizes.split(","):
        n, d = SIZES[size]
        x16, y = make_cache(n, d)
        x = x16.astype(np.float32)
        tasks = make_tasks(y)
        print(f"\n== cache N={n} x D={d} (float16 on disk): {len(tasks)} tasks x {len(cs)} C = "
              f"{len(tasks) * len(cs)} fits ==")
        run_grid(x[:64], y[:64], [(0, 0, 0, np.arange(32), np.arange(32, 48), np.arange(48, 64))], cs, 5)  # warm-up
        start = time.perf_counter()
        grid_mcc = run_grid(x, y, tasks, cs, args.max_iter)
        grid_s = time.perf_counter() - start
        print(f"grid (batched torch L-BFGS): {grid_s:.2f} s")
        start = time.perf_counter()
        loop_mcc = run_loop(x, y, tasks, cs, args.max_iter)
        loop_s = time.perf_counter() - start
        print(f"loop (scikit-learn, one fit per (fold, shots, seed, C)): {loop_s:.2f} s")
        print(f"speed-up: {loop_s / grid_s:.1f}x")
        shots = np.array([t[0] for t in tasks])
        print(f"{'shots':>6} {'grid MCC':>9} {'loop MCC':>9} {'|diff|':>7}")
        worst = 0.0
        for k in sorted(set(shots)):
            g, lp = grid_mcc[shots == k].mean(), loop_mcc[shots == k].mean()
            worst = max(worst, abs(g - lp))
            print(f"{'full' if k == 0 else k:>6} {g:9.4f} {lp:9.4f} {abs(g - lp):7.4f}")
        print(f"largest mean-MCC gap: {worst:.4f} ({'within' if worst <= 0.01 else 'OVER'} 0.01)")


if __name__ == "__main__":
    main()
