"""The CLI's and the demo's tables (results, registries, stores) as ``listing.Listing``: cells to show and the
record ``--json`` prints for each row. Rendering only, no computation; ``listing.show`` prints them."""

from __future__ import annotations

import numpy as np
import pandas as pd

from medtransfer.listing import Column, Listing


def mean_std(mean: float, std: float, n: int) -> str:
    """``0.512 ± 0.034``; a single run has no spread, so it says ``(n=1)`` rather than ``± nan``."""
    if mean is None or np.isnan(mean):
        return "-"
    if n <= 1 or std is None or np.isnan(std):
        return f"{mean:.3f} (n={n})"
    return f"{mean:.3f} ± {std:.3f}"


def _positives(table: pd.DataFrame) -> list[str]:
    return sorted({str(p) for p in table.get("positive", pd.Series(dtype=str)).dropna()} - {"", "nan"})


def fold_table(results: pd.DataFrame, title: str) -> Listing:
    """Full-data rows per fold, then mean ± std of every regime and shot count; titled with the positive class.
    Records: ``row`` is ``fold`` (one fit; ``fold`` set, no std) or ``mean`` (over folds and seeds)."""
    positive = _positives(results)
    listing = Listing(title=f"{title} (positive class: {', '.join(positive)})" if positive else title,
                      columns=(Column("regime", key=True, justify="right"), Column("shots", key=True, justify="right"),
                               Column("fold", key=True, justify="right"), Column("MCC", justify="right"),
                               Column("PR-AUC", justify="right")))
    ok = results[results["status"] == "ok"]
    for row in ok[ok["regime"] == "full"].itertuples():
        listing.add(["full", "-", str(row.fold), f"{row.mcc:.3f}", f"{row.pr_auc:.3f}"],
                    {"row": "fold", "regime": "full", "shots": 0, "fold": int(row.fold), "n": 1, "mcc": row.mcc,
                     "mcc_std": None, "pr_auc": row.pr_auc, "pr_auc_std": None})
    for (regime, shots), group in ok.groupby(["regime", "shots"], sort=False):
        n_mcc, n_pr = int(group["mcc"].notna().sum()), int(group["pr_auc"].notna().sum())
        listing.add(
            [regime, str(shots) if regime == "fewshot" else "-", "mean ± std",
             mean_std(group["mcc"].mean(), group["mcc"].std(), n_mcc),
             mean_std(group["pr_auc"].mean(), group["pr_auc"].std(), n_pr)],
            {"row": "mean", "regime": regime, "shots": int(shots), "fold": None, "n": len(group),
             "mcc": group["mcc"].mean(), "mcc_std": group["mcc"].std(), "pr_auc": group["pr_auc"].mean(),
             "pr_auc_std": group["pr_auc"].std()},
            style="bold",
        )
    failed = results[results["status"] != "ok"]
    if not failed.empty:
        listing.caption = f"{len(failed)} fit(s) failed: see the error column of results.csv"
    return listing


def probe_summary_table(summary: pd.DataFrame, title: str = "probe summary") -> Listing:
    """``probe_summary.csv`` (``probe.summary.summarize``) as a table: mean ± std and the 95% CI
    (``aggregate.CI_METHOD``), titled with the positive class. Records: the CSV's rows."""
    from medtransfer.aggregate import CI_METHOD

    positive = _positives(summary)
    if positive:
        title = f"{title} (positive class: {', '.join(positive)})"
    names = ("backbone", "method", "regime", "shots", "n", "MCC", "MCC 95% CI", "PR-AUC", "ROC-AUC", "ECE")
    listing = Listing(title=title, caption=f"mean ± std over folds (and seeds); 95% CI: {CI_METHOD}",
                      columns=tuple(Column(n, key=i < 4, justify="left" if i < 3 else "right")
                                    for i, n in enumerate(names)))
    for record, row in zip(summary.to_dict("records"), summary.itertuples(), strict=True):
        shots = str(row.shots) if row.regime == "fewshot" else (f"{row.fraction:g}" if row.regime == "fraction"
                                                               else "-")
        listing.add(
            [row.backbone, row.method, row.regime, shots,
             f"{row.n_runs}" + (f" ({row.n_failed} failed)" if row.n_failed else ""),
             _pm(row.mcc_mean, row.mcc_std), f"[{row.mcc_ci_low:.3f}, {row.mcc_ci_high:.3f}]",
             _pm(row.pr_auc_mean, row.pr_auc_std), _pm(row.roc_auc_mean, row.roc_auc_std),
             _pm(row.ece_mean, row.ece_std)],
            record,
        )
    return listing


