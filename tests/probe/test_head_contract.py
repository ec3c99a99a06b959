"""The contract every probe head keeps (as scikit-learn's ``estimator_checks`` does for estimators), run over
every registered head -- so a new head is checked without editing this file -- and over a throwaway head
registered here by a fixture, which ``medtransfer probe`` then runs through the CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
from probe_support import setup
from sklearn.naive_bayes import GaussianNB

from medtransfer.probe.context import FeatureMatrix, HeadFit, ProbeContext
from medtransfer.probe.fitting import fit_tasks
from medtransfer.probe.heads import HEADS, HeadSpec, head_help, register_head
from medtransfer.probe.options import ProbeOptions
from medtransfer.splits.tasks import tasks_for
from medtransfer.testing.features import make_features, write_label_splits

# (head, check) -> why that check does not apply to it
EXCLUSIONS: dict[tuple[str, str], str] = {
    ("centroid", "class_weighting"): "one prototype per class: class weights change nothing (sample_weight=False)",
}
CHECKS = ("fits_every_task", "deterministic", "multiclass", "class_weighting")


def _context(tmp_path, *, n_classes=2, class_weight="balanced", imbalance=False):
    x, y = make_features(n=120, d=8, n_classes=n_classes)
    if imbalance:  # 3:1 classes, so that class weighting has something to do
        y = np.where(np.arange(len(y)) % 4 == 0, 1, 0)
        x = x + 0.8 * y[:, None]
    splits = write_label_splits(tmp_path / f"splits-{n_classes}-{imbalance}.json", y, n_folds=2, shots=(4,), seeds=1)
    ids = list(splits.labels)
    ctx = ProbeContext(backbone="tiny", embedding="", data=FeatureMatrix.create(x, y, ids), splits=splits,
                       options=ProbeOptions(class_weight=class_weight))
    return ctx, tasks_for(splits, ("full", "fewshot"))


def _fits(spec: HeadSpec, ctx, tasks) -> list[HeadFit]:
    outcomes = list(fit_tasks(spec, ctx, tasks))
    assert len(outcomes) == len(tasks), "one outcome per task, in order"
    assert all(isinstance(o, HeadFit) for o in outcomes), [o for o in outcomes if isinstance(o, str)]
    return outcomes


def check_head(spec: HeadSpec, check: str, tmp_path) -> None:
    if check == "fits_every_task":
        assert spec.description and "\n" not in spec.description
        assert spec.grid and all(isinstance(p, dict) for p in spec.grid)
        for params in spec.grid:
            model = spec.make(**params)
            assert hasattr(model, "fit") and (hasattr(model, "predict_proba") or hasattr(model, "decision_function"))
        ctx, tasks = _context(tmp_path)
        fits = _fits(spec, ctx, tasks)
        for fit, task in zip(fits, tasks, strict=True):
            assert fit.test_proba.shape == (len(task.test), ctx.n_classes)
            assert np.isfinite(fit.test_proba).all() and (fit.test_proba >= -1e-12).all()
            np.testing.assert_allclose(fit.test_proba.sum(1), 1.0, atol=1e-5)
            chosen = {k: v for k, v in fit.params.items() if k in spec.grid[0]}
            assert chosen in [dict(p) for p in spec.grid] and json.dumps(fit.params)
            assert fit.n_train >= len(task.train) and fit.seconds >= 0
            assert (fit.tune_labels is None) == (fit.tune_proba is None)
            if fit.tune_labels is not None:
                assert fit.tune_proba.shape == (len(fit.tune_labels), ctx.n_classes)
        full = [j for j, t in enumerate(tasks) if t.regime == "full"]  # learns: well above chance, separable data
        assert np.mean([_accuracy(fits[j], ctx, tasks[j]) for j in full]) > 0.7
    elif check == "deterministic":
        ctx, tasks = _context(tmp_path)
        tasks = [t for t in tasks if t.regime == "full"]
        first, second = _fits(spec, ctx, tasks), _fits(spec, ctx, tasks)
        for a, b in zip(first, second, strict=True):
            np.testing.assert_allclose(a.test_proba, b.test_proba, atol=1e-6)  # svm, forests: float noise
            assert a.params == b.params
    elif check == "multiclass":
        ctx, tasks = _context(tmp_path, n_classes=3)
        tasks = [t for t in tasks if t.regime == "full"]
        for fit, task in zip(_fits(spec, ctx, tasks), tasks, strict=True):
            assert fit.test_proba.shape == (len(task.test), 3)
            np.testing.assert_allclose(fit.test_proba.sum(1), 1.0, atol=1e-5)
    elif check == "class_weighting":
        weighted, tasks = _context(tmp_path, imbalance=True)
        plain, _ = _context(tmp_path, imbalance=True, class_weight="none")
        full = [t for t in tasks if t.regime == "full"]
        a, b = _fits(spec, weighted, full), _fits(spec, plain, full)
        assert any(not np.allclose(x.test_proba, y.test_proba) for x, y in zip(a, b, strict=True)), \
            "class_weight=balanced changed nothing"


def _accuracy(fit: HeadFit, ctx, task) -> float:
    return float((fit.test_proba.argmax(1) == ctx.y_all[ctx.index(task.test)]).mean())


@pytest.mark.parametrize("check", CHECKS)
@pytest.mark.parametrize("name", sorted(HEADS))
def test_registered_head_keeps_the_contract(name, check, tmp_path, short_grids):
    if (name, check) in EXCLUSIONS:
        pytest.skip(EXCLUSIONS[(name, check)])
    check_head(short_grids[name], check, tmp_path)


def test_exclusions_name_registered_heads_and_checks():
    assert all(head in HEADS and check in CHECKS and reason for (head, check), reason in EXCLUSIONS.items())


@pytest.fixture()
def throwaway_head():
    """A head that exists for one test: one ``register_head`` call, as a head file makes it, removed afterwards.
    It has no ``fitter``, so it fits task by task through scikit-learn."""
    spec = register_head(name="gnb-throwaway", description="Gaussian naive Bayes; variance smoothing tuned",
                         make=lambda var_smoothing: GaussianNB(var_smoothing=var_smoothing),
                         grid=({"var_smoothing": 1e-9}, {"var_smoothing": 1e-3}))
    yield spec
    del HEADS[spec.name]


@pytest.mark.parametrize("check", CHECKS)
def test_a_new_head_is_one_registration(throwaway_head, check, tmp_path):
    check_head(throwaway_head, check, tmp_path)


def test_a_new_head_runs_through_the_cli(throwaway_head, cli, tmp_path):
    assert "gnb-throwaway: Gaussian naive Bayes" in head_help()
    store, splits, _, _ = setup(tmp_path, n_folds=2, shots=(4,), seeds=1)
    result = cli("probe", "--store", store, "--splits", splits, "--backbone", "tiny", "--head", "gnb-throwaway",
                 "--out", tmp_path / "out")
    assert result.exit_code == 0, result.output
    import pandas as pd

    table = pd.read_csv(tmp_path / "out" / "results.csv")
    assert set(table["method"]) == {"gnb-throwaway"} and (table["status"] == "ok").all()
    assert len(table) == 2 * 2 and (table.loc[table["regime"] == "full", "mcc"] > 0.6).all()
    help_text = cli("probe", "--help").output
    assert "gnb-throwaway" in help_text


def test_an_unknown_head_names_the_registered_ones(cli, tmp_path):
    store, splits, _, _ = setup(tmp_path, n_folds=2, shots=(), seeds=1)
    result = cli("probe", "--store", store, "--splits", splits, "--backbone", "tiny", "--head", "nope",
                 "--out", tmp_path / "out")
    assert result.exit_code == 2 and "unknown probe head 'nope'" in result.output
    assert all(name in result.output for name in HEADS)


@pytest.mark.parametrize("name", sorted(HEADS))
def test_every_head_learns_a_separable_four_shot_task(name, tmp_path):
    """A few-shot baseline that cannot split is no baseline (issue 30): on well-separated classes, every head's
    4-shot fits (8 training rows) reach a mean test MCC above 0.5 with its whole registered grid."""
    from medtransfer.metrics import compute_metrics

    x, y = make_features(n=120, d=8, separation=12.0, seed=1)
    splits = write_label_splits(tmp_path / "splits.json", y, n_folds=2, shots=(4,), seeds=2)
    ctx = ProbeContext(backbone="tiny", embedding="", data=FeatureMatrix.create(x, y, list(splits.labels)),
                       splits=splits, options=ProbeOptions())
    tasks = tasks_for(splits, ("fewshot",))
    fits = _fits(HEADS[name], ctx, tasks)
    mccs = [compute_metrics(ctx.y_all[ctx.index(t.test)], f.test_proba)["mcc"]
            for f, t in zip(fits, tasks, strict=True)]
    assert np.mean(mccs) > 0.5, (name, mccs)
