"""The pieces the batched heads share, each against its plain counterpart: the batched selection rule
(``choose_many`` vs ``choose_on_val``), the stacked per-job preprocessing (``probe.solvers.stacked`` vs preprocessing
each job's rows explicitly), the per-job standardisation (vs scikit-learn's StandardScaler, constant features
included) and the exact Newton path for the SVM's few-shot problems (vs the L-BFGS solve)."""

import numpy as np
import pytest
import torch

from medtransfer.probe.features import fit_affine, fit_affines, parse_preprocess
from medtransfer.probe.fitting import fit_tasks
from medtransfer.probe.selection import choose_many, choose_on_val
from medtransfer.probe.solvers.hinge_newton import solve_squared_hinge
from medtransfer.probe.solvers.solver import DenseDesign, solve_logreg
from medtransfer.probe.solvers.stacked import StackedAffines


@pytest.mark.parametrize("n_classes", [2, 3])
def test_choose_many_is_choose_on_val_per_job(n_classes):
    rng = np.random.default_rng(0)
    for trial in range(60):
        n, n_cand = int(rng.integers(1, 25)), int(rng.integers(1, 6))
        labels = rng.integers(0, n_classes, n)
        proba = rng.dirichlet(np.ones(n_classes), size=(4, n_cand, n))
        if trial % 2:  # coarse probabilities: many MCC ties, decided by log loss or by order
            proba = np.round(proba, 1) + 1e-3
            proba /= proba.sum(-1, keepdims=True)
        if n_cand > 1 and trial % 3 == 0:
            proba[:, 1] = proba[:, 0]  # an exact tie: the earlier candidate
        assert list(choose_many(labels, proba)) == [choose_on_val(labels, p) for p in proba]