def _pm(mean: float, std: float) -> str:
    if np.isnan(mean):
        return "-"
    return f"{mean:.3f}" + ("" if np.isnan(std) else f" ± {std:.3f}")


def key_summary_table(summary: pd.DataFrame, weights: dict[str, str]) -> Listing:
    """``medtransfer summary``'s key table (``report.summary_frame`` rows): MCC and PR-AUC per strategy, best *."""
    names = ("task", "backbone", "weights", "strategy", "%train", "n", "MCC", "MCC 95% CI", "PR-AUC",
             "PR-AUC 95% CI", "")
    listing = Listing(title="", columns=tuple(Column(n, key=i < 4) for i, n in enumerate(names)))
    fields = ("task", "backbone", "strategy", "method", "regime", "shots", "fraction", "pct_trainable", "n",
              "n_degenerate", "mcc_mean", "mcc_std", "mcc_ci_low", "mcc_ci_high", "pr_auc_mean", "pr_auc_std",
              "pr_auc_ci_low", "pr_auc_ci_high", "best", "positive")
    for _, r in summary.iterrows():
        pct = "head" if r["pct_trainable"] <= 0 else f"{r['pct_trainable']:.3g}"
        listing.add(
            [r["task"], r["backbone"], weights.get(r["backbone"], ""), r["strategy"], pct,
             str(r["n"]) + (f" ({r['n_degenerate']} constant)" if r["n_degenerate"] else ""),
             mean_std(r["mcc_mean"], r["mcc_std"], int(r["n"])),
             f"[{r['mcc_ci_low']:.3f}, {r['mcc_ci_high']:.3f}]".replace("nan", "–"),
             mean_std(r["pr_auc_mean"], r["pr_auc_std"], int(r["n"])),
             f"[{r['pr_auc_ci_low']:.3f}, {r['pr_auc_ci_high']:.3f}]".replace("nan", "–"),
             "*" if r["best"] else ""],
            {"weights": weights.get(r["backbone"], ""), **{f: r.get(f) for f in fields}},
        )
    return listing


def methods_table(rows: list[dict], references: tuple[str, ...]) -> Listing:
    """``medtransfer methods``: ``adapt.catalog.method_catalog`` rows; the % trainable per reference backbone is
    ``pct_trainable`` in the records (a mapping, so the keys stay the same whatever ``--reference`` names)."""
    # one line per row (issue 30): the options cell names each option and its default; their help, one line per
    # option below the table (the same help text shared by several methods is said once)
    helps: dict[tuple[str, str], list[str]] = {}
    for row in rows:
        for o in row["options"]:
            helps.setdefault((o["name"], o["help"]), []).append(row["method"])
    caption = "options:\n" + "\n".join(f"  {name} ({', '.join(methods)}): {text}"
                                       for (name, text), methods in helps.items()) if helps else ""
    listing = Listing(
        title="Adaptation methods (medtransfer adapt --method NAME [--option NAME=VALUE ...]; % trainable includes "
              "a 2-class head)",
        columns=(Column("method", key=True), Column("paper"), Column("lr", justify="right"), Column("trains"),
                 Column("options (default)"), Column("families"),
                 *(Column(f"% {r}", justify="right") for r in references)), caption=caption)
    for row in rows:
        options = ", ".join(f"{o['name']}={o['default']}" for o in row["options"]) or "-"
        shares = [f"{row[r]:.3f}" if row.get(r) is not None else "n/a" for r in references]
        listing.add([row["method"], row["paper"], f"{row['lr']:g}", row["trains"], options,
                     ", ".join(row["families"]) or "-", *shares],
                    {**{k: v for k, v in row.items() if k not in references},
                     "pct_trainable": {r: row.get(r) for r in references}})
    return listing


