"""The report page: one HTML file with inline CSS, JS and figures, so it opens from disk with no network.

The JS only sorts tables and filters by task/backbone; the page is complete and readable without it.
"""

from __future__ import annotations

import html
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import pandas as pd

from medtransfer.aggregate import CI_METHOD
from medtransfer.report.load import regime_label
from medtransfer.report.stats import ALPHA, FriedmanResult

if TYPE_CHECKING:
    from medtransfer.report.figures import Figure

CSS = """
:root { --ink:#1b1b1b; --muted:#5a5a5a; --line:#d9d9d9; --best:#fff1c2; --accent:#0072B2; }
* { box-sizing: border-box; }
body { font: 14px/1.45 system-ui, "Segoe UI", Roboto, "DejaVu Sans", sans-serif;
       color: var(--ink);       margin: 0; background: #fafafa; }
header, main { max-width: 1200px; margin: 0 auto; padding: 0 20px; }
header { padding-top: 18px; }
h1 { font-size: 24px; margin: 0 0 4px; }
h2 { font-size: 20px; margin: 28px 0 8px; border-bottom: 2px solid var(--line); }
h3 { font-size: 16px; margin: 18px 0 6px; }
.muted { color: var(--muted); }
.controls { position: sticky; top: 0; z-index: 2; background: #fafafa; border-bottom: 1px solid var(--line);
            padding: 8px 20px; display: flex; gap: 18px; align-items: center; flex-wrap: wrap; }
.controls label { font-weight: 600; } select { font: inherit; padding: 2px 4px; }
.card { background: #fff; border: 1px solid var(--line);
        border-radius: 6px; padding: 10px 14px; margin: 10px 0; }
.problems li { margin: 2px 0; font-family: ui-monospace, "DejaVu Sans Mono", monospace; font-size: 12px; }
.ok-note { color: #00613f; }
.table-wrap { overflow-x: auto; }
table { border-collapse: collapse; width: 100%; background: #fff; font-variant-numeric: tabular-nums; }
th, td { padding: 4px 8px; border-bottom: 1px solid var(--line); text-align: left; white-space: nowrap; }
th { background: #f0f0f0; position: relative; cursor: pointer; user-select: none; }
th::after { content: " \\2195"; color: #aaa; font-size: 11px; }
th[aria-sort=ascending]::after { content: " \\25B2"; color: var(--ink); }
th[aria-sort=descending]::after { content: " \\25BC"; color: var(--ink); }
td.num { text-align: right; }
td.note { white-space: normal; min-width: 14em; max-width: 28em; }  /* long notes wrap, not run off the page */
.warn { color: #a33; font-weight: 600; }
details.more > summary { cursor: pointer; margin: 6px 0; color: var(--accent); }
.weights { background: #fff; border-left: 4px solid var(--accent); padding: 6px 10px; margin: 6px 0; }
.weights.random { border-left-color: #a33; }
tr.best td { background: var(--best); font-weight: 600; }
tr.sig td.winner { font-weight: 700; }
.star { color: #b35900; }
figure { margin: 10px 0; max-width: 100%;
         background: #fff; border: 1px solid var(--line); border-radius: 6px; padding: 8px; }
figure img { max-width: 100%; height: auto; display: block; margin: 0 auto; }
figcaption { color: var(--muted); font-size: 13px; margin-top: 4px; }
.figs { display: flex; flex-direction: column; align-items: center; }
table.friedman { width: auto; }
[hidden] { display: none !important; }
footer { max-width: 1200px; margin: 30px auto; padding: 0 20px; color: var(--muted); font-size: 12px; }
"""

