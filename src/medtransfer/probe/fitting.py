"""One way in to fit a head's tasks, whichever strategy the head declares."""

from __future__ import annotations

from collections.abc import Iterable

from medtransfer.probe.context import HeadFit, ProbeContext
from medtransfer.probe.registry import HeadSpec
from medtransfer.probe.sklearn_fit import fit_each_task
from medtransfer.splits.tasks import Task


def fit_tasks(head: HeadSpec, ctx: ProbeContext, tasks: list[Task]) -> Iterable[HeadFit | str]:
    """Fit every task (all fittable: ``run_probe`` has already failed the others); yields per task, in order, a
    ``HeadFit`` or the one-line reason this head could not fit it. A head without its own ``fitter`` fits task by
    task through scikit-learn (``probe.sklearn_fit``)."""
    return (head.fitter or fit_each_task)(head, ctx, tasks)
