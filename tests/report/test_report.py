"""The report stage on synthetic results with known answers, plus a real headless-Chromium render."""

from __future__ import annotations

import math
import os
import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from report_browser import Chromium
from report_synthetic import BACKBONES, make_rows, write_results

from medtransfer.errors import MedtransferError
from medtransfer.report import build_report, is_cnn, load_results, summarize
from medtransfer.report.stats import (
    friedman,
    friedman_by_regime,
    holm,
    nemenyi_cd,
    pairwise_tests,
    summary_table,
)

ARTIFACTS = Path(__file__).parent / "artifacts"
FIGURES_PER_TASK = ["trainable", "boxplot", "cnn_vs_fm", "fewshot"]
# chest (no data-fraction runs), derm (with them), then the critical-difference diagram across both
ALL_FIGURES = [*FIGURES_PER_TASK, *FIGURES_PER_TASK, "fraction", "cd"]


@pytest.fixture(scope="module")
def results_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two tasks: `chest` names its task in a column, `derm` only through its dir name (CSV only)."""
    root = tmp_path_factory.mktemp("results")
    write_results(root / "chest", make_rows("chest"))
    write_results(root / "derm", make_rows(None, seed_offset=1, fractions=True), parquet=False)
    return root


@pytest.fixture(scope="module")
def report_page(results_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_report([results_root], tmp_path_factory.mktemp("report") / "report")


@pytest.fixture(scope="module")
def partial_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A crashed fold, a failed run, a missing metric column and an unreadable table."""
    root = tmp_path_factory.mktemp("partial")
    rows = make_rows("chest")
    rows = rows[~((rows["backbone"] == "resnet50") & (rows["method"] == "lora") & (rows["fold"] == 3))].copy()
    failed = (rows["backbone"] == "dinov2-vitb14") & (rows["method"] == "fft") & (rows["fold"] == 1)
    rows.loc[failed, "status"] = "failed"
    rows.loc[failed, "error"] = "Traceback (most recent call last):\n  ...\nRuntimeError: CUDA out of memory\n"
    rows.loc[failed, ["mcc", "pr_auc"]] = np.nan
    write_results(root / "chest", rows)
    write_results(root / "derm", make_rows(None, seed_offset=2).drop(columns=["pr_auc"]), parquet=False)
    (root / "crashed").mkdir()
    (root / "crashed" / "results.csv").write_text("")
    return root


def test_better_on_every_fold_wins_and_ties_do_not(results_root: Path) -> None:
    ok = load_results([results_root / "chest"]).ok
    pairs = pairwise_tests(ok).set_index(["backbone", "a", "b"])
    for backbone in BACKBONES:
        assert pairs.loc[(backbone, "logreg", "lora"), "winner"] == "lora"  # better on every fold
        assert pairs.loc[(backbone, "logreg", "lora"), "p_holm"] < 0.05
        assert pairs.loc[(backbone, "fft", "logreg"), "winner"] == "tie"  # identical on every fold
        assert pairs.loc[(backbone, "fft", "logreg"), "p"] == 1.0
        assert pairs.loc[(backbone, "knn", "logreg"), "winner"] == "tie"  # +-0.01 alternating: no direction
    # methods are only compared within one data regime: no full-vs-few-shot pairs
    assert not any("shot" in a or "shot" in b for _, a, b in pairs.index)
    summary = summary_table(ok)
    best = summary[summary["best"]]
    assert sorted(best["backbone"]) == sorted(BACKBONES)
    assert set(best["method"]) == {"lora"}


def test_summary_statistics_are_exact() -> None:
    assert holm(np.array([0.01, 0.04, 0.03])) == pytest.approx([0.03, 0.06, 0.06])
    assert nemenyi_cd(3, 10) == pytest.approx(2.343 * math.sqrt(12 / 60), rel=1e-3)  # Demsar 2006 table


def test_friedman_ranks_the_consistently_better_strategy_first(results_root: Path) -> None:
    by_regime = {r.regime: r for r in friedman_by_regime(load_results([results_root]).ok)}
    assert "full (trained on train)" in by_regime and "4-shot (trained on train)" in by_regime
    result = by_regime["full (trained on train)"]  # one test per regime: few-shot logreg is no competitor here
    assert "logreg 4-shot" not in result.mean_ranks.index
    assert result.ok and result.pvalue < 0.05
    assert result.n_blocks == 2 * len(BACKBONES)
    assert result.mean_ranks.index[0] == "lora" and result.mean_ranks.iloc[0] == 1.0
    assert result.mean_ranks["fft"] == result.mean_ranks["logreg"]  # exact tie shares a rank


