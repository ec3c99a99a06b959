"""Nearest class centroid (the few-shot prototype classifier); every (task, metric, temperature) batched."""

from __future__ import annotations

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin

from medtransfer.probe.grid_driver import grid_fitter
from medtransfer.probe.registry import candidate_grid, register_head


class Prototype(ClassifierMixin, BaseEstimator):
    """Nearest class centroid; P = softmax(-distance / temperature), the distance being squared Euclidean divided
    by the dimension, or cosine distance. ``probe.solvers.neighbors.fit_centroid`` computes the same batched."""

    def __init__(self, metric: str = "euclidean", temperature: float = 1.0):
        self.metric, self.temperature = metric, temperature

    def fit(self, x, y, sample_weight=None):
        self.classes_ = np.unique(y)
        self.centroids_ = np.stack([x[y == c].mean(0) for c in self.classes_])
        return self

    def _distance(self, x):
        if self.metric == "cosine":
            a = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
            c = self.centroids_ / np.maximum(np.linalg.norm(self.centroids_, axis=1, keepdims=True), 1e-12)
            return 1 - a @ c.T
        d2 = (x**2).sum(1)[:, None] - 2 * x @ self.centroids_.T + (self.centroids_**2).sum(1)[None]
        return np.maximum(d2, 0) / x.shape[1]

    def predict_proba(self, x):
        logits = -self._distance(x) / self.temperature
        logits -= logits.max(1, keepdims=True)
        e = np.exp(logits)
        return e / e.sum(1, keepdims=True)

    def predict(self, x):
        return self.classes_[self.predict_proba(x).argmax(1)]


register_head(
    name="centroid",
    description="nearest class centroid (prototype); metric and softmax temperature tuned",
    make=lambda metric, temperature: Prototype(metric=metric, temperature=temperature),
    grid=candidate_grid(metric=("euclidean", "cosine"), temperature=(1.0, 0.1, 0.01)),
    sample_weight=False,
    class_weighting="none needed: one prototype per class",
    fitter=grid_fitter("medtransfer.probe.solvers.neighbors", "fit_centroid"),
)
