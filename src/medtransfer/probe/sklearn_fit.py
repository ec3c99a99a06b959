"""The default way a head fits its tasks: one scikit-learn-style estimator per (task, grid candidate), task by
task. Preprocessing is fitted on the rows each model is fitted on; candidates are chosen on the fold's val rows
(or by inner CV on the training rows), then the full regime refits on train + val."""

from __future__ import annotations

import time
import warnings
from collections.abc import Iterator

import numpy as np
from sklearn.exceptions import ConvergenceWarning

from medtransfer.errors import MedtransferError, failure_reason
from medtransfer.probe.context import HeadFit, ProbeContext, inner_splits
from medtransfer.probe.features import apply_preprocess
from medtransfer.probe.registry import HeadSpec
from medtransfer.probe.selection import choose_on_val
from medtransfer.splits.tasks import Task
from medtransfer.weighting import sample_weights


def fit_each_task(head: HeadSpec, ctx: ProbeContext, tasks: list[Task]) -> Iterator[HeadFit | str]:
    """One ``HeadFit`` per task, in order; a task the estimator cannot fit yields the reason instead (a failed
    row, never a crash of the whole run)."""
    for task in tasks:
        try:
            yield _fit_task(head, ctx, task)
        except Exception as exc:  # a head that cannot fit this task: a failed row, never a crash
            yield failure_reason(exc)


def _fit_task(head: HeadSpec, ctx: ProbeContext, task: Task) -> HeadFit:
    start = time.perf_counter()
    steps = ctx.options.steps
    tr, va, te = ctx.index(task.train), ctx.index(task.val), ctx.index(task.test)
    x_train, (x_val, x_test) = apply_preprocess(ctx.x_all[tr], [ctx.x_all[va], ctx.x_all[te]], steps)
    y_train, y_val = ctx.y_all[tr], ctx.y_all[va]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        warnings.simplefilter("ignore", UserWarning)
        if ctx.options.tune == "cv":
            return _fit_task_cv(head, ctx, task, start)
        candidates = head.grid if len(y_val) else head.grid[:1]
        models = [fit_estimator(head, ctx, params, x_train, y_train) for params in candidates]
        val_probas = [full_proba(m, x_val, ctx.n_classes) for m in models] if len(y_val) else [None]
        pick = choose_on_val(y_val, np.stack(val_probas)) if len(y_val) else 0
        best, best_val, model = dict(candidates[pick]), val_probas[pick], models[pick]
        n_train = len(tr)
        if task.refit_with_val and len(va):
            x_fit = ctx.x_all[np.concatenate([tr, va])]
            x_fit, (x_test,) = apply_preprocess(x_fit, [ctx.x_all[te]], steps)
            model = fit_estimator(head, ctx, best, x_fit, np.concatenate([y_train, y_val]))
            n_train += len(va)
        test_proba = full_proba(model, x_test, ctx.n_classes)
    return HeadFit(params=best, tune_labels=y_val if len(y_val) else None, tune_proba=best_val,
                   test_proba=test_proba, seconds=time.perf_counter() - start, n_train=n_train)


def _fit_task_cv(head: HeadSpec, ctx: ProbeContext, task: Task, start: float) -> HeadFit:
    steps = ctx.options.steps
    tr = ctx.index(task.train)
    split = inner_splits(ctx, tr)
    if isinstance(split, str):
        raise MedtransferError(split)
    labels = np.concatenate([ctx.y_all[tr[e]] for _, e in split])
    oof = []
    for params in head.grid:
        parts = []
        for fit_part, eval_part in split:
            x_fit, (x_eval,) = apply_preprocess(ctx.x_all[tr[fit_part]], [ctx.x_all[tr[eval_part]]], steps)
            model = fit_estimator(head, ctx, params, x_fit, ctx.y_all[tr[fit_part]])
            parts.append(full_proba(model, x_eval, ctx.n_classes))
        oof.append(np.concatenate(parts))
    pick = choose_on_val(labels, np.stack(oof))
    rows = np.concatenate([tr, ctx.index(task.val)]) if task.refit_with_val else tr
    x_fit, (x_test,) = apply_preprocess(ctx.x_all[rows], [ctx.x_all[ctx.index(task.test)]], steps)
    model = fit_estimator(head, ctx, head.grid[pick], x_fit, ctx.y_all[rows])
    return HeadFit(params={**head.grid[pick], "tuned_by": "inner_cv"}, tune_labels=labels, tune_proba=oof[pick],
                   test_proba=full_proba(model, x_test, ctx.n_classes), seconds=time.perf_counter() - start,
                   n_train=len(rows))


class _Encoded:
    """A fitted model on labels re-coded 0..k-1 (XGBoost and friends want contiguous labels)."""

    def __init__(self, model, classes):
        self.model, self.classes_ = model, classes

    def predict_proba(self, x):
        return scores_to_proba(self.model, x)


def scores_to_proba(model, x: np.ndarray) -> np.ndarray:
    """predict_proba, or a sigmoid / softmax of decision_function (margins: ranks right, not calibrated)."""
    if hasattr(model, "predict_proba"):
        return model.predict_proba(x)
    decision = np.asarray(model.decision_function(x), dtype=float)
    if decision.ndim == 1:
        p1 = 1.0 / (1.0 + np.exp(-np.clip(decision, -50, 50)))
        return np.stack([1 - p1, p1], axis=1)
    decision = decision - decision.max(1, keepdims=True)
    e = np.exp(decision)
    return e / e.sum(1, keepdims=True)


def fit_estimator(head: HeadSpec, ctx: ProbeContext, params: dict, x: np.ndarray, y: np.ndarray) -> _Encoded:
    """``head.make(**params)`` fitted on (x, y), class-weighted through ``sample_weight`` when the head takes it."""
    classes = np.unique(y)
    codes = np.searchsorted(classes, y)
    model = head.make(**params)
    if head.sample_weight and ctx.options.balanced:
        y = np.asarray(y, dtype=np.int64)
        model.fit(x, codes, sample_weight=sample_weights(y, int(y.max()) + 1 if len(y) else 0, "balanced"))
    else:
        model.fit(x, codes)
    return _Encoded(model, classes)


def full_proba(model, x: np.ndarray, n_classes: int) -> np.ndarray:
    """Probabilities with a column for every class, even those absent from this fit's training rows."""
    partial = model.predict_proba(x)
    full = np.zeros((len(x), n_classes))
    full[:, np.asarray(model.classes_, dtype=int)] = partial
    return full
