"""k nearest neighbours by cosine similarity, class-weighted votes; every (task, k) scored in batched GEMMs."""

from __future__ import annotations

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin

from medtransfer.probe.grid_driver import grid_fitter
from medtransfer.probe.registry import candidate_grid, register_head


class CosineKNN(ClassifierMixin, BaseEstimator):
    """k nearest neighbours by cosine similarity; votes weighted by sample weight (class weighting). The
    estimator fitted task by task; ``probe.solvers.neighbors.fit_knn`` computes the same votes batched."""

    def __init__(self, k: int = 5):
        self.k = k

    def fit(self, x, y, sample_weight=None):
        self.classes_ = np.unique(y)
        self.train_ = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
        self.codes_ = np.searchsorted(self.classes_, y)
        self.weight_ = np.ones(len(y)) if sample_weight is None else np.asarray(sample_weight, dtype=float)
        return self

    def predict_proba(self, x):
        k = min(self.k, len(self.codes_))
        sims = (x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)) @ self.train_.T
        top = np.argpartition(-sims, k - 1, axis=1)[:, :k]
        votes = np.zeros((len(x), len(self.classes_)))
        np.add.at(votes, (np.arange(len(x))[:, None], self.codes_[top]), self.weight_[top])
        return votes / np.maximum(votes.sum(1, keepdims=True), 1e-12)

    def predict(self, x):
        return self.classes_[self.predict_proba(x).argmax(1)]


register_head(
    name="knn",
    description="k nearest neighbours, cosine similarity, class-weighted votes; k tuned",
    make=lambda k: CosineKNN(k=k),
    grid=candidate_grid(k=(1, 3, 5, 11, 21)),
    fitter=grid_fitter("medtransfer.probe.solvers.neighbors", "fit_knn"),
)
