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
