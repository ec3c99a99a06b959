"""Probe cached features on the splits file's folds: full data, every few-shot subset, label fractions.

Per task: the head's hyperparameters are chosen on the fold's ``val`` rows (validation MCC at threshold 0.5 /
argmax; ties to the lower validation log loss, then the simpler candidate); the full regime then refits on
train + val with the chosen ones (as DINOv2's linear evaluation does); few-shot and fraction regimes keep the
fit on their own subset. Test rows are used for nothing but the reported metrics.

Preprocessing (``--preprocess``) is fitted on the rows a model is fitted on. The decision threshold is 0.5, or
with ``threshold="val-mcc"`` the one maximizing MCC on the validation rows' probabilities from the fit on the
training rows (never test rows; for the full regime the refit's own val rows would be in-sample). Both the
rule and the threshold are recorded per row, with the MCC at 0.5 beside it.

``fit_seconds``: a head that fits its tasks together shares the batched wall time out equally over the tasks
of that batch, so a head's ``fit_seconds`` sum to its wall time (tree heads spread over ``--workers``
processes: each task's share of its worker's time, ``probe.workers``); the per-head timing
line printed after each head gives that total.

Method names: the head name for the store's default embedding (``logreg``), ``head@kind`` for a variant
(``logreg@mean``). Problems stop at the row: a task that cannot be fitted (one class in train, a short
few-shot subset, NaN/inf features) is a row with ``status="failed"`` and the reason in ``error``.

This module knows no head by name: each head fits its tasks its own way (``HeadSpec.fitter``, through
``probe.fitting.fit_tasks``) and hands back one ``HeadFit`` per task, from which the row and the test predictions
are built here.
"""

from __future__ import annotations

