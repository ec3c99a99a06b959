"""Summary statistics and paired tests for the report.

Folds are the unit of replication. Seeds of one fold share its test set, so paired tests first average a
strategy's seeds within each (repeat, fold) and pair strategies on those fold means with the corrected
resampled t-test (Nadeau & Bengio 2003, "Inference for the generalization error", Machine Learning
52:239-281; Bouckaert & Frank 2004, "Evaluating the replicability of significance tests for comparing learning
algorithms", PAKDD, LNCS 3056:3-12), for one k-fold split and for repeated CV (``splits --repeats``) alike:
every fold's training rows hold most of the other folds' rows, so fold differences are correlated and a
Wilcoxon signed-rank test over them is liberal (measured: 14% false positives at nominal 5% for 10-fold
4-shot studies of equal methods; ``tests/stats/shared_training.py``). Only strategies of one data regime
trained on the same rows (``trained_on``: a probe's train+val refit is not paired with a method trained on train)
are compared; Holm controls the
family-wise error within each (task, backbone). CIs are ``aggregate.CI_METHOD``. The Friedman test and Nemenyi
critical difference follow Demšar (2006), one test per data regime: blocks are (task, backbone) pairs,
treatments the methods of that regime, scores mean MCC per block.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from itertools import combinations

import numpy as np
import pandas as pd
from scipy import stats

from medtransfer.aggregate import cluster_bootstrap_ci, metric_columns, summarize_groups
from medtransfer.report.load import STRATEGY, regime_label

ALPHA = 0.05
GROUP = ["task", "backbone", *STRATEGY]


def strategy_label(method: str, regime: str, shots: int, fraction: float = 0.0) -> str:
    """One readable name per strategy: `lora` for full data, `logreg 16-shot`, `logreg 10% data`."""
    return str(method) if regime == "full" else f"{method} {regime_label(regime, shots, fraction)}"


def _keyed(ok: pd.DataFrame) -> pd.DataFrame:
    """Frames built by hand (tests, notebooks) may lack `fraction`; it is 0.0 outside the fraction regime."""
    return ok if "fraction" in ok.columns else ok.assign(fraction=0.0)


def summary_table(ok: pd.DataFrame, predictions: pd.DataFrame | None = None,
                  metrics: tuple[str, ...] = ("mcc", "pr_auc"), *, n_boot: int = 1000) -> pd.DataFrame:
    """Mean, std and the one CI (``aggregate.CI_METHOD``, from the test ``predictions`` keyed like ``ok`` with
    ``task``; NaN without them) per (task, backbone, strategy), flagging the best strategy per task/backbone."""
    ok = _keyed(ok)
    preds = _keyed(predictions) if predictions is not None and not predictions.empty else None
    by_strategy = dict(iter(preds.groupby(GROUP, sort=False))) if preds is not None else {}

    def describe(group: pd.DataFrame) -> dict:
        first = group.iloc[0]
        row = {"strategy": strategy_label(first["method"], first["regime"], first["shots"], first["fraction"]),
               "n": int(group["mcc"].notna().sum()), "pct_trainable": float(group["pct_trainable"].median()),
               "positive": _one(group, "positive"), "trained_on": _one(group, "trained_on")}
        mine = by_strategy.get(tuple(first[GROUP]), pd.DataFrame())
        if not mine.empty:
            mine = mine.merge(group[["seed", "fold"]].drop_duplicates(), on=["seed", "fold"], how="inner")
        n_classes = max(2, int(mine[["label", "predicted"]].to_numpy().max()) + 1) if not mine.empty else 2
        for metric in metrics:
            row.update(metric_columns(group, metric))
            row[f"{metric}_ci_low"], row[f"{metric}_ci_high"] = cluster_bootstrap_ci(mine, metric, n_classes,
                                                                                     n_boot=n_boot)
        return row

    rows = summarize_groups(ok, GROUP, describe)
    columns = [*GROUP, "strategy", "n", "pct_trainable", "positive", "trained_on"] + [
        f"{m}_{s}" for m in metrics for s in ("mean", "std", "ci_low", "ci_high")
    ]
    table = pd.DataFrame(rows, columns=columns)
    table["best"] = False
    if not table.empty:
        best = table.groupby(["task", "backbone"])["mcc_mean"].transform("max")
        table["best"] = np.isclose(table["mcc_mean"], best) & table["mcc_mean"].notna()
    return table


def _one(group: pd.DataFrame, column: str) -> str:
    """The group's value of a recorded setting ("" where older tables lack it, joined where rows differ)."""
    if column not in group:
        return ""
    return ", ".join(sorted({str(v) for v in group[column].dropna()} - {"", "nan"}))


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


def paired_pvalues(diff: np.ndarray, *, n_repeats: int = 1) -> np.ndarray:
    """Two-sided p per row of ``diff`` [studies, folds] (fold-level differences, seeds already averaged; the
    ``n_repeats`` repeats of k folds laid side by side, so k = folds / n_repeats).

    The corrected resampled t-test: t = mean / sqrt(var * (1 / (k r) + n_test / n_train)), n - 1 degrees of
    freedom (p 0 when every fold shows the same non-zero difference), with n_test / n_train = 1 / (k - 1) for
    k-fold CV (Nadeau & Bengio 2003, the corrected resampled t; Bouckaert & Frank 2004 for its r x k-fold form).
    The second term is the variance the folds
    share through their common training rows, which a test treating folds as independent (Wilcoxon, plain t)
    leaves out; with r = 1 it is the same formula over one split's k folds. A simulation with real folds over
    a shared data set (``tests/stats``) keeps its false-positive rate at or under 5% for 5- and 10-fold single
    splits, full data and few-shot, and for repeats. Fewer than two folds: NaN."""
    diff = np.atleast_2d(np.asarray(diff, dtype=float))
    n = diff.shape[1]
    p = np.full(diff.shape[0], np.nan)
    if n < 2:
        return p
    tied = np.all(np.isclose(diff, 0.0), axis=1)
    p[tied] = 1.0
    rest = ~tied
    if not rest.any():
        return p
    k = max(2, round(n / max(1, n_repeats)))
    d = diff[rest]
    variance = d.var(axis=1, ddof=1) * (1.0 / n + 1.0 / (k - 1))
    with np.errstate(divide="ignore", invalid="ignore"):
        t = d.mean(axis=1) / np.sqrt(variance)
    # no spread at all: every fold agrees on one non-zero difference (t is infinite)
    p[rest] = np.where(variance > 0, 2 * stats.t.sf(np.abs(t), n - 1), 0.0)
    return p


