"""The probe summary: per (backbone, method, regime, shots, fraction), mean ± std over folds and seeds, and the
project's one 95% CI of the mean MCC and PR-AUC (``aggregate.CI_METHOD``: a cluster bootstrap over runs that
resamples each fold's test patients and its seeds), the same interval the report and ``summary`` show."""

from __future__ import annotations

import numpy as np
import pandas as pd

from medtransfer.aggregate import cluster_bootstrap_ci, metric_columns, summarize_groups

GROUP = ["backbone", "method", "regime", "shots", "fraction"]
SHOWN = ("mcc", "pr_auc", "roc_auc", "balanced_accuracy", "f1", "brier", "ece")
RUN_KEY = ["backbone", "method", "regime", "shots", "seed", "fold", "fraction"]


def summarize(results: pd.DataFrame, predictions: pd.DataFrame | None = None, n_boot: int = 1000) -> pd.DataFrame:
    """One row per group: n runs, n failed, ``<metric>_mean`` / ``<metric>_std``, ``mcc_ci_low`` / ``_high``,
    ``pr_auc_ci_low`` / ``_high`` (NaN without predictions), and the positive class where the rows record it."""
    results = results.assign(fraction=results.get("fraction", 0.0))
    preds = None if predictions is None else predictions.assign(fraction=predictions.get("fraction", 0.0))

    def describe(group: pd.DataFrame) -> dict:
        ok = group[group["status"] == "ok"]
        record = {"n_runs": len(ok), "n_failed": int((group["status"] != "ok").sum())}
        for metric in SHOWN:
            record.update(metric_columns(ok, metric))
        mine = _predictions_of(ok, preds)
        n_classes = _n_classes(mine)
        for metric in ("mcc", "pr_auc"):
            record[f"{metric}_ci_low"], record[f"{metric}_ci_high"] = cluster_bootstrap_ci(
                mine, metric, n_classes, n_boot=n_boot)
        if "positive" in group:
            record["positive"] = str(group["positive"].iloc[0])
        return record

    return pd.DataFrame(summarize_groups(results, GROUP, describe, dropna=False))


def _predictions_of(ok: pd.DataFrame, predictions: pd.DataFrame | None) -> pd.DataFrame:
    if predictions is None or ok.empty or "predicted" not in predictions:
        return pd.DataFrame()
    return predictions.merge(ok[RUN_KEY].drop_duplicates(), on=RUN_KEY, how="inner")


def _n_classes(predictions: pd.DataFrame) -> int:
    if predictions.empty:
        return 2
    prob_columns = [c for c in predictions if str(c).startswith("probability_")]
    return max(2, len(prob_columns), int(np.max(predictions[["label", "predicted"]].to_numpy())) + 1)
