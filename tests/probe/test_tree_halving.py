"""Successive halving over the tree heads' grids and tasks spread over worker processes: the schedule, the
ranking rule, that the chosen forest is the one fitted at once, that test rows never reach halving, that rows
record it, and that results are the same with one worker or two."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
from probe_support import poisoned_contexts, setup

from medtransfer.probe import run_probe
from medtransfer.probe.fitting import fit_tasks
from medtransfer.probe.halving import rank_on_val, schedule
from medtransfer.probe.heads import HEADS
from medtransfer.probe.selection import choose_on_val
from medtransfer.probe.workers import fit_spread

TREES = ("rf", "extratrees", "hgb", "xgb")


def _small(name: str, trees: int = 18):
    """A tree head with its whole grid and a small forest (halving still has three stages)."""
    spec = HEADS[name]
    if spec.halving != "trees":
        return spec
    make = spec.make
    return dataclasses.replace(spec, make=lambda **p: make(**p).set_params(n_estimators=trees))


def test_schedule_follows_the_factor():
    assert schedule(4, 200) == schedule(4, 200, halving=True)
    plan = schedule(4, 200)
    assert plan.budgets == (22, 67, 200) and plan.alive == (4, 2, 1)
    assert schedule(6, 300).budgets == (33, 100, 300) and schedule(6, 300).alive == (6, 2, 1)
    assert schedule(2, 300).alive == (2, 1)
    assert schedule(1, 300).budgets == (300,) and schedule(4, 200, halving=False).budgets == (200,)
    assert plan.describe("trees") == "eta 3: trees 22/67/200, candidates 4/2/1"


def test_ranking_puts_first_what_choose_on_val_picks():
    rng = np.random.default_rng(0)
    for _ in range(30):
        labels = rng.integers(0, 2, 20)
        proba = rng.dirichlet([1, 1], size=(5, 20))
        proba[2] = proba[1]  # a tie: the earlier candidate
        assert rank_on_val(labels, proba)[0] == choose_on_val(labels, proba)


@pytest.mark.parametrize("tune", ["val", "cv"])
@pytest.mark.parametrize("name", TREES)
def test_test_rows_never_reach_halving(name, tune, tmp_path):
    """The whole grid (three halving stages): poisoned test rows change neither what halving kept nor what
    tuning chose, nor the tuning rows' probabilities."""
    spec = _small(name)
    clean, poisoned, tasks, _ = poisoned_contexts(tmp_path, tune=tune)
    a, b = list(fit_tasks(spec, clean, tasks)), list(fit_tasks(spec, poisoned, tasks))
    for fit_a, fit_b in zip(a, b, strict=True):
        assert not isinstance(fit_a, str), fit_a
        assert fit_a.params == fit_b.params
        assert fit_a.params["halving"].startswith("eta 3: ")
        np.testing.assert_allclose(fit_a.tune_proba, fit_b.tune_proba, atol=1e-9)


def test_the_chosen_forest_is_the_forest_fitted_at_once(tmp_path):
    """Halving decides which candidate gets all its trees; that forest (grown in stages) equals a plain fit."""
    from medtransfer.probe.sklearn_fit import fit_estimator, full_proba

    spec = _small("rf")
    ctx, _, tasks, _ = poisoned_contexts(tmp_path)
    task = next(t for t in tasks if t.regime == "fewshot")
    (fit,) = fit_tasks(spec, ctx, [task])
    params = {k: fit.params[k] for k in spec.grid[0]}
    rows = ctx.index(task.train)
    x = ctx.x_all[rows]
    mu, sd = x.mean(0), np.where(x.std(0) > 1e-12, x.std(0), 1.0)
    plain = fit_estimator(spec, ctx, params, (x - mu) / sd, ctx.y_all[rows])
    expected = full_proba(plain, (ctx.x_all[ctx.index(task.test)] - mu) / sd, ctx.n_classes)
    np.testing.assert_allclose(fit.test_proba, expected, atol=1e-12)


@pytest.mark.parametrize("name", TREES)
def test_one_worker_or_two_give_the_same_results(name, tmp_path):
    spec = _small(name)
    one, _, tasks, _ = poisoned_contexts(tmp_path)
    two = dataclasses.replace(one, options=dataclasses.replace(one.options, workers=2))
    a, b = fit_spread(spec, one, tasks), fit_spread(spec, two, tasks)
    for fit_a, fit_b in zip(a, b, strict=True):
        assert fit_a.params == fit_b.params
        np.testing.assert_array_equal(fit_a.test_proba, fit_b.test_proba)


def test_rows_record_halving_and_the_cli_turns_it_off(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from medtransfer.cli import app

    monkeypatch.setitem(HEADS, "extratrees", _small("extratrees"))
    store, splits, _, _ = setup(tmp_path, n_folds=2, shots=(2,), seeds=1)
    table = run_probe(store, splits, ["tiny"], tmp_path / "on", heads=["extratrees"], progress=False)
    chosen = [json.loads(h) for h in table["hyperparameters"]]
    assert all(h["halving"] == "eta 3: trees 2/6/18, candidates 4/2/1" for h in chosen)
    args = ["probe", "--store", store, "--splits", splits, "--backbone", "tiny", "--head", "extratrees",
            "--out", tmp_path / "off", "--no-halving", "--workers", "2"]
    result = CliRunner().invoke(app, [str(a) for a in args], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    off = __import__("pandas").read_csv(tmp_path / "off" / "results.csv")
    assert all("halving" not in json.loads(h) for h in off["hyperparameters"])
    assert set(off["config"]).isdisjoint(set(table["config"]))  # another search: another settings hash