JS = """
(function () {
  "use strict";
  function value(row, idx) {
    var cell = row.cells[idx];
    var v = cell ? cell.getAttribute("data-v") : null;
    return v === null ? (cell ? cell.textContent.trim() : "") : v;
  }
  function sortBy(table, idx, th) {
    var numeric = th.getAttribute("data-type") === "num";
    var asc = th.getAttribute("aria-sort") !== "ascending";
    Array.prototype.forEach.call(th.parentNode.cells, function (c) { c.removeAttribute("aria-sort"); });
    th.setAttribute("aria-sort", asc ? "ascending" : "descending");
    var body = table.tBodies[0];
    var rows = Array.prototype.slice.call(body.rows);
    rows.sort(function (a, b) {
      var x = value(a, idx), y = value(b, idx);
      if (numeric) {
        x = parseFloat(x); y = parseFloat(y);
        if (isNaN(x) && isNaN(y)) { return 0; }
        if (isNaN(x)) { return 1; }
        if (isNaN(y)) { return -1; }
        return asc ? x - y : y - x;
      }
      return asc ? x.localeCompare(y) : y.localeCompare(x);
    });
    rows.forEach(function (r) { body.appendChild(r); });
  }
  document.querySelectorAll("table.sortable").forEach(function (table) {
    Array.prototype.forEach.call(table.tHead.rows[0].cells, function (th, idx) {
      th.tabIndex = 0;
      th.title = "Sort by this column";
      th.addEventListener("click", function () { sortBy(table, idx, th); });
      th.addEventListener("keydown", function (e) {
        if (e.key === "Enter" || e.key === " ") { e.preventDefault(); sortBy(table, idx, th); }
      });
    });
  });
  var taskSel = document.getElementById("filter-task");
  var backboneSel = document.getElementById("filter-backbone");
  function apply() {
    var task = taskSel ? taskSel.value : "";
    var backbone = backboneSel ? backboneSel.value : "";
    document.querySelectorAll("[data-task]").forEach(function (el) {
      el.hidden = task !== "" && el.getAttribute("data-task") !== task;
    });
    document.querySelectorAll("[data-backbone]").forEach(function (el) {
      el.hidden = backbone !== "" && el.getAttribute("data-backbone") !== backbone;
    });
    document.querySelectorAll("[data-backbones]").forEach(function (el) {
      var list = el.getAttribute("data-backbones").split("|");
      el.hidden = backbone !== "" && list.indexOf(backbone) < 0;
    });
  }
  [taskSel, backboneSel].forEach(function (sel) { if (sel) { sel.addEventListener("change", apply); } });
  apply();
  document.documentElement.setAttribute("data-ready", "1");
})();
"""


@dataclass
class PageData:
    """Everything the page shows, computed elsewhere (the page only lays it out)."""

    summary: pd.DataFrame
    pairwise: pd.DataFrame
    friedman: list[FriedmanResult]  # one test per data regime (stats.friedman_by_regime)
    figures: list[Figure]
    problems: list[str]
    sources: list[str]
    n_rows: int
    n_failed: int
    weights: dict[str, str] = field(default_factory=dict)  # backbone -> the weights its rows used


def esc(value: object) -> str:
    return html.escape(str(value), quote=True)


def fmt(value: float, digits: int = 3) -> str:
    return "–" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"


def fmt_p(p: float) -> str:
    if p is None or math.isnan(p):
        return "–"
    return "<0.001" if p < 0.001 else f"{p:.3f}"


def fmt_pct(pct: float) -> str:
    if math.isnan(pct):
        return "–"
    if pct <= 0:
        return "head only"
    return f"{pct:.3g}%"


def _num(value: float) -> str:
    """Sort key for a numeric cell; NaN sorts last."""
    return "" if value is None or math.isnan(float(value)) else repr(float(value))


def _head(columns: Iterable[tuple[str, str]]) -> str:
    cells = "".join(f'<th scope="col" data-type="{kind}">{esc(name)}</th>' for name, kind in columns)
    return f"<thead><tr>{cells}</tr></thead>"


LARGE_TABLE = 40  # rows; a larger table is collapsed (per backbone, or behind a <details>) so the page stays short


def _constant(row: pd.Series) -> str:
    """A degenerate strategy says so beside its run count (text, not colour alone)."""
    n = int(row.get("n_degenerate", 0) or 0)
    return f' <span class="warn" title="runs predicting one class for every test sample">({n} constant)</span>' \
        if n else ""


def summary_html(task_summary: pd.DataFrame) -> str:
    """The task's summary: one table, or when large one collapsed table per backbone, its best strategy shown."""
    if len(task_summary) <= LARGE_TABLE:
        return summary_table_html(task_summary)
    parts = [f'<p class="muted">{len(task_summary)} strategies: one table per backbone, opened on click.</p>']
    for backbone, rows in task_summary.groupby("backbone", sort=True):
        best = rows.sort_values("mcc_mean", ascending=False).iloc[0]
        parts.append(
            f'<details class="more" data-backbone="{esc(backbone)}"><summary><strong>{esc(backbone)}</strong>: '
            f"{len(rows)} strategies; best {esc(best['strategy'])} (MCC {fmt(best['mcc_mean'])})</summary>"
            f"{summary_table_html(rows)}</details>"
        )
    return "".join(parts)


