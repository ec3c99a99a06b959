"""Terminal tables (rich) of results, for the CLI and the demo: rendering only, no computation."""

from __future__ import annotations

import numpy as np
import pandas as pd
from rich.table import Table


def mean_std(mean: float, std: float, n: int) -> str:
    """``0.512 ± 0.034``; a single run has no spread, so it says ``(n=1)`` rather than ``± nan``."""
    if mean is None or np.isnan(mean):
        return "-"
    if n <= 1 or std is None or np.isnan(std):
        return f"{mean:.3f} (n={n})"
    return f"{mean:.3f} ± {std:.3f}"


def fold_table(results: pd.DataFrame, title: str) -> Table:
    """Full-data rows per fold, then mean ± std of every regime and shot count; titled with the positive class."""
    positive = sorted({str(p) for p in results.get("positive", pd.Series(dtype=str)).dropna()} - {"", "nan"})
    table = Table(title=f"{title} (positive class: {', '.join(positive)})" if positive else title)
    for column in ("regime", "shots", "fold", "MCC", "PR-AUC"):
        table.add_column(column, justify="right")
    ok = results[results["status"] == "ok"]
    for row in ok[ok["regime"] == "full"].itertuples():
        table.add_row("full", "-", str(row.fold), f"{row.mcc:.3f}", f"{row.pr_auc:.3f}")
    for (regime, shots), group in ok.groupby(["regime", "shots"], sort=False):
        table.add_row(
            f"[bold]{regime}[/]", str(shots) if regime == "fewshot" else "-", "mean ± std",
            f"[bold]{mean_std(group['mcc'].mean(), group['mcc'].std(), group['mcc'].notna().sum())}[/]",
            f"[bold]{mean_std(group['pr_auc'].mean(), group['pr_auc'].std(), group['pr_auc'].notna().sum())}[/]",
        )
    failed = results[results["status"] != "ok"]
    if not failed.empty:
        table.caption = f"{len(failed)} fit(s) failed: see the error column of results.csv"
    return table


def probe_summary_table(summary: pd.DataFrame, title: str = "probe summary") -> Table:
    """``probe_summary.csv`` (``probe.summary.summarize``) as a table: mean ± std and the 95% CI
    (``aggregate.CI_METHOD``), titled with the positive class."""
    from medtransfer.aggregate import CI_METHOD

    positive = sorted({str(p) for p in summary.get("positive", pd.Series(dtype=str)).dropna()} - {"", "nan"})
    if positive:
        title = f"{title} (positive class: {', '.join(positive)})"
    table = Table(title=title, caption=f"mean ± std over folds (and seeds); 95% CI: {CI_METHOD}")
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
