"""The probe-head registry: each head is an estimator factory, a real hyperparameter grid, and its own way to
fit a list of tasks (``HeadSpec.fit_tasks``; by default task by task through scikit-learn, ``probe.sklearn_fit``).

Adding a head is one ``register_head(HeadSpec(...))`` (in this file for a shipped head); ``run_probe``, the
CLI's ``--head`` choices and help, and the head contract tests pick it up from the registry.

Heads get features already preprocessed on the training rows (see ``probe.features``). Class weighting
("balanced" by default: each class weighs n / (K n_c)) reaches a head through ``fit(..., sample_weight=...)``
when ``sample_weight`` is True, or through the head's own ``class_weight`` argument; heads for which it means
nothing say so in ``class_weighting``.

Grids are tried on the fold's validation rows (validation MCC); ties go to the lower validation log loss, then
to the earlier candidate, so each grid lists its simplest / most regularized candidate first. The tree heads
(rf, extratrees, hgb, xgb; ``halving`` names the resource) search their grid by successive halving
(``probe.halving``; ``--no-halving`` fits every candidate whole) and, being fitted task by task, can be spread over
worker processes (``spreads``, ``probe.workers``).

``logreg``: C is the inverse L2 strength in scikit-learn's convention (objective ``0.5 ||w||^2 + C sum_i
sw_i loss_i`` on preprocessed features): small C, strong penalty. Its whole (task x C) grid is solved at once by
the batched torch solver (its ``fitter`` is ``probe.logreg.fit_logreg_tasks``); ``make`` gives the equivalent
scikit-learn estimator.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable
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

from medtransfer.probe.context import HeadFit, ProbeContext
from medtransfer.probe.logreg import fit_logreg_tasks, fit_svm_tasks
from medtransfer.probe.sklearn_fit import fit_each_task, scores_to_proba
from medtransfer.registry import Registry
from medtransfer.splits.tasks import Task
from medtransfer.vocabulary import LOGREG_C_GRID

__all__ = ["HEADS", "CosineKNN", "HeadSpec", "Prototype", "get_head", "head_help", "register_head",
           "resolve_heads", "scores_to_proba"]

# (head, context, tasks) -> one HeadFit, or the reason the task failed, per task in order
Fitter = Callable[["HeadSpec", ProbeContext, list[Task]], Iterable["HeadFit | str"]]


@dataclass(frozen=True)
class HeadSpec:
    name: str
    description: str  # one line: the CLI's --help lists it
    make: Callable[..., BaseEstimator]  # keyword hyperparameters -> unfitted estimator
    grid: tuple[dict, ...]  # candidates, tried in order; ties go to the earlier (simpler) one
    sample_weight: bool = True  # class weighting passed as fit(sample_weight=...)
    class_weighting: str = "sample weights"  # how "balanced" reaches the head (documentation)
    fitter: Fitter = fit_each_task  # how this head fits a list of tasks (a strategy: see fit_tasks)
    halving: str = ""  # the resource successive halving hands out over the grid ("trees", "rounds"), or none
    spreads: bool = False  # its tasks are fitted independently: worth spreading over worker processes

    def fit_tasks(self, ctx: ProbeContext, tasks: list[Task]) -> Iterable[HeadFit | str]:
        """Fit every task (all fittable: ``run_probe`` has already failed the others); yields per task, in order,
        a ``HeadFit`` or the one-line reason this head could not fit it."""
        return self.fitter(self, ctx, tasks)


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


def head_help() -> str:
    """The CLI's --head help: every registered head with its one-line description."""
    return " | ".join(f"{spec.name}: {spec.description}" for spec in sorted(HEADS.values(), key=lambda h: h.name))


def batched_fitter(module: str, solver: str) -> Fitter:
    """A fitter through ``probe.grid_driver`` with the ``GridSolver`` ``module.solver``, imported when the head
    first fits (torch is not imported to list the heads)."""

    def fit(head: HeadSpec, ctx: ProbeContext, tasks: list[Task]) -> list[HeadFit | str]:
        import importlib

        from medtransfer.probe.grid_driver import fit_grid_tasks

        return fit_grid_tasks(head, ctx, tasks, getattr(importlib.import_module(module), solver))

    return fit


