"""Tables for papers and spreadsheets: CSV (all numbers) and LaTeX (booktabs, best per backbone in bold)."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from medtransfer.report.stats import FriedmanResult

LATEX_SPECIAL = {
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
}


def latex_escape(text: object) -> str:
    return "".join(LATEX_SPECIAL.get(ch, ch) for ch in str(text))


def _f(value: float) -> str:
    return "--" if math.isnan(value) else f"{value:.3f}"


def _p(value: float) -> str:
    return "--" if math.isnan(value) else ("$<$0.001" if value < 0.001 else f"{value:.3f}")


def summary_latex(summary: pd.DataFrame) -> str:
    """One booktabs table per task: MCC and PR-AUC as mean ± std [95% CI]."""
    out = []
    for task, part in summary.groupby("task", sort=True):
        lines = [
            r"\begin{table}[ht]",
            r"\centering",
            r"\small",
            rf"\caption{{{latex_escape(task)}: mean $\pm$ std over folds, 95\% CI in brackets; "
            r"best strategy per backbone in bold.}",
            r"\begin{tabular}{llrrll}",
            r"\toprule",
            r"Backbone & Strategy & \% trainable & $n$ & MCC & PR-AUC \\",
            r"\midrule",
        ]
        for _, r in part.sort_values(["backbone", "mcc_mean"], ascending=[True, False]).iterrows():
            pct = "head" if r["pct_trainable"] <= 0 else f"{r['pct_trainable']:.3g}"
            cells = []
            for m in ("mcc", "pr_auc"):
                cell = (
                    f"{_f(r[m + '_mean'])} $\\pm$ {_f(r[m + '_std'])} [{_f(r[m + '_ci_low'])}, {_f(r[m + '_ci_high'])}]"
                )
                cells.append(rf"\textbf{{{cell}}}" if r["best"] else cell)
            lines.append(
                f"{latex_escape(r['backbone'])} & {latex_escape(r['strategy'])} & {pct} & {r['n']} & "
                f"{cells[0]} & {cells[1]} \\\\"
            )
        lines += [r"\bottomrule", r"\end{tabular}", r"\end{table}", ""]
        out.append("\n".join(lines))
    return "\n".join(out) if out else "% no results\n"


def pairwise_latex(pairs: pd.DataFrame) -> str:
    lines = [
        r"\begin{tabular}{llllrrrl}",
        r"\toprule",
        r"Task & Backbone & A & B & mean A$-$B & $p$ & $p_\mathrm{Holm}$ & Winner \\",
        r"\midrule",
    ]
    for _, r in pairs.iterrows():
        lines.append(
            " & ".join(
                [
                    latex_escape(r["task"]),
                    latex_escape(r["backbone"]),
                    latex_escape(r["a"]),
                    latex_escape(r["b"]),
                    _f(r["mean_diff"]),
                    _p(r["p"]),
                    _p(r["p_holm"]),
                    latex_escape(r["winner"]),
                ]
            )
            + r" \\"
        )
    lines += [r"\bottomrule", r"\end{tabular}", ""]
    return "\n".join(lines)


def write_tables(
    out_dir: Path, summary: pd.DataFrame, pairs: pd.DataFrame, friedman: list[FriedmanResult], problems: list[str]
) -> list[Path]:
    """Write every table next to the page (friedman.csv: one block of rows per data regime); returns the paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    ranks = pd.DataFrame([
        {"regime": result.regime, "strategy": name, "mean_rank": float(rank), "cd": result.cd,
         "friedman_p": result.pvalue}
        for result in friedman for name, rank in result.mean_ranks.items()
    ], columns=["regime", "strategy", "mean_rank", "cd", "friedman_p"])
    files = {
        "summary.csv": summary.to_csv(index=False),
        "summary.tex": summary_latex(summary),
        "pairwise.csv": pairs.to_csv(index=False),
        "pairwise.tex": pairwise_latex(pairs),
        "friedman.csv": ranks.to_csv(index=False),
        "missing.txt": "\n".join(problems) + ("\n" if problems else ""),
    }
    paths = []
    for name, text in files.items():
        path = out_dir / name
        path.write_text(text, encoding="utf-8")
        paths.append(path)
    return paths
