"""Summaries of result rows over runs (folds and seeds), one rule for probe's ``probe_summary.csv`` and the
report: rows grouped by a key, and per metric the mean and sample standard deviation of the runs that have it.
What differs is only what each adds per group (probe: a bootstrap CI over test samples and failed runs; the
report: a t-interval, the strategy's name and its share of trainable parameters)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd


def mean_std(values) -> tuple[float, float]:
    """Mean and sample standard deviation (ddof 1) of the non-NaN ``values``; NaN where there are too few."""
    values = np.asarray(values, dtype=float)
    valid = values[~np.isnan(values)]
    return (float(valid.mean()) if valid.size else float("nan"),
            float(valid.std(ddof=1)) if valid.size > 1 else float("nan"))


def metric_columns(group: pd.DataFrame, metric: str) -> dict[str, float]:
    """``<metric>_mean`` and ``<metric>_std`` of one group (NaN when the column is absent)."""
    values = group[metric] if metric in group else pd.Series(dtype=float)
    mean, std = mean_std(values)
    return {f"{metric}_mean": mean, f"{metric}_std": std}


def summarize_groups(
    table: pd.DataFrame, by: list[str], describe: Callable[[pd.DataFrame], dict], *, dropna: bool = True
) -> list[dict]:
    """One record per group of ``table`` by ``by`` (sorted): the key's columns, then ``describe(group)``."""
    return [{**dict(zip(by, key, strict=True)), **describe(group)}
            for key, group in table.groupby(by, sort=True, dropna=dropna)]


# The one confidence interval of every summary (probe_summary.csv, the report, `medtransfer summary`).
CI_METHOD = ("95% percentile CI of the mean by a two-stage cluster bootstrap over runs: per replicate, each fold's "
             "test patients and its seeds are resampled with replacement; the metric is recomputed per run, averaged "
             "over seeds within a fold, then over folds")
CI_LEVEL = 0.95
METRIC_RANGE = {"mcc": (-1.0, 1.0), "pr_auc": (0.0, 1.0)}  # CIs are clipped to the metric's range


def cluster_bootstrap_ci(
    predictions: pd.DataFrame, metric: str, n_classes: int, *, n_boot: int = 1000, seed: int = 0
) -> tuple[float, float]:
    """``CI_METHOD`` for ``metric`` ("mcc" or "pr_auc", binary) from one strategy's test ``predictions`` (columns
    fold, seed, id, label, probability, predicted; ``patient`` groups images, else each id is its own patient).

    Resampling patients covers test-sample noise (a patient's images go together), resampling seeds covers the
    few-shot draw, and averaging within a fold before folds keeps seeds that share a test set from counting as
    independent. NaN where there is nothing to resample or the metric is undefined (PR-AUC of a multi-class task).
    """
    if predictions.empty or metric not in METRIC_RANGE or (metric == "pr_auc" and n_classes != 2):
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    fold_values = [_fold_replicates(rows, metric, n_classes, n_boot, rng)
                   for _, rows in predictions.groupby("fold", sort=True)]
    replicates = np.mean(fold_values, axis=0)
    replicates = replicates[~np.isnan(replicates)]
    if replicates.size < n_boot // 2:  # the metric was undefined in most replicates (e.g. no positives)
        return float("nan"), float("nan")
    alpha = (1 - CI_LEVEL) / 2
    low, high = np.quantile(replicates, [alpha, 1 - alpha])
    bottom, top = METRIC_RANGE[metric]
    return float(np.clip(low, bottom, top)), float(np.clip(high, bottom, top))


def _fold_replicates(rows: pd.DataFrame, metric: str, n_classes: int, n_boot: int, rng) -> np.ndarray:
    """One fold's seed-averaged metric per replicate; the fold's patient draw is shared by its seeds."""
    patients = (rows["patient"] if "patient" in rows else rows["id"]).astype(str)
    patient_of = dict(zip(rows["id"].astype(str), patients, strict=False))
    names = sorted(set(patient_of.values()))
    counts = rng.multinomial(len(names), np.full(len(names), 1.0 / len(names)), size=n_boot)  # [n_boot, patients]
    column = {name: i for i, name in enumerate(names)}
    runs = [group for _, group in rows.groupby("seed", sort=True)]
    values = np.empty((n_boot, len(runs)))
    for j, run in enumerate(runs):
        weights = counts[:, [column[patient_of[str(i)]] for i in run["id"]]].astype(float)
        values[:, j] = _weighted_metric(run, weights, metric, n_classes)
    picks = rng.multinomial(len(runs), np.full(len(runs), 1.0 / len(runs)), size=n_boot)  # seeds resampled
    valid = ~np.isnan(values)
    total = (np.where(valid, values, 0.0) * picks).sum(1)
    used = (valid * picks).sum(1)
    return np.where(used > 0, total / np.maximum(used, 1), np.nan)


def _weighted_metric(run: pd.DataFrame, weights: np.ndarray, metric: str, n_classes: int) -> np.ndarray:
    """The metric of one run under each replicate's sample weights ([n_boot, n_images] counts)."""
    from medtransfer.metrics import mcc_from_confusion

    labels = run["label"].to_numpy(dtype=int)
    if metric == "mcc":
        predicted = run["predicted"].to_numpy(dtype=int)
        onehot = np.zeros((len(labels), n_classes * n_classes))
        onehot[np.arange(len(labels)), labels * n_classes + predicted] = 1.0
        return mcc_from_confusion((weights @ onehot).reshape(-1, n_classes, n_classes))
    return _weighted_average_precision(labels, run["probability"].to_numpy(dtype=float), weights)


def _weighted_average_precision(labels: np.ndarray, scores: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """scikit-learn's average precision (sum over thresholds of recall step x precision, tied scores one
    threshold) with integer sample weights, for every replicate at once."""
    order = np.argsort(-scores, kind="stable")
    positive = (labels[order] == 1).astype(float)
    w = weights[:, order]
    tp = np.cumsum(w * positive, axis=1)
    fp = np.cumsum(w * (1 - positive), axis=1)
    ends = np.r_[np.flatnonzero(np.diff(scores[order])), len(scores) - 1]  # last index of each tied score
    tp, fp = tp[:, ends], fp[:, ends]
    total = tp[:, -1]
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = np.where(tp + fp > 0, tp / (tp + fp), 0.0)
        step = np.diff(tp, axis=1, prepend=0.0) / total[:, None]
        return np.where(total > 0, (step * precision).sum(1), np.nan)