@pytest.mark.parametrize("preprocess", ["standardize", "standardize+pca3", "none"])
def test_stacked_affines_fold_each_jobs_preprocessing(preprocess):
    rng = np.random.default_rng(1)
    x = (rng.normal(size=(40, 6)) * 3 + 50).astype(np.float32)  # far from zero: the shift must hold up
    steps = parse_preprocess(preprocess)
    affines = [fit_affine(x[rows], steps) for rows in (np.arange(0, 12), np.arange(10, 30), np.arange(5, 40))]
    stack = StackedAffines(affines, device=torch.device("cpu"), dtype=torch.float64)
    rows = x[30:40]
    xs = stack.rows(rows, [0, 1, 2])
    us = [torch.as_tensor(rng.normal(size=(affines[0](rows[:1]).shape[1], m))) for m in (2, 3, 2)]
    projected = stack.project(xs, [0, 1, 2], us)
    norms = stack.sq_norms(xs, [2, 0]).numpy()
    explicit = [affine(rows.astype(np.float64)) for affine in affines]
    for z, u, got in zip(explicit, us, projected, strict=True):
        np.testing.assert_allclose(got.numpy(), z @ u.numpy(), rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(norms, np.stack([(explicit[j] ** 2).sum(1) for j in (2, 0)], axis=1), rtol=1e-9)


@pytest.mark.parametrize("n_classes", [2, 3])
def test_newton_squared_hinge_matches_lbfgs(n_classes):
    torch.manual_seed(0)
    z = torch.randn(5, 10, 10, dtype=torch.float64)
    y = torch.randint(0, n_classes, (5, 10))
    y[:, :n_classes] = torch.arange(n_classes)
    sw = torch.rand(5, 10, dtype=torch.float64) + 0.5
    sw[:, -2:] = 0  # padded rows
    cs = torch.tensor(np.logspace(-4, 1, 6)).expand(5, -1)
    ref = solve_logreg(DenseDesign(z), y, sw, cs, n_classes=n_classes, max_iter=5000, tol=1e-9,
                       loss="squared_hinge", penalize_intercept=True)
    newton = solve_squared_hinge(z, y, sw, cs, n_classes=n_classes, tol=1e-9)
    assert bool(newton.converged.all()) and newton.iterations < 20
    np.testing.assert_allclose(newton.w.numpy(), ref.w.numpy(), atol=1e-6)
    np.testing.assert_allclose(newton.b.numpy(), ref.b.numpy(), atol=1e-6)


@pytest.mark.parametrize("steps", [("standardize",), ("standardize", "pca3"), ("l2", "standardize"), ()])
def test_fit_affines_equals_one_fit_per_subset(steps):
    """The batched per-job standardisation gives each subset's own mean / std (repeated rows counted)."""
    from medtransfer.probe.features import fit_affine, fit_affines

    rng = np.random.default_rng(0)
    x = (rng.normal(size=(300, 20)) * 3 + 5).astype(np.float32)
    rows = [rng.choice(300, size=n, replace=False) for n in (2, 4, 8, 200)] + [np.array([1, 1, 2, 3])]
    for batched, single in zip(fit_affines(x, rows, steps), [fit_affine(x[r], steps) for r in rows], strict=True):
        np.testing.assert_allclose(batched.mu, single.mu, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(batched.a, single.a, rtol=1e-5)


def test_standardisation_is_standard_scaler_per_subset_with_constant_features():
    """Every subset's mean and scale are StandardScaler's on that subset's rows; a feature constant on the
    subset (other rows vary) keeps scale 1, as StandardScaler gives it (the old shifted E[x^2] - E[x]^2 left
    ~1e-20 of variance there: a scale of ~1e9). Fitting subsets together or alone gives the same bits."""
    from sklearn.preprocessing import StandardScaler

    rng = np.random.default_rng(3)
    for case in range(200):
        n, d = int(rng.integers(30, 120)), int(rng.integers(2, 9))
        x = (rng.normal(size=(n, d)) * rng.uniform(0.01, 3, d) + rng.normal(size=d) * 50).astype(np.float32)
        rows_of = [np.sort(rng.choice(n, int(rng.integers(2, n // 2)), replace=False)) for _ in range(3)]
        constant = int(rng.integers(d))
        x[rows_of[0], constant] = np.float32(rng.normal() * 10 ** rng.uniform(-3, 4))
        affines = fit_affines(x, rows_of, ("standardize",))
        for rows, affine in zip(rows_of, affines, strict=True):
            scaler = StandardScaler().fit(x[rows])
            np.testing.assert_allclose(affine.mu, scaler.mean_, rtol=1e-6, atol=1e-6, err_msg=str(case))
            np.testing.assert_allclose(1 / affine.a, scaler.scale_, rtol=1e-5, err_msg=str(case))
            alone = fit_affine(x[rows], ("standardize",))
            np.testing.assert_array_equal(alone.mu, affine.mu)
            np.testing.assert_array_equal(alone.a, affine.a)
        assert affines[0].a[constant] == 1.0, case


def test_a_constant_feature_leaves_the_centroid_head_as_standard_scaler_does(tmp_path):
    """A few-shot task whose training rows hold one feature constant: the batched centroid head's test
    probabilities are those of StandardScaler + the Prototype estimator fitted on that task alone."""
    import dataclasses

    from probe_support import poisoned_contexts
    from sklearn.preprocessing import StandardScaler

    from medtransfer.probe.heads import HEADS

    ctx, _, tasks, _ = poisoned_contexts(tmp_path)
    task = next(t for t in tasks if t.regime == "fewshot")
    train, test = ctx.index(task.train), ctx.index(task.test)
    x = ctx.x_all.copy()
    x[train, 2] = np.float32(37.3)  # constant on the training rows only
    ctx = dataclasses.replace(ctx, data=dataclasses.replace(ctx.data, x=x))
    spec = dataclasses.replace(HEADS["centroid"], grid=HEADS["centroid"].grid[:1])
    (fit,) = fit_tasks(spec, ctx, [task])
    x64 = x.astype(np.float64)
    scaler = StandardScaler().fit(x64[train])
    model = spec.make(**spec.grid[0]).fit(scaler.transform(x64[train]), ctx.y_all[train])
    np.testing.assert_allclose(fit.test_proba, model.predict_proba(scaler.transform(x64[test])), atol=1e-6)
