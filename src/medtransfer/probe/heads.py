"""The probe-head registry: each head is an estimator factory plus a real hyperparameter grid.

Adding a head is one ``register_head(HeadSpec(...))``. Heads get features already preprocessed on the training
rows (see ``probe.features``). Class weighting ("balanced" by default: each class weighs n / (K n_c)) reaches a
head through ``fit(..., sample_weight=...)`` when ``sample_weight`` is True, or through the head's own
``class_weight`` argument; heads for which it means nothing say so in ``class_weighting``.

Grids are tried on the fold's validation rows (validation MCC); ties go to the lower validation log loss, then
to the earlier candidate, so each grid lists its simplest / most regularized candidate first.

``logreg``: C is the inverse L2 strength in scikit-learn's convention (objective ``0.5 ||w||^2 + C sum_i
sw_i loss_i`` on preprocessed features): small C, strong penalty. Its whole (task x C) grid is solved at once by
the batched torch solver (``probe.solver``); ``make`` gives the equivalent scikit-learn estimator.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.ensemble import (
    ExtraTreesClassifier,
    HistGradientBoostingClassifier,
    RandomForestClassifier,
)
from sklearn.linear_model import LogisticRegression, RidgeClassifier
from sklearn.neural_network import MLPClassifier
from sklearn.svm import LinearSVC

from medtransfer.registry import Registry


@dataclass(frozen=True)
class HeadSpec:
    name: str
    description: str
    make: Callable[..., BaseEstimator]  # keyword hyperparameters -> unfitted estimator
    grid: tuple[dict, ...]  # candidates, tried in order; ties go to the earlier (simpler) one
    sample_weight: bool = True  # class weighting passed as fit(sample_weight=...)
    batched: bool = False  # solved by the batched torch logistic-regression solver
    class_weighting: str = "sample weights"  # how "balanced" reaches the head (documentation)


HEADS: Registry[HeadSpec] = Registry("probe head", sort_known=True, known_suffix=" or all")


def register_head(spec: HeadSpec) -> HeadSpec:
    return HEADS.add(spec)


def get_head(name: str) -> HeadSpec:
    return HEADS.lookup(name)


def resolve_heads(names) -> list[HeadSpec]:
    names = [names] if isinstance(names, str) else list(names)
    if "all" in names:
        return list(HEADS.values())
    return [get_head(n) for n in dict.fromkeys(names)]


def _grid(**axes) -> tuple[dict, ...]:
    keys = list(axes)
    return tuple(dict(zip(keys, values, strict=True)) for values in itertools.product(*axes.values()))


def scores_to_proba(model, x: np.ndarray) -> np.ndarray:
    """predict_proba, or a sigmoid / softmax of decision_function (margins: ranks right, not calibrated)."""
    if hasattr(model, "predict_proba"):
        return model.predict_proba(x)
    decision = np.asarray(model.decision_function(x), dtype=float)
    if decision.ndim == 1:
        p1 = 1.0 / (1.0 + np.exp(-np.clip(decision, -50, 50)))
        return np.stack([1 - p1, p1], axis=1)
    decision = decision - decision.max(1, keepdims=True)
    e = np.exp(decision)
    return e / e.sum(1, keepdims=True)


class CosineKNN(ClassifierMixin, BaseEstimator):
    """k nearest neighbours by cosine similarity; votes weighted by sample weight (class weighting)."""

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


class Prototype(ClassifierMixin, BaseEstimator):
    """Nearest class centroid (the few-shot prototype classifier); P = softmax(-distance / temperature), the
    distance being squared Euclidean divided by the dimension, or cosine distance."""

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


def _logreg(C: float, class_weight: str | None = None) -> BaseEstimator:
    return LogisticRegression(C=C, class_weight=class_weight, max_iter=2000)


register_head(HeadSpec(
    name="logreg",
    description="L2 logistic regression; C (inverse L2 strength) tuned; whole grid solved at once in torch",
    make=_logreg,
    grid=tuple({"C": float(c)} for c in np.logspace(-4, 3, 8)),
    batched=True,
))
register_head(HeadSpec(
    name="svm",
    description="linear SVM (squared hinge); C tuned; probabilities are sigmoid/softmax of margins",
    make=lambda C: LinearSVC(C=C, max_iter=5000),
    grid=tuple({"C": float(c)} for c in np.logspace(-4, 1, 6)),
))
register_head(HeadSpec(
    name="knn",
    description="k nearest neighbours, cosine similarity, class-weighted votes; k tuned",
    make=lambda k: CosineKNN(k=k),
    grid=_grid(k=(1, 3, 5, 11, 21)),
))
register_head(HeadSpec(
    name="centroid",
    description="nearest class centroid (prototype); metric and softmax temperature tuned",
    make=lambda metric, temperature: Prototype(metric=metric, temperature=temperature),
    grid=_grid(metric=("euclidean", "cosine"), temperature=(1.0, 0.1, 0.01)),
    sample_weight=False,
    class_weighting="none needed: one prototype per class",
))
register_head(HeadSpec(
    name="ridge",
    description="ridge classifier (one-vs-rest least squares); alpha tuned; margins as probabilities",
    make=lambda alpha: RidgeClassifier(alpha=alpha),
    grid=tuple({"alpha": float(a)} for a in np.logspace(4, -2, 7)),
))
register_head(HeadSpec(
    name="rf",
    description="random forest (200 trees); max_features and min_samples_leaf tuned",
    make=lambda max_features, min_samples_leaf: RandomForestClassifier(
        n_estimators=200, max_features=max_features, min_samples_leaf=min_samples_leaf, n_jobs=-1, random_state=0),
    grid=_grid(min_samples_leaf=(5, 1), max_features=("sqrt", 0.1)),
))
register_head(HeadSpec(
    name="extratrees",
    description="extremely randomized trees (200 trees); max_features and min_samples_leaf tuned",
    make=lambda max_features, min_samples_leaf: ExtraTreesClassifier(
        n_estimators=200, max_features=max_features, min_samples_leaf=min_samples_leaf, n_jobs=-1, random_state=0),
    grid=_grid(min_samples_leaf=(5, 1), max_features=("sqrt", 0.1)),
))
register_head(HeadSpec(
    name="hgb",
    description="histogram gradient boosting (100 rounds); learning rate and leaves tuned",
    make=lambda learning_rate, max_leaf_nodes: HistGradientBoostingClassifier(
        learning_rate=learning_rate, max_leaf_nodes=max_leaf_nodes, max_iter=100, early_stopping=False,
        random_state=0),
    grid=_grid(max_leaf_nodes=(7, 31), learning_rate=(0.05, 0.2)),
))


def _xgb(max_depth: int, learning_rate: float):
    from xgboost import XGBClassifier

    return XGBClassifier(n_estimators=150, max_depth=max_depth, learning_rate=learning_rate, tree_method="hist",
                         n_jobs=2, random_state=0, verbosity=0)


register_head(HeadSpec(
    name="xgb",
    description="XGBoost (150 rounds, hist); depth and learning rate tuned",
    make=_xgb,
    grid=_grid(max_depth=(2, 4, 6), learning_rate=(0.1, 0.3)),
))
register_head(HeadSpec(
    name="mlp",
    description="one-hidden-layer MLP (256 units, adam, 200 epochs max); L2 alpha tuned",
    make=lambda alpha: MLPClassifier(hidden_layer_sizes=(256,), alpha=alpha, max_iter=200, random_state=0),
    grid=tuple({"alpha": a} for a in (1.0, 1e-2, 1e-4)),
))
