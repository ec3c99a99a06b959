"""The probe summary: per (backbone, method, regime, shots, fraction), mean ± std over folds and seeds, plus a
95% confidence interval of the mean MCC by bootstrap over **test samples** (each replicate resamples every
fold/seed's test predictions with replacement and averages the runs' MCCs; 1,000 replicates, percentile CI).
"""

from __future__ import annotations

import pandas as pd

from medtransfer.aggregate import metric_columns, summarize_groups
from medtransfer.metrics import bootstrap_mcc_ci

GROUP = ["backbone", "method", "regime", "shots", "fraction"]
SHOWN = ("mcc", "pr_auc", "roc_auc", "balanced_accuracy", "f1", "brier", "ece")


def summarize(results: pd.DataFrame, predictions: pd.DataFrame | None = None, n_boot: int = 1000) -> pd.DataFrame:
    """One row per group: n runs, n failed, ``<metric>_mean`` / ``<metric>_std``, ``mcc_ci_low`` / ``_high``."""
    results = results.assign(fraction=results.get("fraction", 0.0))

    def describe(group: pd.DataFrame) -> dict:
        ok = group[group["status"] == "ok"]
        record = {"n_runs": len(ok), "n_failed": int((group["status"] != "ok").sum())}
        for metric in SHOWN:
            record.update(metric_columns(ok, metric))
        record["mcc_ci_low"], record["mcc_ci_high"] = _ci(ok, predictions, n_boot)
        return record

    return pd.DataFrame(summarize_groups(results, GROUP, describe, dropna=False))


def _ci(ok: pd.DataFrame, predictions: pd.DataFrame | None, n_boot: int) -> tuple[float, float]:
    if predictions is None or ok.empty or "predicted" not in predictions:
        return float("nan"), float("nan")
    keys = ["backbone", "method", "regime", "shots", "seed", "fold", "fraction"]
    preds = predictions.assign(fraction=predictions.get("fraction", 0.0))
    wanted = ok[keys].drop_duplicates()
    merged = preds.merge(wanted, on=keys, how="inner")
    if merged.empty:
        return float("nan"), float("nan")
    n_classes = int(max(merged["label"].max(), merged["predicted"].max())) + 1
    runs = [(g["label"].to_numpy(dtype=int), g["predicted"].to_numpy(dtype=int))
            for _, g in merged.groupby(["seed", "fold"], sort=True)]
    return bootstrap_mcc_ci(runs, max(n_classes, 2), n_boot=n_boot)