import dataclasses
import json
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from medtransfer import cache_schema
from medtransfer.device import resolve_device
from medtransfer.errors import MedtransferError
from medtransfer.metrics import compute_metrics, is_degenerate, predict_labels
from medtransfer.probe.context import FeatureMatrix, HeadFit, ProbeContext, check_task
from medtransfer.probe.features import check_pca_fits, l2_normalize, read_embedding
from medtransfer.probe.halving import ETA
from medtransfer.probe.heads import resolve_heads
from medtransfer.probe.options import ProbeOptions
from medtransfer.probe.registry import HeadSpec
from medtransfer.probe.summary import summarize
from medtransfer.probe.threshold import choose_threshold
from medtransfer.probe.workers import fit_spread
from medtransfer.results import (
    KEY,
    KEY_DEFAULTS,
    ResultRow,
    check_results_folder,
    config_hash,
    export_tables,
    read_union,
    write_results,
)
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
    task: str = "",
    force: bool = False,
    export: bool = True,
    **choices: object,
) -> pd.DataFrame:
    """Fit every (backbone, embedding, head, task) and write the results table under ``out``; returns its rows.

    ``backbones=["all"]``: every backbone in the store; ``weights`` picks the feature group when the store holds
    several. What to fit and how comes as ``options`` (a ``ProbeOptions``) or as its fields by keyword
    (``heads=["all"]``, ``regimes=("full",)``, ``embeddings=["default", "mean"]``, ``class_weight="none"``,
    ``preprocess``, ``threshold="val-mcc"``, ``fractions``, ``tune="cv"``, ``inner_folds``, ``device``): see
    ``ProbeOptions`` for each. ``task`` names the prediction task on every row (the report's default is the
    results folder's name).

    Each (backbone, embedding, head) is written to ``out`` as soon as it finishes, so a killed run keeps what
    it did; a rerun skips those whose rows are all there, ok, with the same settings (``force``: fit anyway).
    Each write is a part file (``medtransfer.results``); ``export`` folds them at the end and refreshes
    results.parquet / results.csv (a study's jobs leave that to the study, so that no job reads every part)."""
    if options is not None and choices:
        raise MedtransferError("pass either options=ProbeOptions(...) or its fields as keywords, not both")
    options = options or ProbeOptions.create(**choices)
    splits = load_splits(splits_path)
    # wrong or unreadable --out: stops before any fit
    earlier = check_results_folder(out, splits.fingerprint, predictions=export)
    head_specs = resolve_heads(options.heads)
    resolve_device(options.device)  # a bad --device is one line before any work, not after the first fits
    if list(backbones) == ["all"]:
        backbones = list_backbones(store)
        if not backbones:
            raise MedtransferError(f"store {store} holds no feature groups; run `medtransfer extract` first")
    keys = {backbone: cache_schema.find_group(store, backbone, weights) for backbone in backbones}
    tasks = tasks_for(splits, options.regimes, list(options.fractions) or None)
    if not tasks:
        raise MedtransferError("no tasks: the splits file has no folds (or none of the asked regimes)")
    smallest = min(tasks, key=lambda t: len(t.train))  # pcaN must fit the smallest task: checked before any fit
    check_pca_fits(options.steps, len(smallest.train),
                   what=f"the {smallest.regime} task (shots {smallest.shots}, fold {smallest.fold})")
    all_ids = list(splits.labels)
    y_all = np.array([splits.labels[i] for i in all_ids], dtype=int)
    finished = set() if force or earlier is None else _finished(earlier)
    written: list[pd.DataFrame] = []
    skipped = 0  # fits whose rows --out already holds, ok, with these settings
    # one bar over every fit of the call, so its ETA covers every backbone and head still to come
    bar = tqdm(total=len(keys) * len(options.embeddings) * len(head_specs) * len(tasks), desc="probe", unit="fit",
               disable=not progress)
    with bar:
        for backbone, key in keys.items():
            for embedding in options.embeddings:
                features = read_embedding(store, key, embedding)
                ctx = ProbeContext(backbone=backbone, embedding="" if embedding in ("default", None) else embedding,
                                   data=None, splits=splits, options=options,
                                   weights=features.attrs.get("weights", ""), task=task)
                todo = []
                for head in head_specs:
                    columns = [_columns(ctx, head, t) for t in tasks]
                    if all(_row_key(c) in finished for c in columns):
                        bar.update(len(tasks))
                        skipped += len(tasks)
                        written.append(pd.DataFrame([{**KEY_DEFAULTS, **c} for c in columns])[KEY])
                    else:
                        todo.append(head)
                if not todo:
                    continue
                bar.set_description(f"probe {backbone}")
                data = FeatureMatrix.create(
                    features.rows_for(all_ids, what=f"the splits file (backbone {backbone})"), y_all, all_ids)
                if "l2" in options.steps:
                    data = dataclasses.replace(data, x=l2_normalize(np.where(data.bad_rows[:, None], 0, data.x)))
                ctx = dataclasses.replace(ctx, data=data)
                for head in todo:
                    bar.set_postfix_str(head.name)
                    rows, predictions = [], []
                    start = time.perf_counter()
                    for row, prediction in _run_head(ctx, head, tasks, bar):
                        rows.append(row)
                        if prediction is not None:
                            predictions.append(prediction)
                    if progress:  # the per-head timing line: which head costs what, at a glance
                        bar.write(f"{backbone}{'@' + ctx.embedding if ctx.embedding else ''} {head.name}: "
                                  f"{len(tasks)} tasks in {time.perf_counter() - start:.1f} s")
                    write_results(out, rows, pd.concat(predictions, ignore_index=True) if predictions else None)
                    written.append(pd.DataFrame([{**KEY_DEFAULTS, **r.as_record()} for r in rows])[KEY])
    if skipped and progress:  # said, not silent: a rerun that fits nothing must not look like a no-op bug
        tqdm.write(f"skipped {skipped} finished fit(s): {out} already holds their rows with these settings "
                   "(--force fits them again)", file=sys.stderr)
    table, predicted = _this_call(out, pd.concat(written, ignore_index=True))
    summarize(table, predicted).to_csv(Path(out) / SUMMARY_FILE, index=False)
    if export:
        export_tables(out)
    return table


def _row_key(columns: dict) -> tuple:
    """A row's key plus its settings hash, as ``_finished`` lists them."""
    record = {**KEY_DEFAULTS, **columns}
    return (*(record[k] for k in KEY), record["config"])


def _finished(earlier: pd.DataFrame) -> set[tuple]:
    """Keys (with their settings hash) of the ok rows already written: what a rerun need not fit again."""
    if "config" not in earlier.columns:
        return set()
    ok = earlier[earlier["status"] == "ok"]
    return {(*key[:-1], key[-1]) for key in ok[[*KEY, "config"]].itertuples(index=False, name=None)}


def _this_call(out: str | Path, keys: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame | None]:
    """The rows (and predictions) of this call's keys as the folder now holds them: fitted now or earlier."""
    table, predicted = read_union(out)
    table = table.merge(keys.drop_duplicates(), on=KEY, how="inner")
    if predicted is not None:
        predicted = predicted.merge(keys.drop_duplicates(), on=KEY, how="inner")
    return table.reset_index(drop=True), predicted


def _run_head(
    ctx: ProbeContext, head: HeadSpec, tasks: list[Task], bar
) -> Iterator[tuple[ResultRow, pd.DataFrame | None]]:
    """Rows (and test predictions) of every task for one head, in task order; the head fits the fittable ones."""
    problems = [check_task(ctx, t) for t in tasks]
    outcomes: dict[int, HeadFit | str] = {i: reason for i, reason in enumerate(problems) if reason}
    for tuning in sorted({ctx.options.tuning_for(t) for t in tasks}):  # budget: few-shot by cv, full by val
        good = [i for i, t in enumerate(tasks) if not problems[i] and ctx.options.tuning_for(t) == tuning]
        tuned = dataclasses.replace(ctx, options=dataclasses.replace(ctx.options, tune=tuning))
        outcomes.update(zip(good, fit_spread(head, tuned, [tasks[i] for i in good]), strict=True))
    for i, task in enumerate(tasks):
        outcome = outcomes[i]
        bar.update()
        if isinstance(outcome, str):
            yield ResultRow.create(**_columns(ctx, head, task), status="failed", error=outcome), None
        else:
            yield _finish(ctx, head, task, outcome)