def summary_table_html(task_summary: pd.DataFrame) -> str:
    """Per-task table; the best strategy per backbone is highlighted and starred (not colour alone)."""
    cols = [
        ("backbone", "text"),
        ("method", "text"),
        ("data", "text"),
        ("shots", "num"),
        ("% trainable", "num"),
        ("n", "num"),
        ("MCC mean ± std", "num"),
        ("MCC 95% CI", "num"),
        ("PR-AUC mean ± std", "num"),
        ("PR-AUC 95% CI", "num"),
    ]
    body = []
    for _, r in task_summary.sort_values(["backbone", "mcc_mean"], ascending=[True, False]).iterrows():
        star = ' <span class="star" title="best strategy for this backbone">★</span>' if r["best"] else ""
        cells = [
            f"<td>{esc(r['backbone'])}</td>",
            f"<td>{esc(r['method'])}{star}</td>",
            f"<td>{esc(regime_label(r['regime'], r['shots'], r['fraction']))}</td>",
            f'<td class="num" data-v="{r["shots"]}">{r["shots"]}</td>',
            f'<td class="num" data-v="{_num(r["pct_trainable"])}">{fmt_pct(r["pct_trainable"])}</td>',
            f'<td class="num" data-v="{r["n"]}">{r["n"]}{_constant(r)}</td>',
        ]
        for metric in ("mcc", "pr_auc"):
            mean, std = r[f"{metric}_mean"], r[f"{metric}_std"]
            cells.append(f'<td class="num" data-v="{_num(mean)}">{fmt(mean)} ± {fmt(std)}</td>')
            ci = f"[{fmt(r[f'{metric}_ci_low'])}, {fmt(r[f'{metric}_ci_high'])}]"
            cells.append(f'<td class="num" data-v="{_num(r[f"{metric}_ci_low"])}">{ci}</td>')
        cls = ' class="best"' if r["best"] else ""
        body.append(f'<tr{cls} data-backbone="{esc(r["backbone"])}">{"".join(cells)}</tr>')
    return (
        f'<div class="table-wrap"><table class="sortable summary">{_head(cols)}'
        f"<tbody>{''.join(body)}</tbody></table></div>"
    )


def pairwise_table_html(task_pairs: pd.DataFrame) -> str:
    cols = [
        ("backbone", "text"),
        ("A", "text"),
        ("B", "text"),
        ("pairs", "num"),
        ("mean A−B", "num"),
        ("A better", "num"),
        ("B better", "num"),
        ("p", "num"),
        ("p (Holm)", "num"),
        ("winner", "text"),
        ("note", "text"),
    ]
    body = []
    for _, r in _tested_first(task_pairs).iterrows():
        sig = r["winner"] not in ("tie", "not paired")
        cells = [
            f"<td>{esc(r['backbone'])}</td>",
            f"<td>{esc(r['a'])}</td>",
            f"<td>{esc(r['b'])}</td>",
            f'<td class="num" data-v="{r["n_pairs"]}">{r["n_pairs"]}</td>',
            f'<td class="num" data-v="{_num(r["mean_diff"])}">{fmt(r["mean_diff"])}</td>',
            f'<td class="num" data-v="{r["a_better"]}">{r["a_better"]}</td>',
            f'<td class="num" data-v="{r["b_better"]}">{r["b_better"]}</td>',
            f'<td class="num" data-v="{_num(r["p"])}">{fmt_p(r["p"])}</td>',
            f'<td class="num" data-v="{_num(r["p_holm"])}">{fmt_p(r["p_holm"])}</td>',
            f'<td class="winner">{esc(r["winner"])}</td>',
            f'<td class="note">{esc(r.get("note", ""))}</td>',
        ]
        cls = ' class="sig"' if sig else ""
        body.append(f'<tr{cls} data-backbone="{esc(r["backbone"])}">{"".join(cells)}</tr>')
    return (
        f'<div class="table-wrap"><table class="sortable pairwise">{_head(cols)}'
        f"<tbody>{''.join(body)}</tbody></table></div>"
    )


def _tested_first(pairs: pd.DataFrame) -> pd.DataFrame:
    """Tested pairs by Holm-adjusted p (then p, then backbone), the pairs with no test ("not paired") after them."""
    order = pairs.assign(_untested=pairs["p"].isna())
    return order.sort_values(["_untested", "p_holm", "p", "backbone", "a", "b"], kind="stable").drop(
        columns="_untested")


