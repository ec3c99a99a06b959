"""Spreading a head's tasks over worker processes (``--workers``): for heads whose tasks are fitted
independently (``HeadSpec.spreads``: the tree heads), so that the result of every task is the same with one
worker or many (each task is fitted whole in one worker, with the same seeds).

Tasks are dealt to ``2 x workers`` chunks, largest training sets first and round robin, so that the few
full-data tasks (hundreds of times a 2-shot task's cost) land in different workers. Workers are joblib's loky
processes; the feature matrix reaches them memory-mapped rather than copied (joblib's automatic memmapping of
large arrays). Inside a worker each estimator uses one thread (``halving.estimator_threads``).

``fit_seconds``: a task's share of its worker's time, so over a head they sum to more than the wall time (up
to ``workers`` times it); the per-head timing line is the wall time.
"""

from __future__ import annotations

import os

from medtransfer.probe.context import HeadFit, ProbeContext
from medtransfer.probe.fitting import fit_tasks
from medtransfer.probe.registry import HeadSpec
from medtransfer.splits.tasks import Task


def resolve_workers(workers: int) -> int:
    """0 -> one per CPU core; otherwise as given."""
    return os.cpu_count() or 1 if workers == 0 else workers


def fit_spread(head: HeadSpec, ctx: ProbeContext, tasks: list[Task]) -> list[HeadFit | str]:
    """``fit_tasks(head, ctx, tasks)``, spread over ``ctx.options.workers`` processes when the head allows it."""
    workers = min(resolve_workers(ctx.options.workers), len(tasks))
    if workers <= 1 or not head.spreads:
        return list(fit_tasks(head, ctx, tasks))
    from joblib import Parallel, delayed

    order = sorted(range(len(tasks)), key=lambda i: (-len(tasks[i].train), i))
    n_chunks = min(len(tasks), 2 * workers)
    chunks = [order[k::n_chunks] for k in range(n_chunks)]
    parts = Parallel(n_jobs=workers, backend="loky")(
        delayed(_fit_chunk)(head, ctx, [tasks[i] for i in chunk]) for chunk in chunks)
    out: list[HeadFit | str] = [""] * len(tasks)
    for chunk, part in zip(chunks, parts, strict=True):
        for i, fit in zip(chunk, part, strict=True):
            out[i] = fit
    return out


def _fit_chunk(head: HeadSpec, ctx: ProbeContext, tasks: list[Task]) -> list[HeadFit | str]:
    return list(fit_tasks(head, ctx, tasks))