def _columns(ctx: ProbeContext, head: HeadSpec, task: Task) -> dict:
    """The row's key and the run's settings, shared by its ok and failed forms."""
    settings = ctx.options.settings(ctx.options.tuning_for(task))
    return dict(backbone=ctx.backbone, method=head.name if not ctx.embedding else f"{head.name}@{ctx.embedding}",
                regime=task.regime, shots=task.shots, seed=task.seed, fold=task.fold, n_test=len(task.test),
                fraction=task.fraction, embedding=ctx.embedding, weights=ctx.weights, splits=ctx.splits.fingerprint,
                positive=ctx.splits.positive or "", repeat=task.repeat,
                trained_on="train+val" if task.refit_with_val else "train",
                task=ctx.task, config=config_hash({**settings, "tune": ctx.options.tune,
                                                   "inner_folds": ctx.options.inner_folds, "head": head.name,
                                                   **_search(ctx, head)}),
                **settings)


def _search(ctx: ProbeContext, head: HeadSpec) -> dict:
    """How a tree head searched its grid, for the settings hash (other heads' rows keep their hash)."""
    if not head.halving:
        return {}
    return {"halving": f"eta {ETA} over {head.halving}" if ctx.options.halving else "none"}


def per_patient(patients: list[str], labels: np.ndarray, proba: np.ndarray):
    """Patient-level predictions: the mean probability of each patient's test images (patients sorted), or why
    not (a patient whose images carry two labels)."""
    frame = pd.DataFrame(proba).assign(patient=patients, label=labels)
    mixed = frame.groupby("patient")["label"].nunique()
    if (mixed > 1).any():
        return (f"--unit patient: {int((mixed > 1).sum())} test patient(s) have images of several classes "
                f"(e.g. {sorted(mixed[mixed > 1].index)[:3]})")
    grouped = frame.groupby("patient", sort=True)
    mean = grouped[list(range(proba.shape[1]))].mean()
    return list(mean.index.astype(str)), grouped["label"].first().to_numpy(dtype=int), mean.to_numpy()


def _finish(ctx: ProbeContext, head: HeadSpec, task: Task, fit: HeadFit) -> tuple[ResultRow, pd.DataFrame | None]:
    """The result row and the test predictions of one fitted task; the threshold comes from the tuning rows."""
    y_test = ctx.y_all[ctx.index(task.test)]
    cut = choose_threshold(ctx.options.rule, fit.tune_labels, fit.tune_proba)
    used = 0.5 if np.isnan(cut) else cut
    test_ids = list(task.test)
    patients = [ctx.splits.groups.get(i, i) for i in test_ids]
    if ctx.options.unit == "patient":
        aggregated = per_patient(patients, y_test, fit.test_proba)
        if isinstance(aggregated, str):
            return ResultRow.create(**_columns(ctx, head, task), status="failed", error=aggregated), None
        test_ids, y_test, test_proba = aggregated
        patients = test_ids
        fit = dataclasses.replace(fit, test_proba=test_proba)
    metrics = compute_metrics(y_test, fit.test_proba, used)
    at_05 = compute_metrics(y_test, fit.test_proba, 0.5)["mcc"] if ctx.options.rule != "0.5" else metrics["mcc"]
    columns = _columns(ctx, head, task)
    columns["n_test"] = len(test_ids)
    predicted = predict_labels(fit.test_proba, used)
    row = ResultRow.create(**columns, metrics=metrics, fit_seconds=fit.seconds, n_train=fit.n_train,
                           hyperparameters=json.dumps(fit.params, sort_keys=True), threshold=cut, mcc_at_05=at_05,
                           degenerate=is_degenerate(predicted, fit.test_proba))
    prediction = pd.DataFrame({
        **{k: columns[k] for k in ("backbone", "method", "regime", "shots", "seed", "fold", "fraction")},
        "id": test_ids, "patient": patients, "label": y_test,
        "probability": fit.test_proba[:, 1] if ctx.n_classes == 2 else fit.test_proba.max(axis=1),
        "predicted": predicted,
    })
    if ctx.n_classes > 2:
        for class_index in range(ctx.n_classes):
            prediction[f"probability_{class_index}"] = fit.test_proba[:, class_index]
    return row, prediction
