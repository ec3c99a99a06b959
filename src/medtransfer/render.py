"""Terminal tables (rich) of results, for the CLI and the demo: rendering only, no computation."""

from __future__ import annotations

import numpy as np
import pandas as pd
from rich.table import Table


def fold_table(results: pd.DataFrame, title: str) -> Table:
    """Full-data rows per fold, then mean ± std of every regime and shot count."""
    table = Table(title=title)
    for column in ("regime", "shots", "fold", "MCC", "PR-AUC"):
        table.add_column(column, justify="right")
    ok = results[results["status"] == "ok"]
    for row in ok[ok["regime"] == "full"].itertuples():
        table.add_row("full", "-", str(row.fold), f"{row.mcc:.3f}", f"{row.pr_auc:.3f}")
    for (regime, shots), group in ok.groupby(["regime", "shots"], sort=False):
        table.add_row(
            f"[bold]{regime}[/]", str(shots) if regime == "fewshot" else "-", "mean ± std",
            f"[bold]{group['mcc'].mean():.3f} ± {group['mcc'].std():.3f}[/]",
            f"[bold]{group['pr_auc'].mean():.3f} ± {group['pr_auc'].std():.3f}[/]",
        )
    failed = results[results["status"] != "ok"]
    if not failed.empty:
        table.caption = f"{len(failed)} fit(s) failed: see the error column of results.csv"
    return table


def probe_summary_table(summary: pd.DataFrame, title: str = "probe summary") -> Table:
    """``probe_summary.csv`` (``probe.summary.summarize``) as a table: mean ± std and the bootstrap MCC CI."""
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
