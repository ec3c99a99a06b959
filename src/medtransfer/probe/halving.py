"""Successive halving over a tree head's grid (rf, extratrees, hgb, xgb) as a ``GridModel`` for
``probe.grid_driver``: every candidate first gets a small share of the head's resource (trees of a forest, the
round cap of boosting), is scored on the job's held-out rows -- the fold's val rows, or under ``--tune cv`` /
``budget`` the pooled inner-CV evaluation rows of its task; never test rows -- and only the best 1/ETA go on
to ETA times the resource, until the survivors have the full resource. The driver then chooses among the
survivors only (``alive``), by the usual rule.

What this changes: the loser of an early stage is judged on a smaller model than the loop would fit for it
(a 22-tree forest instead of 200; 33 boosting rounds instead of up to 300), so the chosen candidate can differ
from an exhaustive search's when candidates are close; ``benchmarks/probe_trees.py`` reports the MCC
difference. What it keeps: the candidates, the estimators and their seeds, the class weighting, and the chosen
model itself (a forest grown in stages with ``warm_start`` is the forest fitted at once, tree for tree).
Every row records the schedule in its hyperparameters (``halving``), and the settings hash includes it.

The schedule follows scikit-learn's ``HalvingGridSearchCV`` with ``factor=3`` (ETA), with the resource being
trees / rounds rather than samples (few-shot tasks have too few samples to halve): stage s keeps
ceil(n / ETA^s) candidates at full / ETA^(S-1-s) of the resource (https://scikit-learn.org/stable/modules/
grid_search.html#successive-halving-user-guide). Deterministic: ties in the ranking go to the lower log loss,
then the earlier candidate, as ``selection.choose_on_val``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from medtransfer.probe.context import ProbeContext
from medtransfer.probe.features import fit_affines
from medtransfer.probe.grid_driver import GridJob, to_full
from medtransfer.probe.registry import HeadSpec
from medtransfer.probe.selection import fast_mcc
from medtransfer.weighting import sample_weights

ETA = 3  # scikit-learn's HalvingGridSearchCV default factor


@dataclass(frozen=True)
class Schedule:
    """Per stage: the resource each candidate gets and how many candidates are alive."""

    budgets: tuple[int, ...]
    alive: tuple[int, ...]

    def describe(self, resource: str) -> str:
        return (f"eta {ETA}: {resource} {'/'.join(map(str, self.budgets))}, "
                f"candidates {'/'.join(map(str, self.alive))}")


def schedule(n_candidates: int, full: int, *, halving: bool = True) -> Schedule:
    """The halving schedule for ``n_candidates`` and a full resource of ``full`` (one stage without halving)."""
    if not halving or n_candidates <= 1:
        return Schedule((full,), (n_candidates,))
    stages = math.ceil(math.log(n_candidates, ETA) - 1e-9) + 1
    budgets = tuple(max(1, round(full / ETA ** (stages - 1 - s))) for s in range(stages))
    alive = tuple(max(1, math.ceil(n_candidates / ETA**s)) for s in range(stages))
    return Schedule(budgets, alive)


def rank_on_val(labels: np.ndarray, proba: np.ndarray) -> list[int]:
    """Candidates best first: higher MCC (threshold 0.5 / argmax), then lower log loss, then earlier: the order
    whose first element ``selection.choose_on_val`` picks."""
    mcc = np.array([fast_mcc(labels, p) for p in proba])
    picked = np.take_along_axis(proba, labels[None, :, None].astype(int), axis=2)[..., 0]
    log_loss = -np.log(np.clip(picked, 1e-15, 1)).mean(1)
    return sorted(range(len(proba)), key=lambda k: (-round(float(mcc[k]), 12), float(log_loss[k]), k))


@dataclass(frozen=True)
class FitData:
    """One job's training rows as a tree head sees them: preprocessed, labels coded 0..k-1, class weights, and
    the held-out rows it may stop on (their classes seen in training only)."""

    x: np.ndarray
    codes: np.ndarray
    classes: np.ndarray
    sample_weight: np.ndarray | None
    stop: tuple[np.ndarray, np.ndarray] | None


class Grower(Protocol):
    """How one estimator of a head gets (more of) its resource."""

    resource: str  # "trees", "rounds": what the halving schedule hands out

    def full(self, head: HeadSpec) -> int:
        """The whole resource a candidate gets without halving."""

    def grow(self, head: HeadSpec, params: dict, data: FitData, budget: int, *, previous, fixed: dict):
        """(estimator with ``budget`` of the resource, what it settled): ``previous`` is this candidate's
        estimator from the stage before (None at the first), ``fixed`` what an earlier fit settled (refits)."""


class HalvingModel:
    """Every (job, candidate) estimator, fitted under the halving schedule; jobs of one task (its inner-CV
    folds) are ranked together on their pooled held-out rows."""

    def __init__(self, head: HeadSpec, ctx: ProbeContext, jobs: list[GridJob], grower: Grower):
        self.ctx, self.jobs, self.grower = ctx, jobs, grower
        self.affines = fit_affines(ctx.x_all, [job.rows for job in jobs], ctx.options.steps)
        self.data = [self._data(head, j) for j in range(len(jobs))]
        self.models: dict[tuple[int, int], object] = {}
        self.found: dict[tuple[int, int], dict] = {}
        self.alive_: dict[int, tuple[int, ...]] = {}
        self.notes: dict[int, str] = {}
        groups: dict[int, list[int]] = {}
        for j, job in enumerate(jobs):
            groups.setdefault(job.task, []).append(j)
        for members in groups.values():
            self._fit_group(head, members)

    def _data(self, head: HeadSpec, j: int) -> FitData:
        job, ctx = self.jobs[j], self.ctx
        y = ctx.y_all[job.rows]
        classes = np.unique(y)
        codes = np.searchsorted(classes, y)
        weighted = head.sample_weight and ctx.options.balanced
        stop = None
        if job.stop_rows is not None and len(job.stop_rows):
            held = job.stop_rows[np.isin(ctx.y_all[job.stop_rows], classes)]  # a class never trained on
            stop = (self.affines[j](ctx.x_all[held]), np.searchsorted(classes, ctx.y_all[held]))
        return FitData(self.affines[j](ctx.x_all[job.rows]), codes, classes,
                       sample_weights(codes, len(classes), "balanced") if weighted else None, stop)

    def _fit_group(self, head: HeadSpec, members: list[int]) -> None:
        first = self.jobs[members[0]]
        n = len(first.candidates)
        can_halve = all(self.jobs[j].stop_rows is not None and len(self.jobs[j].stop_rows)
                        and not self.jobs[j].settled for j in members)
        plan = schedule(n, self.grower.full(head), halving=self.ctx.options.halving and can_halve)
        alive = list(range(n))
        for stage, budget in enumerate(plan.budgets):
            for j in members:
                for position in alive:
                    fixed = self.jobs[j].settled[position] if self.jobs[j].settled else {}
                    model, found = self.grower.grow(head, head.grid[self.jobs[j].candidates[position]],
                                                    self.data[j], budget, previous=self.models.get((j, position)),
                                                    fixed=fixed)
                    self.models[(j, position)], self.found[(j, position)] = model, found
            if stage + 1 < len(plan.budgets):
                labels = np.concatenate([self.ctx.y_all[self.jobs[j].stop_rows] for j in members])
                proba = np.concatenate([self._proba(j, self.jobs[j].stop_rows, alive) for j in members], axis=1)
                order = rank_on_val(labels, proba)
                alive = sorted(alive[k] for k in order[: plan.alive[stage + 1]])
        note = plan.describe(self.grower.resource) if len(plan.budgets) > 1 else ""
        for j in members:
            self.alive_[j] = tuple(alive)
            self.notes[j] = note

    def _proba(self, j: int, rows: np.ndarray, positions: Sequence[int]) -> np.ndarray:
        x = self.affines[j](self.ctx.x_all[rows])
        per = [self.models[(j, p)].predict_proba(x) for p in positions]
        return to_full(np.stack(per), self.data[j].classes, self.ctx.n_classes)

    def proba(self, jobs: Sequence[int], rows: np.ndarray) -> list[np.ndarray]:
        """Every candidate's probabilities (a candidate dropped early: its last, smaller estimator's)."""
        return [self._proba(j, rows, range(len(self.jobs[j].candidates))) for j in jobs]

    def alive(self, job: int) -> tuple[int, ...]:
        """Positions of the job's candidates that reached the full resource: the only ones tuning may choose."""
        return self.alive_[job]

    def settled(self, job: int, position: int) -> dict:
        earlier = dict(self.jobs[job].settled[position]) if self.jobs[job].settled else {}
        note = {"halving": self.notes[job]} if self.notes[job] else {}
        return {**earlier, **self.found[(job, position)], **note}


def estimator_threads(ctx: ProbeContext) -> int:
    """Threads for one tree estimator: every core in a single process, one per worker process otherwise."""
    return -1 if ctx.options.workers <= 1 else 1