def backbones_table(rows: list[dict]) -> Listing:
    """``medtransfer backbones``: ``backbones.backbone_table`` rows (the records, as ``--json`` always printed)."""
    listing = Listing(
        title="Backbones (also timm:<model>, open_clip:<arch>/<tag>, hf:<repo-id>; --weights default|random|PATH)",
        columns=(Column("name", key=True), Column("seed", justify="center"), Column("params (M)", justify="right"),
                 Column("dim", justify="right"), Column("input", justify="right"), Column("source")),
        caption="seed *: the published benchmark's backbones, extracted together by `extract --backbone seed`")
    for row in rows:
        listing.add([row["name"], "*" if row["seed"] else "", f"{row['params_m']:.1f}", str(row["dim"]),
                     str(row["input_size"]), row["source"]], row)
    return listing


def store_table(title: str, groups: list[dict]) -> Listing:
    """``medtransfer cache info``: ``cache_schema.store_info`` groups."""
    names = ("group", "backbone", "weights", "n", "dim", "dtype", "embeddings", "MB", "complete")
    listing = Listing(title=title, columns=tuple(Column(n, key=i < 3) for i, n in enumerate(names)))
    for g in groups:
        listing.add([g["key"], g["backbone"], g["weights"], f"{g['n_valid']}/{g['n']}", str(g["dim"]), g["dtype"],
                     ",".join(["default", *g["embeddings"]]), f"{g['bytes_on_disk'] / 1e6:.1f}",
                     "yes" if g["complete"] else "no"], g, style="" if g["complete"] else "red")
    return listing


def _figure(value) -> str:
    return "?" if value is None else f"{value:,}" if isinstance(value, int) else str(value)


def datasets_table(presets: list) -> Listing:
    """``medtransfer datasets list``: each ``datasets.DatasetPreset`` with the paper's figures."""
    listing = Listing(title="", columns=(Column("name", key=True), Column("data set", key=True), Column("task"),
                                         Column("validation"),
                                         Column("paper: images / patients / centers / balance")))
    for p in presets:
        validation = "leave one center out" if p.strategy == "loco" else f"{p.n_folds}-fold"
        figures = (p.paper.images, p.paper.patients, p.paper.centers, p.paper.balance)
        listing.add([p.name, p.dataset, p.task, validation, " / ".join(_figure(v) for v in figures)],
                    {"name": p.name, "dataset": p.dataset, "task": p.task, "strategy": p.strategy,
                     "n_folds": p.n_folds if p.strategy != "loco" else None, "paper_images": p.paper.images,
                     "paper_patients": p.paper.patients, "paper_centers": p.paper.centers,
                     "paper_balance": p.paper.balance})
    return listing


def figures_table(title: str, figures: dict) -> Listing:
    """``medtransfer datasets prepare``: ``datasets.Figures`` of the download beside the paper's."""
    listing = Listing(title=title, columns=(Column("", key=True), Column("images", justify="right"),
                                            Column("patients", justify="right"), Column("centers", justify="right"),
                                            Column("balance 0:1 (%)", justify="right")))
    for who, f in figures.items():
        values = (f.images, f.patients, f.centers, f.balance)
        listing.add([who, *(_figure(v) for v in values)],
                    {"source": who, "images": f.images, "patients": f.patients, "centers": f.centers,
                     "balance": f.balance})
    return listing
