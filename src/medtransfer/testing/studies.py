"""Simulated studies of two equal methods on one data set with real folds: every fold's methods are fitted on
that fold's training rows (most of the data set, shared with the other folds), so the fold differences are
correlated as they are in a real k-fold study -- which the report's paired test must allow for (issue 25).

A study: ``n`` samples of two balanced classes, ``2 m`` features, each shifted by ``delta`` in class 1. Method
A is a nearest-centroid classifier on the first ``m`` features, method B the same on the last ``m``: equal in
distribution over data sets, so any difference a study finds is chance. Stratified folds (redrawn per repeat);
full data fits on the fold's training rows, few-shot on ``shots`` per class of them (``seeds`` draws, averaged
within the fold as the report does). Each fold scores MCC on its test rows. Vectorized over studies."""

from __future__ import annotations

import numpy as np


def _mcc(y: np.ndarray, pred: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """MCC over ``rows`` (a [S, n] mask) of predictions [S, n]: 0 where undefined."""
    count = lambda p, t: (rows & (pred == p) & (y == t)).sum(-1).astype(float)  # noqa: E731
    tp, tn, fp, fn = count(1, 1), count(0, 0), count(1, 0), count(0, 1)
    den = np.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, (tp * tn - fp * fn) / np.where(den > 0, den, 1), 0.0)


def _centroid_scores(x, y, fit, test, m):
    """MCC on ``test`` of the nearest-centroid rule fitted on ``fit`` rows, for each half of the features."""
    means = []
    for c in (0, 1):
        w = (fit & (y == c))[..., None]
        means.append((x * w).sum(1) / w.sum(1))
    direction, middle = means[1] - means[0], (means[1] + means[0]) / 2
    out = []
    for half in (slice(0, m), slice(m, 2 * m)):
        score = ((x[..., half] - middle[:, None, half]) * direction[:, None, half]).sum(-1)
        out.append(_mcc(y, (score > 0).astype(int), test))
    return out


def simulate_fold_differences(rng: np.random.Generator, studies: int, *, n: int = 100, k: int = 10,
                              repeats: int = 1, shots: int = 0, seeds: int = 3, m: int = 5, delta: float = 0.5,
                              gap: float = 0.0) -> np.ndarray:
    """Fold-level MCC differences A - B [studies, repeats * k]. ``gap`` > 0 gives method A's features that
    much more class shift (a true difference, for checking the test has power)."""
    y = np.tile([0, 1], n // 2)[None]
    shift = np.r_[np.full(m, delta + gap), np.full(m, delta)]
    x = rng.normal(size=(studies, n, 2 * m)) + shift * y[..., None]
    diffs = []
    for _ in range(repeats):
        fold_of = np.empty((studies, n), dtype=int)
        for c in (0, 1):
            members = np.flatnonzero(y[0] == c)
            fold_of[:, members] = np.argsort(rng.random((studies, len(members))), axis=1) % k
        for f in range(k):
            test = fold_of == f
            train = ~test
            fits = [train]
            if shots:
                fits = []
                for _seed in range(seeds):
                    keep = np.zeros_like(train)
                    for c in (0, 1):
                        draw = np.where(train & (y == c), rng.random(train.shape), -1.0)
                        np.put_along_axis(keep, np.argsort(-draw, axis=1)[:, :shots], True, axis=1)
                    fits.append(keep)
            per_fit = [np.subtract(*_centroid_scores(x, y, fit, test, m)) for fit in fits]
            diffs.append(np.mean(per_fit, axis=0))  # seeds averaged within the fold
    return np.stack(diffs, axis=1)