def pairwise_html(pairs: pd.DataFrame) -> str:
    """The paired tests, tested pairs first by p; a large family shows its significant pairs (up to LARGE_TABLE),
    the pairs that could not be tested in a table of their own, and keeps every pair behind one click."""
    if not len(pairs):
        return '<p class="muted">Only one strategy: no pairs.</p>'
    if len(pairs) <= LARGE_TABLE:
        return pairwise_table_html(pairs)
    tested = pairs[pairs["p"].notna()]
    significant = _tested_first(tested[~tested["winner"].isin(["tie", "not paired"])]).head(LARGE_TABLE)
    shown = (f'<p class="muted">{len(pairs)} pairs, {len(tested)} tested: the {len(significant)} most '
             "significant shown (smallest p first).</p>" + pairwise_table_html(significant)) if len(significant) \
        else f'<p class="muted">{len(pairs)} pairs, {len(tested)} tested, none significant.</p>'
    untested = pairs[pairs["p"].isna()]
    if len(untested):
        shown += (f'<details class="more untested"><summary>{len(untested)} pair(s) not tested (see the note: '
                  f"trained on other rows, or no folds in common)</summary>{pairwise_table_html(untested)}</details>")
    return (f'{shown}<details class="more"><summary>All {len(pairs)} pairs (tested first, by p)</summary>'
            f"{pairwise_table_html(pairs)}</details>")


def weights_html(weights: dict[str, str]) -> str:
    """Which weights each backbone's features came from, on the page: random weights learn nothing pretrained."""
    if not weights:
        return ""
    random = sorted(b for b, w in weights.items() if "random" in w.split(", "))
    items = " · ".join(f"{esc(b)}: <strong>{esc(w)}</strong>" for b, w in weights.items())
    note = (f" <span class=\"warn\">Random (untrained) weights for {esc(', '.join(random))}: these results say "
            "nothing about pretrained transfer.</span>") if random else ""
    cls = "weights random" if random else "weights"
    return f'<div class="{cls}" id="weights">Weights: {items}.{note}</div>'


def figure_html(fig: Figure) -> str:
    backbones = f' data-backbones="{esc("|".join(fig.backbones))}"' if fig.backbones else ""
    return (
        f'<figure class="report-figure" data-figure="{esc(fig.kind)}"{backbones}>'
        f'<img src="{fig.uri}" alt="{esc(fig.title)}">'
        f"<figcaption><strong>{esc(fig.title)}.</strong> {esc(fig.caption)}</figcaption></figure>"
    )


def problems_html(problems: list[str], n_failed: int) -> str:
    if not problems:
        return '<div class="card ok-note">Nothing missing: every run finished and reported MCC and PR-AUC.</div>'
    items = "".join(f"<li>{esc(p)}</li>" for p in problems)
    opened = " open" if len(problems) <= 30 else ""
    return (
        f'<div class="card" id="missing"><details{opened}><summary><strong>{len(problems)} '
        f"problem(s)</strong> — {n_failed} failed run(s); missing runs and metrics are left out of every "
        f'statistic below.</summary><ul class="problems">{items}</ul></details></div>'
    )


def friedman_html(results: list[FriedmanResult], figures: list[Figure]) -> str:
    parts = ['<section id="across"><h2>Across backbones × tasks</h2>',
             '<p class="muted">One Friedman test per data regime and training rows: methods compete only with '
             "methods given the same data.</p>"]
    if not results:
        parts.append('<div class="card">Friedman test not run: no results.</div>')
    for result in results:
        parts.append(_friedman_card(result))
    parts.extend(figure_html(f) for f in figures if f.kind == "cd")
    parts.append("</section>")
    return "".join(parts)


def _friedman_card(result: FriedmanResult) -> str:
    parts = []
    if not result.ok:
        parts.append(f'<div class="card">Friedman test not run: {esc(result.message)}.</div>')
    else:
        verdict = "differ" if result.pvalue < ALPHA else "do not differ significantly"
        parts.append(
            f'<div class="card">{esc(result.message)}: strategies {verdict} (α = {ALPHA}). '
            f"Nemenyi critical difference of mean ranks = {result.cd:.2f}.</div>"
        )
        if result.dropped:
            parts.append(f'<p class="muted">Left out (not run on enough blocks): {esc(", ".join(result.dropped))}</p>')
        rows = "".join(
            f'<tr><td>{esc(name)}</td><td class="num" data-v="{rank!r}">{rank:.2f}</td></tr>'
            for name, rank in result.mean_ranks.items()
        )
        table = (
            f'<div class="table-wrap"><table class="sortable friedman">'
            f"{_head([('strategy', 'text'), ('mean rank (1 = best)', 'num')])}<tbody>{rows}</tbody>"
            "</table></div>"
        )
        if len(result.mean_ranks) > LARGE_TABLE:  # the diagram below shows them all; the table on a click
            table = f'<details class="more"><summary>Mean ranks of all {len(result.mean_ranks)} strategies' \
                    f"</summary>{table}</details>"
        parts.append(table)
    return "".join(parts)


