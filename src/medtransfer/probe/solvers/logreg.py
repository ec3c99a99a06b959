"""The linear heads' way to fit a list of tasks (logreg, and svm through the same solver): every (task, C) of
the grid is one stacked problem for the batched torch solver (``solvers.batched``), tuned on the fold's val rows
or by inner CV, then one more stacked solve refits the full-regime tasks on train + val. logreg: the same
objective as scikit-learn's LogisticRegression; svm: LinearSVC's (squared hinge, one-vs-rest, penalized
intercept, ``C`` in its convention). So the results are those of fitting task by task, only faster."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import numpy as np

from medtransfer.probe.context import HeadFit, ProbeContext, inner_folds_of
from medtransfer.probe.registry import HeadSpec
from medtransfer.probe.selection import choose_on_val
from medtransfer.splits.tasks import Task

if TYPE_CHECKING:
    from medtransfer.probe.solvers.batched import LinearFit


# the solver objective of each linear head (keywords of batched.SolverSettings)
LOGISTIC = {"loss": "log"}
# LinearSVC defaults: loss="squared_hinge", intercept_scaling=1 (a penalized intercept), max_iter=1000
# (https://scikit-learn.org/stable/modules/generated/sklearn.svm.LinearSVC.html)
SQUARED_HINGE = {"loss": "squared_hinge", "penalize_intercept": True, "max_iter": 1000, "tol": 1e-5}


def fit_logreg_tasks(head: HeadSpec, ctx: ProbeContext, tasks: list[Task]) -> list[HeadFit | str]:
    """One ``HeadFit`` (or the reason it cannot be fitted) per task, in order."""
    return fit_linear_tasks(head, ctx, tasks, LOGISTIC)


def fit_svm_tasks(head: HeadSpec, ctx: ProbeContext, tasks: list[Task]) -> list[HeadFit | str]:
    """The linear SVM head: LinearSVC's objective through the same batched solver."""
    return fit_linear_tasks(head, ctx, tasks, SQUARED_HINGE)


def fit_linear_tasks(head: HeadSpec, ctx: ProbeContext, tasks: list[Task], objective: dict) -> list[HeadFit | str]:
    if not tasks:
        return []
    fit = _fit_cv if ctx.options.tune == "cv" else _fit_val
    fitted = fit(head, ctx, tasks, objective)
    return [fitted[j] for j in range(len(tasks))]


def _grid_fit(ctx: ProbeContext, rows: list[np.ndarray], cs: np.ndarray, objective: dict) -> LinearFit:
    from medtransfer.probe.solvers import (
        batched,  # torch: imported when a linear head fits, not when the CLI lists heads
    )

    options = ctx.options
    return batched.fit_linear_grid(ctx.x_all, ctx.y_all, rows, cs, n_classes=ctx.n_classes, steps=options.steps,
                                   balanced=options.balanced,
                                   solver=batched.SolverSettings(device=options.device, **objective))


