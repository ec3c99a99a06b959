"""Summary statistics and paired tests for the report.

Folds/seeds are the unit of replication: means and t-based 95 % CIs are over them, Wilcoxon tests pair
strategies on identical (seed, fold) so that split difficulty cancels out, and Holm controls the family-wise
error within each (task, backbone). The Friedman test and Nemenyi critical difference follow Demšar (2006):
blocks are (task, backbone) pairs, treatments are strategies, scores are mean MCC per block.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from itertools import combinations

import numpy as np
import pandas as pd
from scipy import stats

from medtransfer.aggregate import metric_columns, summarize_groups
from medtransfer.report.load import STRATEGY, regime_label

ALPHA = 0.05
GROUP = ["task", "backbone", *STRATEGY]


def strategy_label(method: str, regime: str, shots: int, fraction: float = 0.0) -> str:
    """One readable name per strategy: `lora` for full data, `logreg 16-shot`, `logreg 10% data`."""
    return str(method) if regime == "full" else f"{method} {regime_label(regime, shots, fraction)}"


def _keyed(ok: pd.DataFrame) -> pd.DataFrame:
    """Frames built by hand (tests, notebooks) may lack `fraction`; it is 0.0 outside the fraction regime."""
    return ok if "fraction" in ok.columns else ok.assign(fraction=0.0)


def t_interval(values: np.ndarray) -> tuple[float, float]:
    """95 % t-interval of the mean; NaN with fewer than two values (no spread to estimate)."""
    values = np.asarray(values, dtype=float)
    values = values[~np.isnan(values)]
    if values.size < 2:
        return (np.nan, np.nan)
    mean = values.mean()
    half = stats.t.ppf(0.975, values.size - 1) * values.std(ddof=1) / np.sqrt(values.size)
    return (float(mean - half), float(mean + half))


def summary_table(ok: pd.DataFrame, metrics: tuple[str, ...] = ("mcc", "pr_auc")) -> pd.DataFrame:
    """Mean, std and CI per (task, backbone, strategy), flagging the best strategy per task/backbone."""
    ok = _keyed(ok)

    def describe(group: pd.DataFrame) -> dict:
        first = group.iloc[0]
        row = {"strategy": strategy_label(first["method"], first["regime"], first["shots"], first["fraction"]),
               "n": int(group["mcc"].notna().sum()), "pct_trainable": float(group["pct_trainable"].median())}
        for metric in metrics:
            row.update(metric_columns(group, metric))
            row[f"{metric}_ci_low"], row[f"{metric}_ci_high"] = t_interval(group[metric].to_numpy(dtype=float))
        return row

    rows = summarize_groups(ok, GROUP, describe)
    columns = [*GROUP, "strategy", "n", "pct_trainable"] + [
        f"{m}_{s}" for m in metrics for s in ("mean", "std", "ci_low", "ci_high")
    ]
    table = pd.DataFrame(rows, columns=columns)
    table["best"] = False
    if not table.empty:
        best = table.groupby(["task", "backbone"])["mcc_mean"].transform("max")
        table["best"] = np.isclose(table["mcc_mean"], best) & table["mcc_mean"].notna()
    return table


def holm(pvalues: np.ndarray) -> np.ndarray:
    """Holm step-down adjusted p-values (monotone, capped at 1); NaN stays NaN."""
    p = np.asarray(pvalues, dtype=float)
    adjusted = np.full_like(p, np.nan)
    valid = np.flatnonzero(~np.isnan(p))
    if valid.size == 0:
        return adjusted
    order = valid[np.argsort(p[valid], kind="stable")]
    m = order.size
    running = 0.0
    for rank, idx in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p[idx]))
        adjusted[idx] = running
    return adjusted


def _wilcoxon(diff: np.ndarray) -> float:
    """Two-sided Wilcoxon p; all-zero differences are a tie (p = 1) rather than a scipy error."""
    if diff.size == 0:
        return np.nan
    if np.allclose(diff, 0.0):
        return 1.0
    return float(stats.wilcoxon(diff, zero_method="wilcox").pvalue)


def pairwise_tests(ok: pd.DataFrame, metric: str = "mcc", alpha: float = ALPHA) -> pd.DataFrame:
    """Wilcoxon signed-rank for method pairs of one (task, backbone, data regime); Holm per (task, backbone).

    `winner` names a strategy only when the Holm-adjusted p is below `alpha`; otherwise it is "tie".
    """
    ok = _keyed(ok)
    rows = []
    for (task, backbone), group in ok.groupby(["task", "backbone"], sort=True):
        group = group.assign(strategy=[strategy_label(*k) for k in group[STRATEGY].itertuples(index=False)])
        wide = group.pivot_table(index=["seed", "fold"], columns="strategy", values=metric, aggfunc="mean")
        regime_of = dict(
            zip(group["strategy"], zip(group["regime"], group["shots"], group["fraction"], strict=True), strict=True)
        )
        family = []
        for a, b in combinations(sorted(wide.columns), 2):
            if regime_of[a] != regime_of[b]:
                continue  # full data vs 4-shot is no contest; compare methods within one data regime
            paired = wide[[a, b]].dropna()
            diff = (paired[a] - paired[b]).to_numpy(dtype=float)
            family.append(
                {
                    "task": task,
                    "backbone": backbone,
                    "a": a,
                    "b": b,
                    "n_pairs": int(diff.size),
                    "mean_diff": float(diff.mean()) if diff.size else np.nan,
                    "a_better": int((diff > 0).sum()),
                    "b_better": int((diff < 0).sum()),
                    "p": _wilcoxon(diff),
                }
            )
        adjusted = holm(np.array([r["p"] for r in family], dtype=float))
        for row, p_holm in zip(family, adjusted, strict=True):
            row["p_holm"] = float(p_holm)
            significant = bool(p_holm < alpha) and row["mean_diff"] != 0
            row["winner"] = (row["a"] if row["mean_diff"] > 0 else row["b"]) if significant else "tie"
            rows.append(row)
    columns = [
        "task",
        "backbone",
        "a",
        "b",
        "n_pairs",
        "mean_diff",
        "a_better",
        "b_better",
        "p",
        "p_holm",
        "winner",
    ]
    return pd.DataFrame(rows, columns=columns)


@dataclass
class FriedmanResult:
    """Friedman omnibus test and Nemenyi critical difference over (task, backbone) blocks."""

    ok: bool
    message: str
    statistic: float = np.nan
    pvalue: float = np.nan
    cd: float = np.nan
    n_blocks: int = 0
    mean_ranks: pd.Series = field(default_factory=lambda: pd.Series(dtype=float))
    dropped: list[str] = field(default_factory=list)


def nemenyi_cd(k: int, n_blocks: int, alpha: float = ALPHA) -> float:
    """Critical difference of mean ranks (Demšar 2006): q_alpha * sqrt(k (k+1) / (6 N))."""
    q_alpha = stats.studentized_range.ppf(1 - alpha, k, np.inf) / np.sqrt(2)
    return float(q_alpha * np.sqrt(k * (k + 1) / (6.0 * n_blocks)))


def friedman(ok: pd.DataFrame, metric: str = "mcc") -> FriedmanResult:
    """Friedman test on complete blocks; strategies run on too few blocks are dropped (and listed)."""
    ok = _keyed(ok)
    if ok.empty:
        return FriedmanResult(False, "no results")
    scored = ok.assign(strategy=[strategy_label(*k) for k in ok[STRATEGY].itertuples(index=False)])
    wide = scored.pivot_table(index=["task", "backbone"], columns="strategy", values=metric, aggfunc="mean")
    # Friedman needs complete blocks. Drop the least-covered strategies one at a time and keep the step with the
    # most information, (strategies - 1) x complete blocks: a strategy run on few blocks must not shrink the test.
    best_score, best_drop, order = -1, 0, []
    remaining = wide
    for step in range(wide.shape[1] - 2):
        score = (remaining.shape[1] - 1) * remaining.dropna().shape[0]
        if score > best_score:
            best_score, best_drop = score, step
        worst = remaining.notna().sum().sort_values(kind="stable").index[0]
        order.append(str(worst))
        remaining = remaining.drop(columns=worst)
    dropped = order[:best_drop]
    complete = wide.drop(columns=dropped).dropna()
    k, n = complete.shape[1], complete.shape[0]
    if k < 3 or n < 2:
        return FriedmanResult(
            False,
            f"Friedman needs at least 3 strategies on at least 2 (task, backbone) blocks; have {k} on {n}",
            n_blocks=n,
            dropped=dropped,
        )
    ranks = complete.round(12).rank(axis=1, ascending=False)  # rank 1 = best MCC
    mean_ranks = ranks.mean().sort_values()
    if np.allclose(complete.to_numpy() - complete.to_numpy()[:, :1], 0.0):
        statistic, pvalue = 0.0, 1.0
    else:
        res = stats.friedmanchisquare(*[complete[c].to_numpy() for c in complete.columns])
        statistic, pvalue = float(res.statistic), float(res.pvalue)
    return FriedmanResult(
        True,
        f"Friedman chi2 = {statistic:.2f}, p = {pvalue:.3g} over {n} blocks and {k} strategies",
        statistic=statistic,
        pvalue=pvalue,
        cd=nemenyi_cd(k, n),
        n_blocks=n,
        mean_ranks=mean_ranks,
        dropped=dropped,
    )
