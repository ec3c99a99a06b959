"""Probe cached features on the splits file's folds: full data and every few-shot subset.

Per fold: the head's hyperparameters are chosen on the fold's ``val`` rows (validation MCC, ties to the
simpler candidate); the full regime then refits on train + val (as DINOv2's linear evaluation does), a few-shot
regime refits on its k-per-class subset only. Test rows are used for nothing but the reported metrics.
"""

from __future__ import annotations

import json
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.exceptions import ConvergenceWarning
from tqdm.auto import tqdm

from medtransfer import cache_schema
from medtransfer.errors import MedtransferError
from medtransfer.metrics import compute_metrics
from medtransfer.probe.heads import HeadSpec, get_head
from medtransfer.results import ResultRow, write_results
from medtransfer.splits.schema import SplitsFile, load_splits


@dataclass(frozen=True)
class Task:
    """One fit: which rows train, which tune, which test."""

    regime: str
    shots: int
    seed: int
    fold: int
    train: list[str]
    val: list[str]
    test: list[str]
    refit_with_val: bool


def tasks_for(splits: SplitsFile, regimes: tuple[str, ...] = ("full", "fewshot")) -> list[Task]:
    tasks = []
    for fold in splits.folds:
        if "full" in regimes:
            tasks.append(Task("full", 0, splits.params.get("seed", 0), fold.fold, fold.train, fold.val,
                              fold.test, True))
        if "fewshot" in regimes:
            for n_shots, by_seed in sorted(fold.fewshot.items()):
                for seed, subset in sorted(by_seed.items()):
                    tasks.append(Task("fewshot", n_shots, seed, fold.fold, subset, fold.val, fold.test, False))
    return tasks


def run_probe(
    store: str | Path,
    splits_path: str | Path,
    backbones: list[str],
    out: str | Path,
    heads: list[str] = ("logreg",),
    weights: str | None = None,
    regimes: tuple[str, ...] = ("full", "fewshot"),
    progress: bool = True,
) -> pd.DataFrame:
    """Fit every (backbone, head, task) and write the results table under ``out``; returns its rows."""
    splits = load_splits(splits_path)
    head_specs = [get_head(name) for name in heads]
    keys = {backbone: cache_schema.find_group(store, backbone, weights) for backbone in backbones}
    tasks = tasks_for(splits, regimes)
    rows: list[ResultRow] = []
    predictions: list[pd.DataFrame] = []
    for backbone, key in keys.items():
        features = cache_schema.read_features(store, key)
        features.rows_for(list(splits.labels), what=f"the splits file (backbone {backbone})")
        bar = tqdm(total=len(tasks) * len(head_specs), desc=f"probe {backbone}", unit="fit", disable=not progress)
        with bar:
            for head in head_specs:
                for task in tasks:
                    row, prediction = _fit_one(features, splits, head, task, backbone)
                    row.weights = features.attrs.get("weights", "")
                    rows.append(row)
                    if prediction is not None:
                        predictions.append(prediction)
                    bar.update()
    write_results(out, rows, pd.concat(predictions, ignore_index=True) if predictions else None)
    return pd.DataFrame([r.as_record() for r in rows])


def _fit_one(features, splits: SplitsFile, head: HeadSpec, task: Task, backbone: str):
    row = ResultRow(backbone=backbone, method=head.name, regime=task.regime, shots=task.shots,
                    seed=task.seed, fold=task.fold, n_test=len(task.test))
    x_train, y_train = features.rows_for(task.train), _labels(splits, task.train)
    x_val, y_val = features.rows_for(task.val), _labels(splits, task.val)
    x_test, y_test = features.rows_for(task.test), _labels(splits, task.test)
    n_classes = len(splits.classes)
    if len(np.unique(y_train)) < 2:
        row.status, row.error = "failed", "training rows hold a single class"
        return row, None
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        params = _tune(head, x_train, y_train, x_val, y_val, n_classes)
        if task.refit_with_val:
            x_train, y_train = np.concatenate([x_train, x_val]), np.concatenate([y_train, y_val])
        model = head.make(**params).fit(x_train, y_train)
        probabilities = _full_proba(model, x_test, n_classes)
    row.fit_seconds = time.perf_counter() - start
    row.n_train = len(y_train)
    row.hyperparameters = json.dumps(params, sort_keys=True)
    for name, value in compute_metrics(y_test, probabilities).items():
        setattr(row, name, value)
    prediction = pd.DataFrame({
        "backbone": backbone, "method": head.name, "regime": task.regime, "shots": task.shots,
        "seed": task.seed, "fold": task.fold, "id": task.test, "label": y_test,
        "probability": probabilities[:, 1] if n_classes == 2 else probabilities.max(axis=1),
    })
    if n_classes > 2:
        for class_index in range(n_classes):
            prediction[f"probability_{class_index}"] = probabilities[:, class_index]
    return row, prediction


def _tune(head: HeadSpec, x_train, y_train, x_val, y_val, n_classes: int) -> dict:
    if len(head.grid) == 1 or len(y_val) == 0:
        return dict(head.grid[0])
    best, best_score = dict(head.grid[0]), -np.inf
    for params in head.grid:
        model = head.make(**params).fit(x_train, y_train)
        score = compute_metrics(y_val, _full_proba(model, x_val, n_classes))["mcc"]
        if score > best_score + 1e-12:
            best, best_score = dict(params), score
    return best


def _full_proba(model, x: np.ndarray, n_classes: int) -> np.ndarray:
    """predict_proba with a column for every class, even those absent from this fit's training rows."""
    partial = model.predict_proba(x)
    full = np.zeros((len(x), n_classes))
    full[:, np.asarray(model.classes_, dtype=int)] = partial
    return full


def _labels(splits: SplitsFile, ids: list[str]) -> np.ndarray:
    try:
        return np.array([splits.labels[i] for i in ids], dtype=int)
    except KeyError as exc:
        raise MedtransferError(f"splits file lists sample {exc} in a fold but gives no label for it") from exc
