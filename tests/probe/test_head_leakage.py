"""Nothing of a fold's test rows reaches that fold's fits, on every head's own path (batched or task by task),
every tuning mode, halving on and off: with half of a fold's test rows poisoned (features set to +/-6e4,
labels flipped), every number the fold's tasks report -- the choice, the tuning rows' probabilities, the
linear weights, the clean test rows' probabilities -- is bitwise what it was. Every fold's tasks share the
call, as in ``run_probe``, so that batching across folds (whose training rows hold the poisoned ones) is
exercised too."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from probe_support import poisoned_contexts

from medtransfer.probe.fitting import fit_tasks
from medtransfer.probe.heads import HEADS

TUNES = ("val", "cv", "budget")
# halving only means something for the tree heads: the others run once, with the default
CASES = [(name, halving) for name in sorted(HEADS) for halving in ((True, False) if HEADS[name].halving else (True,))]


def fit_as_run_probe(spec, ctx, tasks):
    """Fits of ``tasks`` in order, dispatched as ``probe.run._run_head`` does (``budget``: few-shot tasks tuned
    by inner CV, full ones on val)."""
    out = {}
    for tuning in sorted({ctx.options.tuning_for(t) for t in tasks}):
        picked = [i for i, t in enumerate(tasks) if ctx.options.tuning_for(t) == tuning]
        tuned = dataclasses.replace(ctx, options=dataclasses.replace(ctx.options, tune=tuning))
        out.update(zip(picked, fit_tasks(spec, tuned, [tasks[i] for i in picked]), strict=True))
    return [out[i] for i in range(len(tasks))]


@pytest.mark.parametrize("tune", TUNES)
@pytest.mark.parametrize(("name", "halving"), CASES)
def test_test_rows_never_reach_their_fold(name, halving, tune, tmp_path, short_grids):
    spec = short_grids[name]
    clean = None
    for fold in (0, 1):
        case = poisoned_contexts(tmp_path, fold=fold, every_fold=True, tune=tune, halving=halving)
        if clean is None:
            clean = fit_as_run_probe(spec, case.clean, case.tasks)
        poisoned = fit_as_run_probe(spec, case.poisoned, case.tasks)
        assert {t.fold for t in case.tasks} == {0, 1}
        moved = False
        for a, b, task in zip(clean, poisoned, case.tasks, strict=True):
            assert not isinstance(a, str) and not isinstance(b, str), (a, b)
            if task.fold != fold:
                continue
            where = (name, tune, halving, task.regime, task.fold)
            assert a.params == b.params, where
            np.testing.assert_array_equal(a.tune_labels, b.tune_labels, err_msg=str(where))
            np.testing.assert_array_equal(a.tune_proba, b.tune_proba, err_msg=str(where))
            np.testing.assert_array_equal(a.test_proba[case.kept], b.test_proba[case.kept], err_msg=str(where))
            assert (a.linear is None) == (b.linear is None)
            if a.linear is not None:
                for got, expected in zip(a.linear, b.linear, strict=True):
                    np.testing.assert_array_equal(got, expected, err_msg=str(where))
            moved |= not np.array_equal(a.test_proba[~case.kept], b.test_proba[~case.kept])
        assert moved, "the poisoned rows should score differently: the poison did not reach the features"


@pytest.mark.parametrize("preprocess", ["standardize", "standardize+pca4"])
@pytest.mark.parametrize("name", ["centroid", "knn", "ridge", "svm"])
def test_batched_exact_heads_match_the_task_by_task_loop(name, preprocess, tmp_path):
    """The closed-form / convex heads' batched paths give the scikit-learn loop's choices and probabilities."""
    from medtransfer.probe.sklearn_fit import fit_each_task

    clean, _, tasks, _ = poisoned_contexts(tmp_path, tune="val", preprocess=preprocess)
    spec = HEADS[name]
    ours, loop = list(fit_tasks(spec, clean, tasks)), list(fit_each_task(spec, clean, tasks))
    for a, b in zip(ours, loop, strict=True):
        assert {k: a.params[k] for k in spec.grid[0]} == {k: b.params[k] for k in spec.grid[0]}
        # svm: liblinear stops at its own tolerance, the batched solver at the minimizer; ridge: float32 rounding
        np.testing.assert_allclose(a.test_proba, b.test_proba, atol={"svm": 5e-2, "ridge": 1e-4}.get(name, 1e-5))
