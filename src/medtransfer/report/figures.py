"""Report figures as self-contained SVG data URIs (matplotlib, Agg; no files, no network).

Colours come from the Okabe-Ito palette (safe for the common colour-vision deficiencies) and every method
keeps the same colour in every figure; backbones are told apart by marker shape, not colour.
"""

from __future__ import annotations

import base64
import io
from dataclasses import dataclass

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402

from medtransfer.report.load import backbone_family, is_cnn  # noqa: E402
from medtransfer.report.stats import FriedmanResult  # noqa: E402

OKABE_ITO = ["#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#000000", "#F0E442"]
MARKERS = ["o", "s", "^", "D", "v", "P", "X", "*", "h", "<", ">", "p"]
STYLE = {
    "font.size": 11,
    "axes.titlesize": 12,
    "axes.labelsize": 11,
    "legend.fontsize": 9,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "svg.fonttype": "none",
    "svg.hashsalt": "medtransfer",
}


@dataclass
class Figure:
    """One rendered figure and where it belongs on the page."""

    kind: str
    task: str
    title: str
    caption: str
    uri: str
    backbones: tuple[str, ...] = ()


def palette(names: list[str]) -> dict[str, str]:
    """Stable colour per name (sorted), cycling Okabe-Ito when there are more names than colours."""
    return {name: OKABE_ITO[i % len(OKABE_ITO)] for i, name in enumerate(sorted(set(names)))}


def markers(names: list[str]) -> dict[str, str]:
    return {name: MARKERS[i % len(MARKERS)] for i, name in enumerate(sorted(set(names)))}


def method_marker(colours: dict[str, str], method: str) -> str:
    """Each method's marker: with the colour (8 of them) it makes a pair no other method shares up to 24
    methods (``--head all`` has 12), so methods are told apart without relying on colour alone."""
    return markers(list(colours))[method]


