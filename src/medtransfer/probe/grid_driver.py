"""Tuning and refitting for heads that fit a whole list of tasks at once (``GridSolver``): the same protocol as
``probe.sklearn_fit`` (candidates chosen on the fold's val rows or by inner CV on the training rows, the full
regime refit on train + val), with every fit of a stage handed to the head's solver in one call, so that the
solver can batch across tasks, folds and grid candidates.

A solver gets ``GridJob``s (training rows, the grid candidates to fit, optionally rows it may early-stop on) and
returns a ``GridModel`` that gives probabilities for any rows. The rows a job may stop on are the fold's val rows
(or the inner-CV eval rows): never test rows. What a job settled while fitting (boosting rounds, MLP epochs) is
reported by ``GridModel.settled`` and reused by the refit on train + val, which has no held-out rows left.

``fit_seconds``: the wall time of a stage's batched fits is shared out equally over its tasks (a batched fit has
no per-task time); the sum over a head's tasks is the head's wall time.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from medtransfer.probe.context import HeadFit, ProbeContext, inner_folds_of
from medtransfer.probe.registry import Fitter, HeadSpec
from medtransfer.probe.selection import choose_many, choose_on_val
from medtransfer.splits.tasks import Task


@dataclass(frozen=True)
class GridJob:
    """One fit: training rows (indexes of ``ctx.x_all``), which grid candidates, and what it may stop on."""

    rows: np.ndarray
    candidates: tuple[int, ...]  # indexes into head.grid
    stop_rows: np.ndarray | None = None  # held-out rows for early stopping (val / inner eval, never test)
    settled: tuple[dict, ...] = ()  # per candidate: what an earlier fit settled (e.g. {"epochs": 40}), reused
    task: int = 0  # the task the job serves: a task's inner-CV jobs share it (successive halving pools them)


class GridModel(Protocol):
    def proba(self, jobs: Sequence[int], rows: np.ndarray) -> list[np.ndarray]:
        """For each job, P(class) of ``rows`` under each of its candidates: [n_candidates, n, n_classes]."""

    def settled(self, job: int, position: int) -> dict:
        """What fitting settled for the job's candidate at ``position`` (empty when nothing)."""

    # optional: ``alive(job) -> positions`` tuning may choose from (successive halving drops the others)


GridSolver = Callable[[HeadSpec, ProbeContext, list[GridJob]], GridModel]


def grid_fitter(module: str, solver: str) -> Fitter:
    """A head's ``fitter`` through this driver with the ``GridSolver`` ``module.solver``, imported when the head
    first fits (the solvers import torch; listing the heads for ``--help`` does not)."""

    def fit(head: HeadSpec, ctx: ProbeContext, tasks: list[Task]) -> list[HeadFit | str]:
        import importlib

        return fit_grid_tasks(head, ctx, tasks, getattr(importlib.import_module(module), solver))

    return fit


def fit_grid_tasks(head: HeadSpec, ctx: ProbeContext, tasks: list[Task], solver: GridSolver) -> list[HeadFit | str]:
    """One ``HeadFit`` (or the reason it cannot be fitted) per task, in order."""
    if not tasks:
        return []
    fitted = _fit_cv(head, ctx, tasks, solver) if ctx.options.tune == "cv" else _fit_val(head, ctx, tasks, solver)
    return [fitted[j] for j in range(len(tasks))]


def _by_rows(ids_of: dict[int, list[str]]) -> dict[tuple, list[int]]:
    groups: dict[tuple, list[int]] = {}
    for j, ids in ids_of.items():
        groups.setdefault(tuple(ids), []).append(j)
    return groups


def _fit_val(head: HeadSpec, ctx: ProbeContext, tasks: list[Task], solver: GridSolver) -> dict[int, HeadFit]:
    start = time.perf_counter()
    every = tuple(range(len(head.grid)))
    index = _Index(ctx)
    jobs = [GridJob(index(t.train), every if len(t.val) else (0,), index(t.val) if len(t.val) else None, task=j)
            for j, t in enumerate(tasks)]
    model = solver(head, ctx, jobs)
    chosen = np.zeros(len(tasks), dtype=int)  # position in the job's candidates (= grid index here)
    val_proba: dict[int, np.ndarray | None] = {j: None for j in range(len(tasks))}
    for val_ids, members in _by_rows({j: t.val for j, t in enumerate(tasks) if len(t.val)}).items():
        rows = index(val_ids)
        probas = model.proba(members, rows)
        if getattr(model, "alive", None) is None:  # every member has the whole grid: one batched choice
            stacked = np.stack(probas)  # [J, P, n, K]
            chosen[members] = choose_many(ctx.y_all[rows], stacked)
        else:  # successive halving: each job chooses among the candidates it kept alive
            for j, proba in zip(members, probas, strict=True):
                chosen[j] = _choose(model, j, ctx.y_all[rows], proba)
        for j, proba in zip(members, probas, strict=True):
            val_proba[j] = proba[chosen[j]]
    refit = [j for j, t in enumerate(tasks) if t.refit_with_val and len(t.val)]
    refit_model = solver(head, ctx, [
        GridJob(np.concatenate([jobs[j].rows, index(tasks[j].val)]), (int(chosen[j]),),
                settled=(model.settled(j, int(chosen[j])),)) for j in refit]) if refit else None
    refit_pos = {j: k for k, j in enumerate(refit)}
    test_proba: dict[int, np.ndarray] = {}
    for test_ids, members in _by_rows({j: t.test for j, t in enumerate(tasks)}).items():
        rows = index(test_ids)
        plain = [j for j in members if j not in refit_pos]
        if plain:
            for j, proba in zip(plain, model.proba(plain, rows), strict=True):
                test_proba[j] = proba[chosen[j]]
        again = [j for j in members if j in refit_pos]
        if again:
            for j, proba in zip(again, refit_model.proba([refit_pos[j] for j in again], rows), strict=True):
                test_proba[j] = proba[0]
    seconds = (time.perf_counter() - start) / len(tasks)
    results = {}
    for j, task in enumerate(tasks):
        settled = refit_model.settled(refit_pos[j], 0) if j in refit_pos else model.settled(j, int(chosen[j]))
        results[j] = HeadFit(params={**head.grid[chosen[j]], **settled},
                             tune_labels=ctx.y_all[index(task.val)] if len(task.val) else None,
                             tune_proba=val_proba[j], test_proba=test_proba[j], seconds=seconds,
                             n_train=len(task.train) + (len(task.val) if j in refit_pos else 0))
    return results


