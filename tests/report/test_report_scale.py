"""The report at ``probe --head all`` scale (issue 19, point 6): 12 methods x 3 backbones x 5 regimes x 10 runs.
Large tables collapse, the CD diagram and figures stay readable, every method has its own colour x marker,
CIs stay inside the metric's range, the weights are on the page; a screenshot to look at."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from report_browser import Chromium
from report_synthetic import predictions
from test_report import ARTIFACTS, FIGURES_JS, _chromium

from medtransfer.report import build_report
from medtransfer.report.figures import markers, method_marker, palette

HEADS = ["centroid", "extratrees", "hgb", "knn", "logreg", "mlp", "rf", "ridge", "svm", "xgb", "logreg@mean",
         "lora-r8"]
BACKBONES = ["resnet18", "dinov2-s", "rad-dino"]


@pytest.fixture(scope="module")
def big_page(tmp_path_factory) -> tuple:
    rng = np.random.default_rng(0)
    rows = []
    for b, backbone in enumerate(BACKBONES):
        for h, head in enumerate(HEADS):
            for regime, shots in (("full", 0), ("fewshot", 2), ("fewshot", 4), ("fewshot", 8), ("fewshot", 16)):
                for seed in range(2):
                    for fold in range(5):
                        mcc = float(np.clip(0.2 + 0.03 * h + 0.05 * b + 0.01 * shots + rng.normal(0, 0.05), -1, 1))
                        constant = head in ("hgb", "xgb") and regime == "fewshot" and shots <= 4
                        rows.append({
                            "backbone": backbone, "method": head, "regime": regime, "shots": shots, "seed": seed,
                            "fold": fold, "fraction": 0.0, "mcc": 0.0 if constant else mcc,
                            "pr_auc": float(min(1.0, 0.97 + rng.uniform(0, 0.03))),  # near 1: CIs must clip
                            "roc_auc": 0.5 if constant else 0.8, "balanced_accuracy": 0.7, "status": "ok",
                            "error": "", "weights": "random", "degenerate": constant, "task": "cxr-icu",
                            "pct_trainable": 0.5 if head == "lora-r8" else np.nan,
                            # issue 30 (3): the adapt run trained on train, the probes refit on train+val, so
                            # lora-r8 is paired with none of them; two repeats of 5 folds reach p < 0.05
                            "trained_on": "train" if head == "lora-r8" else "train+val", "repeat": seed,
                        })
    folder = tmp_path_factory.mktemp("scale")
    table = pd.DataFrame(rows)
    table.to_parquet(folder / "results.parquet", index=False)
    predictions(table).to_parquet(folder / "predictions.parquet", index=False)  # what the 95% CIs resample
    return folder, build_report([folder], folder / "report")


def test_every_method_has_its_own_colour_and_marker() -> None:
    colours = palette(HEADS)
    pairs = {(colours[m], method_marker(colours, m)) for m in HEADS}
    assert len(pairs) == len(HEADS) and markers(HEADS)


def test_large_tables_collapse_and_cis_stay_in_range(big_page) -> None:
    folder, page = big_page
    summary = pd.read_csv(folder / "report" / "tables" / "summary.csv")
    assert summary["pr_auc_ci_high"].notna().all() and summary["mcc_ci_low"].notna().all()
    assert summary["pr_auc_ci_high"].max() <= 1.0 and summary["mcc_ci_low"].min() >= -1.0
    text = page.read_text()
    assert text.count('<details class="more" data-backbone=') == len(BACKBONES)  # a table per backbone
    assert "All " in text and " pairs (tested first, by p)</summary>" in text
    assert 'id="weights"' in text and "Random (untrained) weights" in text
    assert "degenerate: one class predicted" in text


def test_page_at_head_all_scale_is_short_and_renders(big_page, tmp_path) -> None:
    _, page = big_page
    with Chromium(_chromium(), tmp_path / "profile") as browser:
        session = browser.open_page(page.resolve().as_uri())
        assert browser.evaluate("document.documentElement.getAttribute('data-ready')", session) == "1"
        assert all(decoded for _, decoded in browser.evaluate(FIGURES_JS, session))
        height = int(browser.evaluate("document.documentElement.scrollHeight", session))
        visible_rows = browser.evaluate(
            "Array.from(document.querySelectorAll('table.pairwise tbody tr')).filter(function (r) {"
            " return !r.closest('details:not([open])'); }).length", session)
        # issue 30 (3): the significant-pairs table starts with tested pairs, smallest Holm p first; the untested
        # pairs have their own table; a long note wraps instead of running off the page
        first = browser.evaluate(
            "(function () { var t = Array.from(document.querySelectorAll('table.pairwise')).filter(function (x) {"
            " return !x.closest('details'); })[0];"
            " return Array.from(t.tBodies[0].rows).map(function (r) { return [r.cells[8].dataset.v,"
            " r.cells[9].textContent]; }); })()", session)
        assert first and all(p != "" for p, _ in first), first
        holm = [float(p) for p, _ in first]
        assert holm == sorted(holm) and all(winner not in ("tie", "not paired") for _, winner in first)
        untested = browser.evaluate(
            "Array.from(document.querySelectorAll('details.untested table.pairwise tbody tr')).map(function (r) {"
            " return r.cells[7].textContent; })", session)
        assert untested and set(untested) == {"–"}
        notes = browser.evaluate(
            "(function () { var d = document.querySelector('details.untested'); d.open = true;"
            " var c = d.querySelector('td.note'); return [getComputedStyle(c).whiteSpace,"
            " c.getBoundingClientRect().width, c.getBoundingClientRect().height]; })()", session)
        assert notes[0] == "normal" and notes[1] <= 28 * 14 + 20 and notes[2] > 30, notes  # wrapped: 2+ lines
        browser.evaluate("document.querySelector('details.untested').open = false", session)
        shot = browser.screenshot(session, ARTIFACTS / "report-head-all.png")
        print(f"\nreport at --head all scale: {height} px tall, screenshot {shot}")
        assert height < 12000, height  # the 21,837 px page of the issue, collapsed
        assert visible_rows <= 40
        assert browser.errors() == []