def test_friedman_tie_everywhere_is_not_significant() -> None:
    rows = [
        {
            "task": "t",
            "backbone": b,
            "method": m,
            "regime": "full",
            "shots": 0,
            "seed": 0,
            "fold": 0,
            "mcc": 0.5,
            "pr_auc": 0.7,
        }
        for b in ("a", "b", "c")
        for m in ("x", "y", "z")
    ]
    result = friedman(pd.DataFrame(rows))
    assert result.ok and result.pvalue == 1.0


def test_task_falls_back_to_dir_name_and_cnn_split(results_root: Path) -> None:
    ok = load_results([results_root]).ok
    assert set(ok["task"]) == {"chest", "derm"}
    assert (ok.loc[ok["method"] == "logreg", "pct_trainable"] == 0).all()  # probe = head only
    assert is_cnn("resnet50") and is_cnn("medclip-resnet") and is_cnn("densenet121")
    assert not is_cnn("dinov2-vitb14") and not is_cnn("biomedclip")


def test_cnn_split_follows_the_backbone_registry_family(monkeypatch) -> None:
    """Every registered backbone is classified by its ``BackboneSpec.family``; an open spec by the family its
    resolver infers; a name the registry cannot resolve is "unknown" and counted with the foundation models."""
    import dataclasses

    from medtransfer.backbones import REGISTRY
    from medtransfer.backbones.registry import OPEN_SPEC_RESOLVERS
    from medtransfer.report.load import _family, backbone_family

    for name, spec in REGISTRY.items():
        assert backbone_family(name) == spec.family and is_cnn(name) == (spec.family == "cnn"), name
    cnn_spec = REGISTRY["resnet18"]
    monkeypatch.setitem(OPEN_SPEC_RESOLVERS, "fake", lambda rest: dataclasses.replace(
        cnn_spec, name=f"fake:{rest}", family="vit" if rest.startswith("vit") else "cnn"))
    _family.cache_clear()
    try:
        assert is_cnn("fake:convnet") and not is_cnn("fake:vit-b")
        assert backbone_family("no-such-backbone") == "unknown" and not is_cnn("no-such-backbone")
    finally:
        _family.cache_clear()


def test_report_files_are_self_contained(report_page: Path) -> None:
    assert report_page.name == "index.html"
    text = report_page.read_text(encoding="utf-8")
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", text), "page must not load anything from the network"
    assert "<script src" not in text and "@import" not in text
    kinds = re.findall(r'data-figure="([a-z_]+)"', text)
    assert kinds == ALL_FIGURES
    assert text.count('<img src="data:image/svg+xml;base64,') == len(kinds)
    tables = report_page.parent / "tables"
    summary = pd.read_csv(tables / "summary.csv")
    assert len(summary) == len(BACKBONES) * (7 + 9) and "logreg 10% data" in set(summary["strategy"])
    assert summary["best"].sum() == 2 * len(BACKBONES)
    latex = (tables / "summary.tex").read_text()
    assert r"\toprule" in latex and r"\textbf{" in latex and "medclip-resnet" in latex
    assert r"\bottomrule" in (tables / "pairwise.tex").read_text()
    assert pd.read_csv(tables / "friedman.csv")["strategy"].iloc[0] == "lora"
    assert "Nothing missing" in text


def test_partial_results_still_render_and_list_what_is_missing(partial_root: Path, tmp_path: Path) -> None:
    page = build_report([partial_root], tmp_path / "out")
    text = page.read_text(encoding="utf-8")
    missing = (tmp_path / "out" / "tables" / "missing.txt").read_text()
    for expected in (
        "chest/dinov2-vitb14/fft full: 2 run(s) failed (seed 0 fold 1, seed 1 fold 1): "
        "RuntimeError: CUDA out of memory",
        "chest/resnet50/lora full: missing seed 0 fold 3, seed 1 fold 3",
        "metric column 'pr_auc' missing",
        "crashed/results.csv: unreadable",
    ):
        assert expected in missing
        assert expected in text.replace("&#x27;", "'")
    assert len(missing.splitlines()) == 4  # grouped: no line per fold or per run without pr_auc
    assert "derm" in text and "chest" in text  # both tasks still reported
    assert re.findall(r'data-figure="([a-z_]+)"', text).count("trainable") == 2


