"""Probe cached features on the splits file's folds: full data, every few-shot subset, label fractions.

Per task: the head's hyperparameters are chosen on the fold's ``val`` rows (validation MCC at threshold 0.5 /
argmax; ties to the lower validation log loss, then the simpler candidate); the full regime then refits on
train + val with the chosen ones (as DINOv2's linear evaluation does); few-shot and fraction regimes keep the
fit on their own subset. Test rows are used for nothing but the reported metrics.

Preprocessing (``--preprocess``) is fitted on the rows a model is fitted on. The decision threshold is 0.5, or
with ``threshold="val-mcc"`` the one maximizing MCC on the validation rows' probabilities from the fit on the
training rows (never test rows; for the full regime the refit's own val rows would be in-sample). Both the
rule and the threshold are recorded per row, with the MCC at 0.5 beside it.

``fit_seconds``: a head that fits its tasks together (every head but the trees) shares the batched wall time
out equally over the tasks of that batch, so a head's ``fit_seconds`` sum to its wall time; the per-head timing
line printed after each head gives that total.

Method names: the head name for the store's default embedding (``logreg``), ``head@kind`` for a variant
(``logreg@mean``). Problems stop at the row: a task that cannot be fitted (one class in train, a short
few-shot subset, NaN/inf features) is a row with ``status="failed"`` and the reason in ``error``.

This module knows no head by name: each head fits its tasks its own way (``HeadSpec.fit_tasks``) and hands back
one ``HeadFit`` per task, from which the row and the test predictions are built here.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from medtransfer import cache_schema
from medtransfer.device import resolve_device
from medtransfer.errors import MedtransferError
from medtransfer.metrics import compute_metrics, predict_labels
from medtransfer.probe.context import FeatureMatrix, HeadFit, ProbeContext, check_task
from medtransfer.probe.features import l2_normalize, read_embedding
from medtransfer.probe.heads import HeadSpec, resolve_heads
from medtransfer.probe.options import ProbeOptions
from medtransfer.probe.summary import summarize
from medtransfer.probe.threshold import choose_threshold
from medtransfer.results import ResultRow, check_results_folder, write_results
from medtransfer.splits.schema import load_splits
from medtransfer.splits.tasks import Task, tasks_for

SUMMARY_FILE = "probe_summary.csv"  # this call's summary (mean ± std, bootstrap CI), beside results.csv


def list_backbones(store) -> list[str]:
    return sorted({info.backbone for info in cache_schema.list_groups(store)})


def run_probe(
    store: str | Path,
    splits_path: str | Path,
    backbones: list[str],
    out: str | Path,
    *,
    weights: str | None = None,
    progress: bool = True,
    options: ProbeOptions | None = None,
    **choices: object,
) -> pd.DataFrame:
    """Fit every (backbone, embedding, head, task) and write the results table under ``out``; returns its rows.

    ``backbones=["all"]``: every backbone in the store; ``weights`` picks the feature group when the store holds
    several. What to fit and how comes as ``options`` (a ``ProbeOptions``) or as its fields by keyword
    (``heads=["all"]``, ``regimes=("full",)``, ``embeddings=["default", "mean"]``, ``class_weight="none"``,
    ``preprocess``, ``threshold="val-mcc"``, ``fractions``, ``tune="cv"``, ``inner_folds``, ``device``): see
    ``ProbeOptions`` for each."""
    if options is not None and choices:
        raise MedtransferError("pass either options=ProbeOptions(...) or its fields as keywords, not both")
    options = options or ProbeOptions.create(**choices)
    splits = load_splits(splits_path)
    head_specs = resolve_heads(options.heads)
    resolve_device(options.device)  # a bad --device is one line before any work, not after the first fits
    check_results_folder(out)  # an unreadable earlier table refuses the run before hours of fitting
    if list(backbones) == ["all"]:
        backbones = list_backbones(store)
        if not backbones:
            raise MedtransferError(f"store {store} holds no feature groups; run `medtransfer extract` first")
    keys = {backbone: cache_schema.find_group(store, backbone, weights) for backbone in backbones}
    tasks = tasks_for(splits, options.regimes, list(options.fractions) or None)
    if not tasks:
        raise MedtransferError("no tasks: the splits file has no folds (or none of the asked regimes)")
    all_ids = list(splits.labels)
    y_all = np.array([splits.labels[i] for i in all_ids], dtype=int)
    rows: list[ResultRow] = []
    predictions: list[pd.DataFrame] = []
    for backbone, key in keys.items():
        for embedding in options.embeddings:
            features = read_embedding(store, key, embedding)
            data = FeatureMatrix.create(features.rows_for(all_ids, what=f"the splits file (backbone {backbone})"),
                                        y_all, all_ids)
            if "l2" in options.steps:
                data = dataclasses.replace(data, x=l2_normalize(np.where(data.bad_rows[:, None], 0, data.x)))
            ctx = ProbeContext(backbone=backbone, embedding="" if embedding in ("default", None) else embedding,
                               data=data, splits=splits, options=options, weights=features.attrs.get("weights", ""))
            bar = tqdm(total=len(tasks) * len(head_specs), desc=f"probe {backbone}", unit="fit",
                       disable=not progress)
            with bar:
                for head in head_specs:
                    start = time.perf_counter()
                    for row, prediction in _run_head(ctx, head, tasks, bar):
                        rows.append(row)
                        if prediction is not None:
                            predictions.append(prediction)
                    if progress:  # the per-head timing line: which head costs what, at a glance
                        bar.write(f"{backbone}{'@' + ctx.embedding if ctx.embedding else ''} {head.name}: "
                                  f"{len(tasks)} tasks in {time.perf_counter() - start:.1f} s")
    predicted = pd.concat(predictions, ignore_index=True) if predictions else None
    write_results(out, rows, predicted)
    table = pd.DataFrame([r.as_record() for r in rows])
    summarize(table, predicted).to_csv(Path(out) / SUMMARY_FILE, index=False)
    return table


def _run_head(
    ctx: ProbeContext, head: HeadSpec, tasks: list[Task], bar
) -> Iterator[tuple[ResultRow, pd.DataFrame | None]]:
    """Rows (and test predictions) of every task for one head, in task order; the head fits the fittable ones."""
    problems = [check_task(ctx, t) for t in tasks]
    good = [i for i, reason in enumerate(problems) if not reason]
    fitted = iter(head.fit_tasks(ctx, [tasks[i] for i in good]))
    for i, task in enumerate(tasks):
        outcome = problems[i] or next(fitted)
        bar.update()
        if isinstance(outcome, str):
            yield ResultRow.create(**_columns(ctx, head, task), status="failed", error=outcome), None
        else:
            yield _finish(ctx, head, task, outcome)


def _columns(ctx: ProbeContext, head: HeadSpec, task: Task) -> dict:
    """The row's key and the run's settings, shared by its ok and failed forms."""
    return dict(backbone=ctx.backbone, method=head.name if not ctx.embedding else f"{head.name}@{ctx.embedding}",
                regime=task.regime, shots=task.shots, seed=task.seed, fold=task.fold, n_test=len(task.test),
                fraction=task.fraction, embedding=ctx.embedding, weights=ctx.weights, splits=ctx.splits.fingerprint,
                **ctx.options.settings())


def _finish(ctx: ProbeContext, head: HeadSpec, task: Task, fit: HeadFit) -> tuple[ResultRow, pd.DataFrame]:
    """The result row and the test predictions of one fitted task; the threshold comes from the tuning rows."""
    y_test = ctx.y_all[ctx.index(task.test)]
    cut = choose_threshold(ctx.options.rule, fit.tune_labels, fit.tune_proba)
    used = 0.5 if np.isnan(cut) else cut
    metrics = compute_metrics(y_test, fit.test_proba, used)
    at_05 = compute_metrics(y_test, fit.test_proba, 0.5)["mcc"] if ctx.options.rule != "0.5" else metrics["mcc"]
    columns = _columns(ctx, head, task)
    row = ResultRow.create(**columns, metrics=metrics, fit_seconds=fit.seconds, n_train=fit.n_train,
                           hyperparameters=json.dumps(fit.params, sort_keys=True), threshold=cut, mcc_at_05=at_05)
    prediction = pd.DataFrame({
        **{k: columns[k] for k in ("backbone", "method", "regime", "shots", "seed", "fold", "fraction")},
        "id": task.test, "label": y_test,
        "probability": fit.test_proba[:, 1] if ctx.n_classes == 2 else fit.test_proba.max(axis=1),
        "predicted": predict_labels(fit.test_proba, used),
    })
    if ctx.n_classes > 2:
        for class_index in range(ctx.n_classes):
            prediction[f"probability_{class_index}"] = fit.test_proba[:, class_index]
    return row, prediction