def _options(values: list[str], label: str) -> str:
    opts = "".join(f'<option value="{esc(v)}">{esc(v)}</option>' for v in values)
    return f'<option value="">all {label}</option>{opts}'


def task_section(task: str, data: PageData) -> str:
    summary = data.summary[data.summary["task"] == task]
    pairs = data.pairwise[data.pairwise["task"] == task]
    figs = [f for f in data.figures if f.task == task]
    n_sig = int((~pairs["winner"].isin(["tie", "not paired"])).sum())
    positive = ", ".join(sorted({p for p in summary.get("positive", []) if p})) or "– (multi-class, or not recorded)"
    parts = [
        f'<section class="task" data-task="{esc(task)}"><h2>Task: {esc(task)}</h2>',
        "<h3>Results per backbone and strategy</h3>",
        f"<p>Positive class: <strong>{esc(positive)}</strong></p>",
        f'<p class="muted">Mean ± std over folds and seeds; 95% CI: {esc(CI_METHOD)}. '
        '<span class="star">★</span> and highlight = best mean MCC for that backbone.</p>',
        summary_html(summary),
        "<h3>Figures</h3>",
        f'<div class="figs">{"".join(figure_html(f) for f in figs)}</div>',
        f"<h3>Paired tests ({n_sig} of {len(pairs)} significant)</h3>",
        '<p class="muted">Paired on fold means (each strategy\'s seeds averaged within a fold, as they share its '
        "test set) with the corrected resampled t-test (Nadeau &amp; Bengio 2003), which allows for the training "
        "rows the folds share, for one k-fold split and repeated CV alike; only methods of the same data regime "
        "trained on the same rows are paired (a probe's train+val refit is not paired with a method trained on train); "
        "Holm-corrected within each "
        f"backbone; winner only when p (Holm) &lt; {ALPHA}.</p>",
    ]
    parts.append(pairwise_html(pairs))
    parts.append("</section>")
    return "".join(parts)


def render_page(data: PageData, generated: str) -> str:
    """The whole document as a string."""
    tasks = sorted(data.summary["task"].unique()) if not data.summary.empty else []
    backbones = sorted(data.summary["backbone"].unique()) if not data.summary.empty else []
    sources = "".join(f"<li>{esc(s)}</li>" for s in data.sources)
    body = [
        "<header><h1>medtransfer report</h1>",
        f'<p class="muted">{data.n_rows} runs used · {data.n_failed} failed · {len(tasks)} task(s) · '
        f"{len(backbones)} backbone(s) · generated {esc(generated)}</p>",
        f'<details><summary class="muted">Results read from {len(data.sources)} dir(s)</summary><ul>{sources}'
        '</ul></details><p class="muted">Tables: <a href="tables/summary.csv">summary.csv</a> · '
        '<a href="tables/summary.tex">summary.tex</a> · <a href="tables/pairwise.csv">pairwise.csv</a> · '
        '<a href="tables/pairwise.tex">pairwise.tex</a> · <a href="tables/friedman.csv">friedman.csv</a></p>'
        f"{weights_html(data.weights)}</header>",
        '<nav class="controls" aria-label="filters">'
        f'<label for="filter-task">Task</label><select id="filter-task">{_options(tasks, "tasks")}</select>'
        f'<label for="filter-backbone">Backbone</label><select id="filter-backbone">'
        f"{_options(backbones, 'backbones')}</select>"
        '<span class="muted">Click a column header to sort.</span></nav><main>',
        "<h2>Missing or failed</h2>",
        problems_html(data.problems, data.n_failed),
    ]
    if not tasks:
        body.append('<div class="card">No usable results yet: nothing to summarise.</div>')
    body.extend(task_section(t, data) for t in tasks)
    body.append(friedman_html(data.friedman, data.figures))
    body.append(
        "</main><footer>medtransfer · self-contained report (no network needed). Colours: Okabe-Ito "
        "palette; best rows are also marked with ★.</footer>"
    )
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        '<link rel="icon" href="data:,"><title>medtransfer report</title>'
        f"<style>{CSS}</style></head><body>{''.join(body)}<script>{JS}</script></body></html>"
    )