def fold_means(group: pd.DataFrame, metric: str) -> pd.DataFrame:
    """Per (repeat, fold) x strategy: the mean of the strategy's seeds in that fold (they share a test set)."""
    group = group if "repeat" in group else group.assign(repeat=0)
    return group.pivot_table(index=["repeat", "fold"], columns="strategy", values=metric, aggfunc="mean")


def pairwise_tests(ok: pd.DataFrame, metric: str = "mcc", alpha: float = ALPHA) -> pd.DataFrame:
    """Paired tests on fold means for method pairs of one (task, backbone, data regime); Holm per (task, backbone).

    `winner` names a strategy only when the Holm-adjusted p is below `alpha`; otherwise it is "tie". `note` says
    when a pair is not tested (trained on different rows) or cannot reach `alpha` (too few folds)."""
    ok = _keyed(ok)
    rows = []
    for (task, backbone), group in ok.groupby(["task", "backbone"], sort=True):
        group = group.assign(strategy=[strategy_label(*k) for k in group[STRATEGY].itertuples(index=False)])
        wide = fold_means(group, metric)
        n_repeats = int(group["repeat"].nunique()) if "repeat" in group else 1
        regime_of = dict(
            zip(group["strategy"], zip(group["regime"], group["shots"], group["fraction"], strict=True), strict=True)
        )
        rows_of = dict(zip(group["strategy"], group.get("trained_on", pd.Series("train", index=group.index)),
                           strict=True))
        family = []
        for a, b in combinations(sorted(wide.columns), 2):
            if regime_of[a] != regime_of[b]:
                continue  # full data vs 4-shot is no contest; compare methods within one data regime
            paired = wide[[a, b]].dropna()
            diff = (paired[a] - paired[b]).to_numpy(dtype=float)
            row = {"task": task, "backbone": backbone, "a": a, "b": b, "n_pairs": int(diff.size),
                   "mean_diff": float(diff.mean()) if diff.size else np.nan,
                   "a_better": int((diff > 0).sum()), "b_better": int((diff < 0).sum()),
                   "test": "corrected t", "p": np.nan, "note": ""}
            if str(rows_of[a]) != str(rows_of[b]):
                row["note"] = (f"not paired: {a} trained on {rows_of[a]}, {b} on {rows_of[b]} (re-run adapt with "
                               "--refit, or compare few-shot)")
            else:
                row["p"] = float(paired_pvalues(diff, n_repeats=n_repeats)[0]) if diff.size else np.nan
            family.append(row)
        adjusted = holm(np.array([r["p"] for r in family], dtype=float))
        for row, p_holm in zip(family, adjusted, strict=True):
            row["p_holm"] = float(p_holm)
            significant = bool(p_holm < alpha) and row["mean_diff"] != 0
            row["winner"] = (row["a"] if row["mean_diff"] > 0 else row["b"]) if significant else (
                "not paired" if row["note"].startswith("not paired") else "tie")
            rows.append(row)
    columns = ["task", "backbone", "a", "b", "n_pairs", "mean_diff", "a_better", "b_better", "test", "p", "p_holm",
               "winner", "note"]
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
    regime: str = ""  # the data regime the test is over ("full", "4-shot", "10% data"), and its training rows


def friedman_by_regime(ok: pd.DataFrame, metric: str = "mcc") -> list[FriedmanResult]:
    """One Friedman test per data regime (and training rows): `logreg` and `logreg 4-shot` are never competitors."""
    ok = _keyed(ok)
    if ok.empty:
        return []
    trained = ok["trained_on"].astype(str) if "trained_on" in ok else pd.Series("train", index=ok.index)
    results = []
    for (regime, shots, fraction, rows), group in ok.assign(trained_on=trained).groupby(
            ["regime", "shots", "fraction", "trained_on"], sort=True):
        result = friedman(group, metric)
        result.regime = f"{regime_label(regime, shots, fraction)} (trained on {rows})"
        result.message = f"{result.regime}: {result.message}"
        results.append(result)
    return results


def nemenyi_cd(k: int, n_blocks: int, alpha: float = ALPHA) -> float:
    """Critical difference of mean ranks (Demšar 2006): q_alpha * sqrt(k (k+1) / (6 N))."""
    q_alpha = stats.studentized_range.ppf(1 - alpha, k, np.inf) / np.sqrt(2)
    return float(q_alpha * np.sqrt(k * (k + 1) / (6.0 * n_blocks)))


def friedman(ok: pd.DataFrame, metric: str = "mcc") -> FriedmanResult:
    """Friedman test on complete blocks of one data regime (``friedman_by_regime`` splits a table); strategies run
    on too few blocks are dropped (and listed)."""
    ok = _keyed(ok)
    if ok.empty:
        return FriedmanResult(False, "no results")
    if ok[["regime", "shots", "fraction"]].drop_duplicates().shape[0] > 1:
        raise ValueError("friedman() takes one data regime; use friedman_by_regime() for a whole table")
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