def _grid(**axes) -> tuple[dict, ...]:
    keys = list(axes)
    return tuple(dict(zip(keys, values, strict=True)) for values in itertools.product(*axes.values()))


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
    grid=tuple({"C": c} for c in LOGREG_C_GRID),
    fitter=fit_logreg_tasks,
))
register_head(HeadSpec(
    name="svm",
    description="linear SVM (squared hinge); C tuned; probabilities are sigmoid/softmax of margins",
    make=lambda C: LinearSVC(C=C, max_iter=5000),
    grid=tuple({"C": float(c)} for c in np.logspace(-4, 1, 6)),
    fitter=fit_svm_tasks,
))
register_head(HeadSpec(
    name="knn",
    description="k nearest neighbours, cosine similarity, class-weighted votes; k tuned",
    make=lambda k: CosineKNN(k=k),
    grid=_grid(k=(1, 3, 5, 11, 21)),
    fitter=batched_fitter("medtransfer.probe.neighbors", "fit_knn"),
))
register_head(HeadSpec(
    name="centroid",
    description="nearest class centroid (prototype); metric and softmax temperature tuned",
    make=lambda metric, temperature: Prototype(metric=metric, temperature=temperature),
    grid=_grid(metric=("euclidean", "cosine"), temperature=(1.0, 0.1, 0.01)),
    sample_weight=False,
    class_weighting="none needed: one prototype per class",
    fitter=batched_fitter("medtransfer.probe.neighbors", "fit_centroid"),
))
register_head(HeadSpec(
    name="ridge",
    description="ridge classifier (one-vs-rest least squares); alpha tuned; margins as probabilities",
    make=lambda alpha: RidgeClassifier(alpha=alpha),
    grid=tuple({"alpha": float(a)} for a in np.logspace(4, -2, 7)),
    fitter=batched_fitter("medtransfer.probe.ridge", "fit_ridge"),
))
def _forest(name: str, estimator: type, description: str) -> HeadSpec:
    """A 200-tree ensemble head (random forest, extra trees): the same grid, seed and parallelism for both."""
    return HeadSpec(
        name=name,
        description=f"{description} (200 trees); max_features and min_samples_leaf tuned by successive halving "
                    "over trees",
        make=lambda max_features, min_samples_leaf: estimator(
            n_estimators=200, max_features=max_features, min_samples_leaf=min_samples_leaf, n_jobs=-1,
            random_state=0),
        grid=_grid(min_samples_leaf=(5, 1), max_features=("sqrt", 0.1)),
        fitter=batched_fitter("medtransfer.probe.forests", "fit_forest"),
        halving="trees",
        spreads=True,
    )


register_head(_forest("rf", RandomForestClassifier, "random forest"))
register_head(_forest("extratrees", ExtraTreesClassifier, "extremely randomized trees"))
register_head(HeadSpec(
    name="hgb",
    description="histogram gradient boosting, early-stopped on val loss; learning rate and leaves tuned by "
                "successive halving over rounds; min_samples_leaf shrinks below 160 rows (recorded per row)",
    make=lambda learning_rate, max_leaf_nodes: HistGradientBoostingClassifier(
        learning_rate=learning_rate, max_leaf_nodes=max_leaf_nodes, max_iter=100, early_stopping=False,
        random_state=0),
    grid=_grid(max_leaf_nodes=(7, 31), learning_rate=(0.05, 0.2)),
    fitter=batched_fitter("medtransfer.probe.boosting", "fit_boosting"),
    halving="rounds",
    spreads=True,
))


def _xgb(max_depth: int, learning_rate: float):
    from xgboost import XGBClassifier

    return XGBClassifier(n_estimators=150, max_depth=max_depth, learning_rate=learning_rate, tree_method="hist",
                         n_jobs=2, random_state=0, verbosity=0)


register_head(HeadSpec(
    name="xgb",
    description="XGBoost (hist; GPU when present), early-stopped on val loss; depth and learning rate tuned by "
                "successive halving over rounds; min_child_weight shrinks below 40 rows (recorded per row)",
    make=_xgb,
    grid=_grid(max_depth=(2, 4, 6), learning_rate=(0.1, 0.3)),
    fitter=batched_fitter("medtransfer.probe.boosting", "fit_boosting"),
    halving="rounds",
    spreads=True,
))
register_head(HeadSpec(
    name="mlp",
    description="one-hidden-layer MLP (256 units, full-batch adam, early-stopped on val loss); L2 alpha tuned",
    make=lambda alpha: MLPClassifier(hidden_layer_sizes=(256,), alpha=alpha, max_iter=200, random_state=0),
    grid=tuple({"alpha": a} for a in (1.0, 1e-2, 1e-4)),
    fitter=batched_fitter("medtransfer.probe.mlp", "fit_mlp"),
))