def test_empty_results_render(tmp_path: Path) -> None:
    header = "backbone,method,regime,shots,seed,fold,mcc,pr_auc,roc_auc,balanced_accuracy,n_train,n_test,fit_seconds\n"
    (tmp_path / "res").mkdir()
    (tmp_path / "res" / "results.csv").write_text(header)
    page = build_report(tmp_path / "res", tmp_path / "out")
    text = page.read_text()
    assert "No usable results" in text and "results table is empty" in text
    assert "Friedman test not run" in text
    assert "(no usable results)" in summarize(tmp_path / "res")


def test_user_errors_raise_medtransfer_error(tmp_path: Path) -> None:
    with pytest.raises(MedtransferError, match="not found"):
        build_report([tmp_path / "nope"], tmp_path / "out")
    (tmp_path / "empty").mkdir()
    with pytest.raises(MedtransferError, match="no results table"):
        summarize(tmp_path / "empty")


def test_summarize_prints_key_table(results_root: Path) -> None:
    text = summarize(results_root / "chest")
    lines = [line for line in text.splitlines() if line.startswith("chest  resnet50")]
    assert len(lines) == 7
    assert "lora" in lines[0] and lines[0].endswith("*")  # best first, marked
    assert "head" in text and "MCC" in text and "PR-AUC" in text


def _chromium() -> str:
    binary = shutil.which("chromium")
    if binary is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is not installed (CI must run: apt-get install -y chromium)")
        pytest.skip("chromium not installed; apt-get install -y chromium")
    return binary


FIGURES_JS = """Array.from(document.querySelectorAll('figure.report-figure')).map(function (f) {
  var img = f.querySelector('img');
  return [f.dataset.figure, img.complete && img.naturalWidth > 100 && img.naturalHeight > 50];
})"""


def test_page_renders_in_headless_chromium(report_page: Path, partial_root: Path, tmp_path: Path) -> None:
    binary = _chromium()
    partial_page = build_report([partial_root], tmp_path / "partial")
    with Chromium(binary, tmp_path / "profile") as browser:
        session = browser.open_page(report_page.resolve().as_uri())
        assert browser.evaluate("document.documentElement.getAttribute('data-ready')", session) == "1"
        figures = browser.evaluate(FIGURES_JS, session)
        assert [kind for kind, _ in figures] == ALL_FIGURES
        assert all(decoded for _, decoded in figures), figures
        shot = browser.screenshot(session, ARTIFACTS / "report.png")
        print(f"\nreport screenshot: {shot}")

        # sortable: clicking "MCC mean ± std" twice sorts the first table by descending MCC
        sort = """(function () {
          var t = document.querySelector('table.summary'); var th = t.tHead.rows[0].cells[6];
          th.click(); th.click();
          return Array.from(t.tBodies[0].rows).map(function (r) { return parseFloat(r.cells[6].dataset.v); });
        })()"""
        values = browser.evaluate(sort, session)
        assert values == sorted(values, reverse=True) and len(values) == 21
        # filters: one task hides the other task's section; one backbone hides other backbones' rows
        filt = """(function () {
          var s = document.getElementById('filter-task'); s.value = 'derm'; s.dispatchEvent(new Event('change'));
          var b = document.getElementById('filter-backbone'); b.value = 'resnet50';
          b.dispatchEvent(new Event('change'));
          var visible = Array.from(document.querySelectorAll('section.task')).filter(function (x) {
            return !x.hidden; }).map(function (x) { return x.dataset.task; });
          var rows = Array.from(document.querySelectorAll('section[data-task=derm] table.summary tbody tr'))
            .filter(function (r) { return !r.hidden; }).map(function (r) { return r.dataset.backbone; });
          return [visible, Array.from(new Set(rows))];
        })()"""
        assert browser.evaluate(filt, session) == [["derm"], ["resnet50"]]

        session = browser.open_page(partial_page.resolve().as_uri())
        assert browser.evaluate("document.documentElement.getAttribute('data-ready')", session) == "1"
        assert browser.evaluate("document.querySelectorAll('#missing li').length", session) >= 4
        assert all(decoded for _, decoded in browser.evaluate(FIGURES_JS, session))
        browser.screenshot(session, ARTIFACTS / "report-partial.png")
        assert browser.errors() == []
