"""The logreg head over a whole set of tasks at once: every (task, C) fit of the tuning grid is one stacked
problem for ``probe.solvers.solver``, then (full regime) one more stacked solve refits each task on train + val.

Tasks whose training rows outnumber the feature dimension (full data, label fractions) share the store's
feature matrix (``SharedDesign``: standardization folded into the weights); few-shot tasks are gathered,
preprocessed and reduced to their row space (``DenseDesign`` + ``reduce_rows``).
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch
from threadpoolctl import threadpool_limits

from medtransfer.device import resolve_device
from medtransfer.probe.features import Affine, fit_affines
from medtransfer.probe.solvers.hinge_newton import solve_squared_hinge
from medtransfer.probe.solvers.solver import (
    DenseDesign,
    SharedDesign,
    Solution,
    reduce_rows,
    softmax_probabilities,
    solve_logreg,
)
from medtransfer.weighting import sample_weights


@dataclass
class LinearFit:
    """Raw-feature weights of every (task, C): scores = x @ v[t, p] + offset[t, p]."""

    v: np.ndarray  # [T, P, D, Q]
    offset: np.ndarray  # [T, P, Q]
    converged: np.ndarray  # [T, P]


@dataclass(frozen=True)
class SolverSettings:
    """Where and how long the stacked solve runs (``tol``: scikit-learn's lbfgs ``tol``, see ``solve_logreg``)."""

    device: str = "auto"  # device.resolve_device
    max_iter: int = 200
    tol: float = 1e-4
    loss: str = "log"  # or "squared_hinge" (linear SVM): see solver.solve_logreg
    penalize_intercept: bool = False  # liblinear's (LinearSVC's) penalized intercept

    def objective(self) -> dict:
        return {"loss": self.loss, "penalize_intercept": self.penalize_intercept}


def class_weights(y: np.ndarray, balanced: bool) -> np.ndarray:
    """Per-sample weights (``weighting.sample_weights``) for labels coded 0..K-1."""
    y = np.asarray(y, dtype=np.int64)
    return sample_weights(y, int(y.max()) + 1 if len(y) else 0, "balanced" if balanced else "none")


def fit_linear_grid(
    x_all: np.ndarray,
    y_all: np.ndarray,
    train_rows: list[np.ndarray],
    Cs: np.ndarray,
    *,
    n_classes: int,
    steps: tuple[str, ...],
    balanced: bool,
    solver: SolverSettings = SolverSettings(),
) -> LinearFit:
    """Fit every (task, C): ``train_rows[t]`` indexes ``x_all`` (already l2-normalized if asked for).
    ``Cs`` is [P] (same grid for every task) or [T, P]. On the CPU the solve runs single-threaded unless
    ``MEDTRANSFER_PROBE_THREADS`` says otherwise: its many small ops lose more to thread synchronization than
    they gain, badly so on a shared machine (measured: 4x slower with 2 threads on a loaded 2-core box)."""
    dev = resolve_device(solver.device)
    threads = int(os.environ.get("MEDTRANSFER_PROBE_THREADS", "1")) if dev.type == "cpu" else None
    with _threads(threads), threadpool_limits(threads):
        return _fit_linear_grid(x_all, y_all, train_rows, Cs, n_classes=n_classes, steps=steps, balanced=balanced,
                                solver=solver)


def _fit_linear_grid(x_all, y_all, train_rows, Cs, *, n_classes, steps, balanced, solver) -> LinearFit:
    dev, max_iter, tol = resolve_device(solver.device), solver.max_iter, solver.tol
    dtype = torch.float32 if dev.type != "cpu" or x_all.shape[1] >= 256 else torch.float64
    cs = np.asarray(Cs, dtype=float)
    cs = np.broadcast_to(cs, (len(train_rows), cs.shape[-1])) if cs.ndim == 1 else cs
    n_c, dim = cs.shape[1], x_all.shape[1]
    q = 1 if n_classes == 2 else n_classes
    out = LinearFit(v=np.zeros((len(train_rows), n_c, dim, q), dtype=np.float32),
                    offset=np.zeros((len(train_rows), n_c, q), dtype=np.float32),
                    converged=np.zeros((len(train_rows), n_c), dtype=bool))
    affines = fit_affines(x_all, list(train_rows), steps)
    large = [t for t, rows in enumerate(train_rows) if len(rows) >= dim or affines[t].a.ndim == 2]
    small = [t for t in range(len(train_rows)) if t not in set(large)]
    diag_large = [t for t in large if affines[t].a.ndim == 1]
    matrix_large = [t for t in large if affines[t].a.ndim == 2]
    x_dev = torch.as_tensor(x_all, dtype=dtype, device=dev) if diag_large else None
    if diag_large:  # shared design: one matmul over all rows serves every task and C
        mask = np.zeros((len(diag_large), len(x_all)))
        for g, t in enumerate(diag_large):
            mask[g, train_rows[t]] = class_weights(y_all[train_rows[t]], balanced)
        mu = torch.as_tensor(np.stack([affines[t].mu for t in diag_large]), dtype=dtype, device=dev)
        scale = torch.as_tensor(np.stack([affines[t].a for t in diag_large]), dtype=dtype, device=dev)
        y = torch.as_tensor(y_all, device=dev).expand(len(diag_large), -1)
        sol = _solve_c_path(SharedDesign(x_dev, mu, scale), y, torch.as_tensor(mask, dtype=dtype, device=dev),
                            torch.as_tensor(cs[diag_large], dtype=dtype, device=dev), n_classes=n_classes,
                            max_iter=max_iter, tol=tol, objective=solver.objective())
        _store(out, diag_large, sol, affines)
    buckets = [(bucket, True) for bucket in _buckets(small, [len(r) for r in train_rows])]
    for group, reduce in [*buckets, (matrix_large, False)]:
        if not group:
            continue
        n_max = max(len(train_rows[t]) for t in group)
        k = affines[group[0]].a.shape[1] if affines[group[0]].a.ndim == 2 else dim
        z = np.zeros((len(group), n_max, k))
        y = np.zeros((len(group), n_max), dtype=np.int64)
        sw = np.zeros((len(group), n_max))
        for g, t in enumerate(group):
            rows = train_rows[t]
            z[g, : len(rows)] = affines[t](x_all[rows])
            y[g, : len(rows)] = y_all[rows]
            sw[g, : len(rows)] = class_weights(y_all[rows], balanced)
        dtype = torch.float64  # small gathered problems: exact arithmetic is cheap and the Gram needs it
        zt = torch.as_tensor(z, dtype=dtype, device=dev)
        back = None
        if reduce and n_max < k:
            zt, back = reduce_rows(zt)
        y_t, sw_t = torch.as_tensor(y, device=dev), torch.as_tensor(sw, dtype=dtype, device=dev)
        cs_t = torch.as_tensor(cs[group], dtype=dtype, device=dev)
        if back is not None and solver.loss == "squared_hinge" and solver.penalize_intercept:
            # a few dozen features: the exact Newton path ends in a few steps where L-BFGS needs hundreds
            sol = solve_squared_hinge(zt, y_t, sw_t, cs_t, n_classes=n_classes, tol=tol)
        else:
            sol = solve_logreg(DenseDesign(zt), y_t, sw_t, cs_t, n_classes=n_classes, max_iter=max_iter, tol=tol,
                               **solver.objective())
        if back is not None:
            sol = Solution(w=torch.einsum("gdn,gpnq->gpdq", back, sol.w), b=sol.b, iterations=sol.iterations,
                           converged=sol.converged)
        _store(out, group, sol, affines)
    return out


def _solve_c_path(design, y, sw, cs: torch.Tensor, *, n_classes: int, max_iter: int, tol: float,
                  objective: dict | None = None) -> Solution:
    """``solve_logreg`` over a C grid [G, P], with warm starts along the weak-penalty end of the path: the
    smaller half of the grid (and one more) is solved together from zero, then each larger C in turn starts
    from the solution at the C before it (as scikit-learn's ``LogisticRegressionCV`` does along its path).
    There the solutions barely move from one C to the next (benchmark's full-data problems: 1 or 2 iterations
    each instead of ~30 from zero). Same stopping rule for every problem, so the same answer up to ``tol``.
    Used for the shared (full-data) design, where the iterations are costly; few-shot groups are cheap.
    ``objective``: ``SolverSettings.objective()`` (default: logistic loss, intercept not penalised)."""
    objective = objective if objective is not None else SolverSettings().objective()
    n_c = cs.shape[1]
    order = torch.argsort(cs[0])
    if n_c < 3 or not bool((torch.argsort(cs, dim=1) == order).all()):  # no path shared by every group
        return solve_logreg(design, y, sw, cs, n_classes=n_classes, max_iter=max_iter, tol=tol, **objective)
    cold = order[: n_c // 2 + 1]
    first = solve_logreg(design, y, sw, cs[:, cold], n_classes=n_classes, max_iter=max_iter, tol=tol, **objective)
    w = torch.empty(first.w.shape[0], n_c, *first.w.shape[2:], dtype=first.w.dtype, device=first.w.device)
    b = torch.empty(first.b.shape[0], n_c, first.b.shape[2], dtype=first.b.dtype, device=first.b.device)
    converged = torch.empty(first.converged.shape[0], n_c, dtype=torch.bool, device=first.converged.device)
    w[:, cold], b[:, cold], converged[:, cold] = first.w, first.b, first.converged
    previous, iterations = int(cold[-1]), first.iterations
    for p in order[len(cold) :].tolist():
        init = torch.cat([w[:, previous], b[:, previous, None]], dim=1)[:, None]  # [G, 1, d + 1, Q]
        sol = solve_logreg(design, y, sw, cs[:, p : p + 1], n_classes=n_classes, max_iter=max_iter, tol=tol,
                           init=init, **objective)
        w[:, p], b[:, p], converged[:, p] = sol.w[:, 0], sol.b[:, 0], sol.converged[:, 0]
        previous, iterations = p, max(iterations, sol.iterations)
    return Solution(w=w, b=b, iterations=iterations, converged=converged)


def _buckets(tasks: list[int], sizes: list[int], spread: float = 1.5) -> list[list[int]]:
    """Tasks grouped by training-set size (each bucket's largest <= spread x its smallest): little padding."""
    buckets: list[list[int]] = []
    for t in sorted(tasks, key=lambda t: sizes[t]):
        if buckets and sizes[t] <= spread * max(sizes[buckets[-1][0]], 1):
            buckets[-1].append(t)
        else:
            buckets.append([t])
    return buckets


@contextmanager
def _threads(n: int | None):
    before = torch.get_num_threads()
    if n:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _store(out: LinearFit, tasks: list[int], sol: Solution, affines: list[Affine]) -> None:
    """Write the solution of ``tasks`` (weights on preprocessed features) into ``out`` as raw-feature weights."""
    w, b = sol.w.double().cpu().numpy(), sol.b.double().cpu().numpy()
    for g, t in enumerate(tasks):
        a, mu = affines[t].a, affines[t].mu.astype(np.float64)
        raw = a[None, :, None] * w[g] if a.ndim == 1 else np.einsum("dk,pkq->pdq", a, w[g])  # [P, D, Q]
        out.v[t] = raw
        out.offset[t] = b[g] - np.einsum("d,pdq->pq", mu, raw)
        out.converged[t] = sol.converged[g].cpu().numpy()


def probabilities_many(fit: LinearFit, tasks, x: np.ndarray, n_classes: int, grid_index=None) -> np.ndarray:
    """P(class) of rows ``x`` for several tasks in one matmul: every grid entry ([T, P, n, K]) or, with
    ``grid_index`` (one entry per task), the chosen one ([T, n, K])."""
    tasks = np.asarray(tasks)
    v = fit.v[tasks] if grid_index is None else fit.v[tasks, np.asarray(grid_index)][:, None]
    off = fit.offset[tasks] if grid_index is None else fit.offset[tasks, np.asarray(grid_index)][:, None]
    threads = int(os.environ.get("MEDTRANSFER_PROBE_THREADS", "1"))
    with _threads(threads):
        return _probabilities(x, v, off, n_classes, every=grid_index is None)


def _probabilities(x, v, off, n_classes: int, *, every: bool) -> np.ndarray:
    t, p, d, q = v.shape
    xt = torch.as_tensor(np.ascontiguousarray(x, dtype=np.float32))
    flat = torch.as_tensor(np.ascontiguousarray(v.transpose(2, 0, 1, 3).reshape(d, t * p * q)))
    scores = (xt @ flat).reshape(len(x), t, p, q).permute(1, 2, 0, 3).double()
    scores = scores + torch.as_tensor(off, dtype=torch.float64)[:, :, None, :]
    proba = softmax_probabilities(scores, n_classes).numpy()
    return proba if every else proba[:, 0]
