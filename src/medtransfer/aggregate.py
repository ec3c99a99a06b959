"""Summaries of result rows over runs (folds and seeds), one rule for probe's ``probe_summary.csv`` and the
report: rows grouped by a key, and per metric the mean and sample standard deviation of the runs that have it.
What differs is only what each adds per group (probe: a bootstrap CI over test samples and failed runs; the
report: a t-interval, the strategy's name and its share of trainable parameters)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd

from medtransfer.metrics import average_precision, mcc_from_confusion


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
    """One fold's seed-averaged metric per replicate; the fold's patient draw is shared by its seeds.

    Vectorised over the fold's runs: MCC's confusion counts of every run and replicate come from one product of
    the replicates' patient counts with a patient x (run, cell) count matrix (integers, so exactly the counts a
    loop would add up); PR-AUC gathers each run's per-image weights from the same draw."""
    patients = (rows["patient"] if "patient" in rows else rows["id"]).astype(str).to_numpy()
    ids = rows["id"].astype(str).to_numpy()
    first = pd.Series(patients).groupby(ids, sort=False).last()  # an id's patient: its last row's, as before
    names = np.unique(first.to_numpy())
    counts = rng.multinomial(len(names), np.full(len(names), 1.0 / len(names)), size=n_boot)  # [n_boot, patients]
    column = np.searchsorted(names, first.reindex(ids).to_numpy())  # each row's patient column
    run_of, n_runs = _codes(rows["seed"])
    if metric == "mcc":
        labels = rows["label"].to_numpy(dtype=int)
        cell = run_of * n_classes * n_classes + labels * n_classes + rows["predicted"].to_numpy(dtype=int)
        per_patient = np.zeros((len(names), n_runs * n_classes * n_classes))
        np.add.at(per_patient, (column, cell), 1.0)
        cms = (counts.astype(float) @ per_patient).reshape(n_boot, n_runs, n_classes, n_classes)
        values = mcc_from_confusion(cms)
    else:
        values = np.empty((n_boot, n_runs))
        for j in range(n_runs):
            mine = run_of == j
            values[:, j] = average_precision(rows["label"].to_numpy(dtype=int)[mine],
                                                       rows["probability"].to_numpy(dtype=float)[mine],
                                                       counts[:, column[mine]].astype(float))
    picks = rng.multinomial(n_runs, np.full(n_runs, 1.0 / n_runs), size=n_boot)  # seeds resampled
    valid = ~np.isnan(values)
    total = (np.where(valid, values, 0.0) * picks).sum(1)
    used = (valid * picks).sum(1)
    return np.where(used > 0, total / np.maximum(used, 1), np.nan)


def _codes(values: pd.Series) -> tuple[np.ndarray, int]:
    """Each row's index among the sorted distinct ``values`` (the runs, in groupby's order) and their count."""
    codes, uniques = pd.factorize(values, sort=True)
    return codes, len(uniques)