class _Index:
    """``ctx.index`` remembered per list of ids: the tasks of a fold share their val and test rows."""

    def __init__(self, ctx: ProbeContext):
        self.ctx, self.known = ctx, {}

    def __call__(self, ids) -> np.ndarray:
        key = tuple(ids)
        if key not in self.known:
            self.known[key] = self.ctx.index(list(ids))
        return self.known[key]


def _fit_cv(head: HeadSpec, ctx: ProbeContext, tasks: list[Task], solver: GridSolver) -> dict[int, HeadFit | str]:
    """Candidates chosen on the pooled out-of-fold rows of stratified inner CV on each task's training rows."""
    start = time.perf_counter()
    every = tuple(range(len(head.grid)))
    folds = inner_folds_of(ctx, tasks)
    results: dict[int, HeadFit | str] = dict(folds.failed)
    evals, owner = folds.eval_rows, folds.owner
    jobs = [GridJob(fit, every, held, task=j)
            for fit, held, j in zip(folds.fit_rows, folds.eval_rows, owner, strict=True)]
    live = sorted(set(owner))
    if not live:
        return results
    model = solver(head, ctx, jobs)
    pooled: dict[int, list] = {j: [] for j in live}
    for s, j in enumerate(owner):
        pooled[j].append((ctx.y_all[evals[s]], model.proba([s], evals[s])[0], s))
    chosen, oof, settled = {}, {}, {}
    for j in live:
        labels = np.concatenate([lab for lab, _, _ in pooled[j]])
        proba = np.concatenate([p for _, p, _ in pooled[j]], axis=1)
        chosen[j] = _choose(model, pooled[j][0][2], labels, proba)
        oof[j] = (labels, proba[chosen[j]])
        settled[j] = _median_settled([model.settled(s, chosen[j]) for _, _, s in pooled[j]])
    final_rows = [np.concatenate([ctx.index(tasks[j].train), ctx.index(tasks[j].val)]) if tasks[j].refit_with_val
                  else ctx.index(tasks[j].train) for j in live]
    final = solver(head, ctx, [GridJob(rows, (chosen[j],), settled=(settled[j],))
                               for rows, j in zip(final_rows, live, strict=True)])
    seconds = (time.perf_counter() - start) / len(live)
    for k, j in enumerate(live):
        test_proba = final.proba([k], ctx.index(tasks[j].test))[0][0]
        results[j] = HeadFit(params={**head.grid[chosen[j]], **final.settled(k, 0), "tuned_by": "inner_cv"},
                             tune_labels=oof[j][0], tune_proba=oof[j][1], test_proba=test_proba, seconds=seconds,
                             n_train=len(final_rows[k]))
    return results


def _choose(model: GridModel, job: int, labels: np.ndarray, proba: np.ndarray) -> int:
    """``choose_on_val`` among the job's candidates the model kept alive (all, unless it halved the grid)."""
    alive = getattr(model, "alive", None)
    positions = list(alive(job)) if alive is not None else list(range(len(proba)))
    return positions[choose_on_val(labels, proba[positions])]


def _median_settled(values: list[dict]) -> dict:
    """What the inner folds settled, combined for the final fit (the median of each number; other values, such
    as a halving schedule, are the same for every fold)."""
    if not values or not values[0]:
        return {}
    return {key: int(np.median([v[key] for v in values])) if isinstance(values[0][key], int | float)
            else values[0][key] for key in values[0]}


def present_classes(y: np.ndarray) -> np.ndarray:
    return np.unique(y)


def to_full(partial: np.ndarray, classes: np.ndarray, n_classes: int) -> np.ndarray:
    """[..., n, len(classes)] -> [..., n, n_classes] (zeros for classes absent from the fit's training rows)."""
    full = np.zeros((*partial.shape[:-1], n_classes))
    full[..., classes] = partial
    return full