def _to_uri(fig: plt.Figure) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="svg", bbox_inches="tight", metadata={"Date": None})
    plt.close(fig)
    return "data:image/svg+xml;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _grid(n: int, width: float = 4.2, height: float = 3.2, max_cols: int = 3) -> tuple[plt.Figure, np.ndarray]:
    cols = min(n, max_cols)
    rows = int(np.ceil(n / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(width * cols, height * rows), squeeze=False)
    for ax in axes.flat[n:]:
        ax.set_visible(False)
    return fig, axes


def trainable_scatter(summary: pd.DataFrame, task: str, colours: dict[str, str]) -> Figure | None:
    """MCC vs % trainable parameters, one panel per backbone: is the extra training worth its parameters?"""
    full = summary[(summary["task"] == task) & (summary["regime"] == "full")]
    if full.empty:
        return None
    positive = full.loc[full["pct_trainable"] > 0, "pct_trainable"]
    floor = float(positive.min() / 10) if not positive.empty else 1e-3
    methods = sorted(full["method"].unique())
    backbones = sorted(full["backbone"].unique())
    # Methods sharing an x (e.g. two head-only probes) are dodged a little in log space so none hides another.
    dodge = {m: 1.18 ** (i - (len(methods) - 1) / 2) for i, m in enumerate(methods)}
    top = max(float(full["pct_trainable"].max()), floor * 10)
    decades = [10.0**e for e in range(int(np.ceil(np.log10(floor * 3))), int(np.floor(np.log10(top))) + 1)]
    with plt.rc_context(STYLE):
        fig, axes = _grid(len(backbones), width=4.6, height=3.4)
        for ax, backbone in zip(axes.flat, backbones, strict=False):
            part = full[full["backbone"] == backbone]
            for _, row in part.iterrows():
                x = (row["pct_trainable"] if row["pct_trainable"] > 0 else floor) * dodge[row["method"]]
                err = None
                if not np.isnan(row["mcc_ci_low"]):
                    # the bootstrap CI need not straddle the mean of the runs: a bar never has negative length
                    err = [[max(0.0, row["mcc_mean"] - row["mcc_ci_low"])],
                           [max(0.0, row["mcc_ci_high"] - row["mcc_mean"])]]
                ax.errorbar(x, row["mcc_mean"], yerr=err, fmt=method_marker(colours, row["method"]),
                            color=colours[row["method"]], markersize=8, markeredgecolor="black",
                            markeredgewidth=0.6, capsize=3, alpha=0.9)
            ax.set_xscale("log")
            ticks, labels = decades, [f"{d:g}%" for d in decades]
            if (full["pct_trainable"] <= 0).any():
                ax.axvline(floor * 2.2, color="grey", linestyle=":", linewidth=1)
                ticks, labels = [floor, *decades], ["head\nonly", *labels]
            ax.set_xticks(ticks, labels)
            ax.minorticks_off()
            ax.set_xlim(floor / 1.8, top * 1.8)
            ax.set_title(backbone)
            ax.set_xlabel("% trainable parameters (log)")
            ax.set_ylabel("MCC (mean, 95% CI)")
        _method_legend(fig, colours, methods)
        fig.suptitle(f"{task}: MCC vs trainable parameters")
        fig.tight_layout()
        uri = _to_uri(fig)
    return Figure(
        "trainable",
        task,
        f"{task}: MCC vs % trainable parameters",
        "One panel per backbone, one point per method, full-data regime; bars are 95% CIs over folds/seeds.",
        uri,
        tuple(backbones),
    )


def _method_legend(fig: plt.Figure, colours: dict[str, str], methods: list[str]) -> None:
    """One legend for the whole figure, outside every panel, so it never hides a point."""
    handles = [Line2D([], [], marker=method_marker(colours, m), linestyle="", color=colours[m],
                      markeredgecolor="black", markersize=8, label=m) for m in methods]
    fig.legend(handles=handles, title="method", loc="upper left", bbox_to_anchor=(1.0, 0.95),
               ncol=1 if len(methods) <= 16 else 2)


def shared_backbones(data: pd.DataFrame) -> tuple[list[str], dict[str, int]]:
    """The backbones every method of ``data`` ran on, and how many backbones each method ran on."""
    per_method = data.groupby("method")["backbone"].agg(lambda b: set(b))
    shared = sorted(set.intersection(*per_method)) if len(per_method) else []
    return shared, {m: len(b) for m, b in per_method.items()}


def method_boxplots(ok: pd.DataFrame, task: str, colours: dict[str, str]) -> Figure | None:
    """Spread of MCC per method over folds, seeds and backbones: how reliable each method is.

    A box pooled over three backbones next to one from a single backbone compares backbones, not methods: the
    boxes pool only the backbones every method ran on; when no backbone is shared by all, each box is labelled
    with the number of backbones it pools, and the caption says so."""
    data = ok[(ok["task"] == task) & (ok["regime"] == "full")]
    if data.empty:
        return None
    all_backbones = sorted(data["backbone"].unique())
    shared, n_backbones = shared_backbones(data)
    if shared:
        data = data[data["backbone"].isin(shared)]
        left_out = sorted(set(all_backbones) - set(shared))
        pooled = (f" Pooled over the backbone(s) every method ran on ({', '.join(shared)})"
                  + (f"; left out: {', '.join(left_out)} (not run with every method)." if left_out else "."))
    else:
        pooled = (" No backbone ran with every method, so boxes pool different backbones: the label under each "
                  "box says how many of the task's backbones it pools.")
    methods = sorted(data["method"].unique())
    labels = methods if shared else [f"{m}\n({n_backbones[m]} of {len(all_backbones)})" for m in methods]
    with plt.rc_context(STYLE):
        fig, ax = plt.subplots(figsize=(max(4.5, 1.1 * len(methods) + 2), 4.0))
        values = [data.loc[data["method"] == m, "mcc"].dropna().to_numpy() for m in methods]
        box = ax.boxplot(values, patch_artist=True, widths=0.6, medianprops={"color": "black"})
        ax.set_xticks(range(1, len(methods) + 1), labels)
        for patch, method in zip(box["boxes"], methods, strict=True):
            patch.set_facecolor(colours[method])
            patch.set_alpha(0.75)
        for i, vals in enumerate(values, start=1):
            jitter = np.linspace(-0.15, 0.15, len(vals)) if len(vals) > 1 else np.zeros(len(vals))
            ax.plot(i + jitter, vals, "o", color="black", markersize=3, alpha=0.5)
        ax.set_xlabel("method")
        ax.set_ylabel("MCC per run")
        ax.set_title(f"{task}: MCC per method")
        uri = _to_uri(fig)
    return Figure(
        "boxplot",
        task,
        f"{task}: MCC per method",
        f"Full-data regime; each dot is one (backbone, seed, fold) run.{pooled}",
        uri,
        tuple(sorted(data["backbone"].unique())),
    )


def cnn_vs_fm(summary: pd.DataFrame, task: str, colours: dict[str, str]) -> Figure | None:
    """Side-by-side panels: do foundation models beat ImageNet-style CNNs on this task?"""
    full = summary[(summary["task"] == task) & (summary["regime"] == "full")]
    if full.empty:
        return None
    methods = sorted(full["method"].unique())
    with plt.rc_context(STYLE):
        fig, axes = plt.subplots(1, 2, figsize=(10, 4.0), sharey=True)
        for ax, (title, cnn) in zip(axes, (("CNN backbones", True), ("Foundation models", False)), strict=True):
            part = full[full["backbone"].map(is_cnn) == cnn]
            ax.set_title(title)
            if part.empty:
                ax.text(
                    0.5,
                    0.5,
                    "none in results",
                    ha="center",
                    va="center",
                    transform=ax.transAxes,
                    color="dimgray",
                )
                ax.set_xticks([])
                continue
            backbones = sorted(part["backbone"].unique())
            offsets = np.linspace(-0.3, 0.3, len(methods)) if len(methods) > 1 else np.zeros(1)
            for offset, method in zip(offsets, methods, strict=True):
                rows = part[part["method"] == method].set_index("backbone").reindex(backbones)
                x = np.arange(len(backbones)) + offset
                low = (rows["mcc_mean"] - rows["mcc_ci_low"]).fillna(0).clip(lower=0).to_numpy()
                high = (rows["mcc_ci_high"] - rows["mcc_mean"]).fillna(0).clip(lower=0).to_numpy()
                ax.errorbar(
                    x,
                    rows["mcc_mean"],
                    yerr=[low, high],
                    fmt=method_marker(colours, method),
                    color=colours[method],
                    capsize=3,
                    markersize=7,
                    markeredgecolor="black",
                    markeredgewidth=0.5,
                    label=method,
                )
            ax.set_xticks(range(len(backbones)), backbones, rotation=20, ha="right")
        axes[0].set_ylabel("MCC (mean, 95% CI)")
        _method_legend(fig, colours, methods)
        fig.suptitle(f"{task}: CNN vs foundation models")
        uri = _to_uri(fig)
    unknown = sorted(b for b in full["backbone"].unique() if backbone_family(b) == "unknown")
    note = f" Not in the backbone registry, counted as foundation models: {', '.join(unknown)}." if unknown else ""
    return Figure(
        "cnn_vs_fm",
        task,
        f"{task}: CNN vs foundation models",
        "Full-data regime, mean MCC with 95% CI per backbone and method; CNN means the backbone registry's "
        f"family 'cnn'.{note}",
        uri,
        tuple(sorted(full["backbone"].unique())),
    )


CURVES = {  # regime -> (x column, x label, figure kind, title)
    "fewshot": ("shots", "shots per class", "fewshot", "few-shot learning curves"),
    "fraction": ("fraction", "fraction of training data", "fraction", "data-fraction learning curves"),
}


def learning_curves(
    summary: pd.DataFrame, task: str, colours: dict[str, str], regime: str = "fewshot"
) -> Figure | None:
    """MCC vs shots (or data fraction) with CI bands, one panel per backbone: how fast does each method learn?"""
    x_col, x_label, kind, title = CURVES[regime]
    few = summary[(summary["task"] == task) & (summary["regime"] == regime)]
    if few.empty:
        return None
    backbones = sorted(few["backbone"].unique())
    with plt.rc_context(STYLE):
        fig, axes = _grid(len(backbones))
        for ax, backbone in zip(axes.flat, backbones, strict=False):
            part = few[few["backbone"] == backbone]
            for method, rows in part.groupby("method", sort=True):
                rows = rows.sort_values(x_col)
                ax.plot(rows[x_col], rows["mcc_mean"], "-", marker=method_marker(colours, method),
                        color=colours[method], label=method, markersize=5)
                ax.fill_between(
                    rows[x_col], rows["mcc_ci_low"], rows["mcc_ci_high"], color=colours[method], alpha=0.2, linewidth=0
                )
            ax.set_xscale("log", base=2)
            xs = sorted(part[x_col].unique())
            ax.set_xticks(xs, [f"{x:g}" if regime == "fewshot" else f"{x:.0%}" for x in xs])
            ax.minorticks_off()
            ax.set_title(backbone)
            ax.set_xlabel(x_label)
            ax.set_ylabel("MCC (mean, 95% CI band)")
        fig.suptitle(f"{task}: {title}")
        fig.tight_layout()
        _method_legend(fig, colours, sorted(few["method"].unique()))
        uri = _to_uri(fig)
    return Figure(
        kind,
        task,
        f"{task}: {title}",
        f"MCC vs {x_label} (log scale); line = mean over seeds/folds, band = 95% CI.",
        uri,
        tuple(backbones),
    )


def _cliques(ranks: np.ndarray, cd: float) -> list[tuple[int, int]]:
    """Maximal runs of sorted ranks whose spread is below the critical difference."""
    spans = []
    for i in range(len(ranks)):
        j = i
        while j + 1 < len(ranks) and ranks[j + 1] - ranks[i] < cd:
            j += 1
        if j > i and not any(a <= i and j <= b for a, b in spans):
            spans.append((i, j))
    return spans


def cd_diagram(result: FriedmanResult) -> Figure | None:
    """Critical-difference diagram: strategies joined by a bar are not significantly different."""
    if not result.ok:
        return None
    names = list(result.mean_ranks.index)
    ranks = result.mean_ranks.to_numpy(dtype=float)
    k = len(names)
    half = int(np.ceil(k / 2))
    cliques = _cliques(ranks, result.cd)
    top = 0.6 + 0.2 * len(cliques)  # label rows start below the clique bars
    with plt.rc_context({**STYLE, "axes.grid": False}):
        # wider with more strategies, rank ticks thinned, so labels never overlap whatever their number
        label_size = 10 if k <= 16 else 8
        fig, ax = plt.subplots(figsize=(max(8.0, 4.0 + 0.3 * k), 1.6 + (0.32 if k <= 16 else 0.26) * (half + top)))
        ax.set_xlim(k + 0.5, 0.5)  # best rank (1) on the right, as in Demšar (2006)
        ax.set_ylim(-(half + top + 0.5), 2.0)
        ax.axis("off")
        ax.hlines(0, 1, k, color="black")
        step = max(1, int(np.ceil(k / 12)))
        for r in range(1, k + 1):
            ax.vlines(r, 0, 0.15 if (r - 1) % step == 0 else 0.07, color="black")
            if (r - 1) % step == 0:
                ax.text(r, 0.3, str(r), ha="center", va="bottom")
        ax.hlines(1.3, 1, 1 + result.cd, color="black", linewidth=2)
        ax.text(1 + result.cd / 2, 1.45, f"CD = {result.cd:.2f}", ha="center", va="bottom")
        for i, (name, rank) in enumerate(zip(names, ranks, strict=True)):
            worse_half = i >= half
            level = -(top + (k - 1 - i if worse_half else i))
            x_text = k + 0.6 if worse_half else 0.4
            ax.plot([rank, rank, x_text], [0, level, level], color=OKABE_ITO[0], linewidth=1)
            ax.text(
                x_text,
                level,
                f"{name} ({rank:.2f})",
                ha="right" if worse_half else "left",
                va="center",
                clip_on=False,
                fontsize=label_size,
            )
        for n, (a, b) in enumerate(cliques):
            y = -0.3 - 0.2 * n
            ax.hlines(y, ranks[a] - 0.05, ranks[b] + 0.05, color="black", linewidth=3)
        ax.set_title(f"{result.regime}: mean rank of MCC over {result.n_blocks} (task, backbone) blocks (1 = best)")
        uri = _to_uri(fig)
    return Figure(
        "cd",
        "",
        f"Critical-difference diagram (Friedman + Nemenyi), {result.regime}",
        result.message + "; strategies joined by a thick bar do not differ significantly.",
        uri,
    )