def _fit_val(head: HeadSpec, ctx: ProbeContext, tasks: list[Task], objective: dict) -> dict[int, HeadFit]:
    """Every (task, C) at once; then one stacked refit on train + val for the full-regime tasks."""
    from medtransfer.probe.solvers import batched
    start = time.perf_counter()
    grid = head.grid
    cs = np.array([p["C"] for p in grid], dtype=float)
    train_rows = [ctx.index(t.train) for t in tasks]
    fit = _grid_fit(ctx, train_rows, cs, objective)
    chosen = np.zeros(len(tasks), dtype=int)
    val_proba: dict[int, np.ndarray | None] = {}
    by_fold: dict[tuple, list[int]] = {}
    for j, task in enumerate(tasks):
        by_fold.setdefault((task.fold, tuple(task.val)), []).append(j)
    for (_, val_ids), members in by_fold.items():
        if not val_ids:
            for j in members:
                val_proba[j] = None
            continue
        y_val = ctx.y_all[ctx.index(list(val_ids))]
        proba = batched.probabilities_many(fit, members, ctx.x_all[ctx.index(list(val_ids))], ctx.n_classes)
        for m, j in enumerate(members):
            chosen[j] = choose_on_val(y_val, proba[m])
            val_proba[j] = proba[m, chosen[j]]
    refit = [j for j, t in enumerate(tasks) if t.refit_with_val and len(t.val)]
    if refit:
        rows = [np.concatenate([train_rows[j], ctx.index(tasks[j].val)]) for j in refit]
        refit_fit = _grid_fit(ctx, rows, cs[chosen[refit]][:, None], objective)
    by_test: dict[tuple, list[int]] = {}
    for j, task in enumerate(tasks):
        by_test.setdefault(tuple(task.test), []).append(j)
    refit_pos = {j: k for k, j in enumerate(refit)}
    test_proba: dict[int, np.ndarray] = {}
    for test_ids, members in by_test.items():
        x_test = ctx.x_all[ctx.index(list(test_ids))]
        plain = [j for j in members if j not in refit_pos]
        if plain:
            proba = batched.probabilities_many(fit, plain, x_test, ctx.n_classes, grid_index=chosen[plain])
            test_proba.update(zip(plain, proba, strict=True))
        again = [j for j in members if j in refit_pos]
        if again:
            proba = batched.probabilities_many(refit_fit, [refit_pos[j] for j in again], x_test, ctx.n_classes,
                                               grid_index=np.zeros(len(again), dtype=int))
            test_proba.update(zip(again, proba, strict=True))
    seconds = (time.perf_counter() - start) / len(tasks)  # the stacked solve's time, shared out per task
    results: dict[int, HeadFit] = {}
    for j, task in enumerate(tasks):
        params = dict(grid[chosen[j]])
        conv = fit.converged[j, chosen[j]] and (j not in refit_pos or refit_fit.converged[refit_pos[j], 0])
        if not conv:
            params["converged"] = False
        final, slot, entry = (refit_fit, refit_pos[j], 0) if j in refit_pos else (fit, j, chosen[j])
        results[j] = HeadFit(
            params=params, tune_labels=ctx.y_all[ctx.index(task.val)] if len(task.val) else None,
            tune_proba=val_proba[j], test_proba=test_proba[j], seconds=seconds,
            n_train=len(task.train) + (len(task.val) if j in refit_pos else 0),
            linear=(final.v[slot, entry].copy(), final.offset[slot, entry].copy()))
    return results


def _fit_cv(head: HeadSpec, ctx: ProbeContext, tasks: list[Task], objective: dict) -> dict[int, HeadFit | str]:
    """C chosen by stratified inner CV on each task's training rows: every (task, inner fold, C) is one stacked
    solve; then one stacked final fit (train + val for the full regime) with the chosen C."""
    from medtransfer.probe.solvers import batched
    start = time.perf_counter()
    cs = np.array([p["C"] for p in head.grid], dtype=float)
    folds = inner_folds_of(ctx, tasks)
    sub_rows, sub_eval, owner = folds.fit_rows, folds.eval_rows, folds.owner
    results: dict[int, HeadFit | str] = dict(folds.failed)
    live = sorted(set(owner))
    if not live:
        return results
    fit = _grid_fit(ctx, sub_rows, cs, objective)
    pooled: dict[int, list] = {j: [] for j in live}
    for s_index, j in enumerate(owner):
        proba = batched.probabilities_many(fit, [s_index], ctx.x_all[sub_eval[s_index]], ctx.n_classes)[0]
        pooled[j].append((ctx.y_all[sub_eval[s_index]], proba))
    chosen, oof = {}, {}
    for j in live:
        labels = np.concatenate([lab for lab, _ in pooled[j]])
        proba = np.concatenate([p for _, p in pooled[j]], axis=1)  # [P, n, K]
        chosen[j] = choose_on_val(labels, proba)
        oof[j] = (labels, proba[chosen[j]])
    final_rows = [np.concatenate([ctx.index(tasks[j].train), ctx.index(tasks[j].val)]) if tasks[j].refit_with_val
                  else ctx.index(tasks[j].train) for j in live]
    final = _grid_fit(ctx, final_rows, cs[[chosen[j] for j in live]][:, None], objective)
    seconds = (time.perf_counter() - start) / len(live)
    for k, j in enumerate(live):
        test_proba = batched.probabilities_many(final, [k], ctx.x_all[ctx.index(tasks[j].test)], ctx.n_classes,
                                                grid_index=[0])[0]
        results[j] = HeadFit(params={**head.grid[chosen[j]], "tuned_by": "inner_cv"}, tune_labels=oof[j][0],
                             tune_proba=oof[j][1], test_proba=test_proba, seconds=seconds,
                             n_train=len(final_rows[k]), linear=(final.v[k, 0].copy(), final.offset[k, 0].copy()))
    return results
