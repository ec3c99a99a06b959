"""The probe summary: per (backbone, method, regime, shots, fraction), mean ± std over folds and seeds, plus a
95% confidence interval of the mean MCC by bootstrap over **test samples** (each replicate resamples every
fold/seed's test predictions with replacement and averages the runs' MCCs; 1,000 replicates, percentile CI).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from rich.table import Table

from medtransfer.metrics import bootstrap_mcc_ci

GROUP = ["backbone", "method", "regime", "shots", "fraction"]
SHOWN = ("mcc", "pr_auc", "roc_auc", "balanced_accuracy", "f1", "brier", "ece")


def summarize(results: pd.DataFrame, predictions: pd.DataFrame | None = None, n_boot: int = 1000) -> pd.DataFrame:
    """One row per group: n runs, n failed, ``<metric>_mean`` / ``<metric>_std``, ``mcc_ci_low`` / ``_high``."""
    results = results.assign(fraction=results.get("fraction", 0.0))
    records = []
    for key, group in results.groupby(GROUP, sort=True, dropna=False):
        ok = group[group["status"] == "ok"]
        record = dict(zip(GROUP, key, strict=True))
        record.update(n_runs=len(ok), n_failed=int((group["status"] != "ok").sum()))
        for metric in SHOWN:
            values = ok[metric].astype(float) if metric in ok else pd.Series(dtype=float)
            record[f"{metric}_mean"] = float(values.mean()) if len(values) else float("nan")
            record[f"{metric}_std"] = float(values.std(ddof=1)) if len(values) > 1 else float("nan")
        record["mcc_ci_low"], record["mcc_ci_high"] = _ci(ok, predictions, n_boot)
        records.append(record)
    return pd.DataFrame(records)


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


def summary_table(summary: pd.DataFrame, title: str = "probe summary") -> Table:
    table = Table(title=title, caption="mean ± std over folds (and seeds); MCC 95% CI: bootstrap over test samples")
    for column in ("backbone", "method", "regime", "shots", "n", "MCC", "MCC 95% CI", "PR-AUC", "ROC-AUC", "ECE"):
        table.add_column(column, justify="right")
    for row in summary.itertuples():
        shots = str(row.shots) if row.regime == "fewshot" else (f"{row.fraction:g}" if row.regime == "fraction"
                                                               else "-")
        table.add_row(
            row.backbone, row.method, row.regime, shots, f"{row.n_runs}" + (f" ({row.n_failed} failed)"
                                                                           if row.n_failed else ""),
            _pm(row.mcc_mean, row.mcc_std), f"[{row.mcc_ci_low:.3f}, {row.mcc_ci_high:.3f}]",
            _pm(row.pr_auc_mean, row.pr_auc_std), _pm(row.roc_auc_mean, row.roc_auc_std),
            _pm(row.ece_mean, row.ece_std),
        )
    return table


def _pm(mean: float, std: float) -> str:
    if np.isnan(mean):
        return "-"
    return f"{mean:.3f}" + ("" if np.isnan(std) else f" ± {std:.3f}")
