"""The `report` stage: results tables from probe/adapt -> one self-contained HTML page plus CSV/LaTeX tables.

`build_report` is what `medtransfer report` calls; `summarize` is what `medtransfer summary` prints.
"""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from medtransfer.aggregate import CI_METHOD
from medtransfer.errors import MedtransferError
from medtransfer.listing import Listing, plain_text
from medtransfer.render import key_summary_table
from medtransfer.report.html import PageData, render_page
from medtransfer.report.load import Expected, Results, is_cnn, load_results
from medtransfer.report.stats import FriedmanResult, friedman_by_regime, pairwise_tests, summary_table
from medtransfer.report.tables import write_tables

if TYPE_CHECKING:
    from medtransfer.report.figures import Figure

__all__ = ["Results", "build_report", "is_cnn", "load_results", "summarize", "summary_frame"]


def _figures(results: Results, summary: pd.DataFrame, tests: list[FriedmanResult]) -> list[Figure]:
    from medtransfer.report import figures as fig  # matplotlib is slow to import; `summary` never needs it

    colours = fig.palette(list(results.ok["method"].unique()))
    out: list[Figure] = []
    for task in sorted(summary["task"].unique()):
        made = [
            fig.trainable_scatter(summary, task, colours),
            fig.method_boxplots(results.ok, task, colours),
            fig.cnn_vs_fm(summary, task, colours),
            fig.learning_curves(summary, task, colours, "fewshot"),
            fig.learning_curves(summary, task, colours, "fraction"),
        ]
        out.extend(f for f in made if f is not None)
    out.extend(d for d in (fig.cd_diagram(cd) for cd in tests) if d is not None)
    return out


def build_report(results_dirs: list[Path] | list[str] | Path | str, out: Path | str,
                 expected: Expected | None = None) -> Path:
    """Read every results table under `results_dirs`, write `out/index.html` + `out/tables/*`.

    Raises MedtransferError only when a dir does not exist or holds no results table at all; crashed runs and
    missing metrics are listed on the page instead. ``expected``: the result keys a study planned per task, so
    that only planned runs count as missing (``load_results``).
    """
    dirs = [results_dirs] if isinstance(results_dirs, (str, Path)) else list(results_dirs)
    results = _readable(load_results(dirs, expected))
    summary = report_summary(results.ok, results.predictions)
    pairs = pairwise_tests(results.ok)
    cd = friedman_by_regime(results.ok)
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise MedtransferError(f"--out must be a directory, but {out} is a file")
    out.mkdir(parents=True, exist_ok=True)
    write_tables(out / "tables", summary, pairs, cd, results.problems)
    data = PageData(
        summary=summary,
        pairwise=pairs,
        friedman=cd,
        figures=_figures(results, summary, cd),
        problems=results.problems,
        sources=[str(s) for s in results.sources],
        n_rows=len(results.ok),
        n_failed=len(results.failed),
        weights=weights_by_backbone(results.ok),
    )
    generated = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    page = out / "index.html"
    page.write_text(render_page(data, generated), encoding="utf-8")
    return page


# Where each metric lives: a t-interval of a mean near a bound can reach past it, which no value can
METRIC_RANGE = {"mcc": (-1.0, 1.0), "pr_auc": (0.0, 1.0), "roc_auc": (0.0, 1.0), "balanced_accuracy": (0.0, 1.0)}


def report_summary(ok: pd.DataFrame, predictions: pd.DataFrame | None = None) -> pd.DataFrame:
    """``stats.summary_table`` (its CI from the test ``predictions``) with confidence intervals clipped to each
    metric's range and, per strategy, how many of its runs were degenerate (constant predictions)."""
    summary = summary_table(ok, predictions)
    for metric, (low, high) in METRIC_RANGE.items():
        for column in (f"{metric}_ci_low", f"{metric}_ci_high"):
            if column in summary.columns:
                summary[column] = summary[column].clip(low, high)
    group = ["task", "backbone", "method", "regime", "shots", "fraction"]
    if summary.empty:
        return summary.assign(n_degenerate=0)
    counts = ok.groupby(group)["degenerate"].sum().rename("n_degenerate").reset_index()
    summary = summary.merge(counts, on=group, how="left")
    summary["n_degenerate"] = summary["n_degenerate"].fillna(0).astype(int)
    return summary


def weights_by_backbone(ok: pd.DataFrame) -> dict[str, str]:
    """backbone -> the weights its rows used ("random" said as such: nothing was pretrained)."""
    if ok.empty:
        return {}
    return {backbone: ", ".join(sorted({w or "unrecorded" for w in rows["weights"]}))
            for backbone, rows in ok.groupby("backbone", sort=True)}


def summary_frame(results_dirs: list[Path] | list[str] | Path | str) -> pd.DataFrame:
    """The key table as data: one row per (task, backbone, strategy), best first within a backbone."""
    dirs = [results_dirs] if isinstance(results_dirs, (str, Path)) else list(results_dirs)
    results = load_results(dirs)
    summary = report_summary(results.ok, results.predictions)
    return summary.sort_values(["task", "backbone", "mcc_mean"], ascending=[True, True, False])


def _readable(results):
    """Results with at least one readable table: when every table was unreadable, saying so is the answer,
    not an empty report that exits 0."""
    unreadable = [p for p in results.problems if ": unreadable (" in p]  # load._read_table's wording
    if results.ok.empty and results.failed.empty and unreadable:
        raise MedtransferError(f"no readable results table: {unreadable[0]}")
    return results


def summary_listing(results_dir: Path | str | list[Path] | list[str]) -> tuple[Listing, list[str]]:
    """The key table (MCC and PR-AUC mean ± std per strategy, best marked *) and the notes printed below it."""
    dirs = [results_dir] if isinstance(results_dir, (str, Path)) else list(results_dir)
    results = _readable(load_results(dirs))
    summary = report_summary(results.ok, results.predictions).sort_values(
        ["task", "backbone", "mcc_mean"], ascending=[True, True, False])
    listing = key_summary_table(summary, weights_by_backbone(results.ok))
    notes = ["(no usable results)"] if summary.empty else []
    notes.append("* = best mean MCC for that task and backbone")
    for task, rows in summary.groupby("task", sort=True):
        positive = ", ".join(sorted({p for p in rows["positive"] if p})) or "– (multi-class, or not recorded)"
        notes.append(f"{task}: positive class {positive}")
    notes.append(f"95% CI: {CI_METHOD}")
    if results.problems:
        notes.append(f"{len(results.problems)} problem(s), e.g.: {results.problems[0]}")
        notes.append("(`medtransfer report` lists them all)")
    return listing, notes


def summarize(results_dir: Path | str | list[Path] | list[str]) -> str:
    """Plain-text key table for the terminal: MCC and PR-AUC mean ± std per strategy, best marked with *."""
    listing, notes = summary_listing(results_dir)
    return "\n".join([plain_text(listing), *notes])
