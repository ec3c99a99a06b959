"""Class weights, defined once for probe heads and adapt's loss, so "balanced" means the same in both."""

from __future__ import annotations

import numpy as np

from medtransfer.errors import MedtransferError
from medtransfer.vocabulary import CLASS_WEIGHTS


def class_weights(labels: np.ndarray, n_classes: int, rule: str = "balanced") -> np.ndarray:
    """Per-class weights [n_classes]. "balanced" is scikit-learn's ``n / (K n_c)`` with K the classes present
    (``sklearn.utils.class_weight.compute_class_weight``); a class absent from ``labels`` weighs 0. "none": ones."""
    if rule not in CLASS_WEIGHTS:
        raise MedtransferError(f"unknown class weight {rule!r}; use {', '.join(CLASS_WEIGHTS)}")
    labels = np.asarray(labels, dtype=np.int64)
    if rule == "none":
        return np.ones(n_classes)
    counts = np.bincount(labels, minlength=n_classes).astype(float)
    present = int((counts > 0).sum())
    return np.where(counts > 0, len(labels) / (max(present, 1) * np.maximum(counts, 1)), 0.0)


def sample_weights(labels: np.ndarray, n_classes: int, rule: str = "balanced") -> np.ndarray:
    """Per-sample weights [n]: each sample weighs its class's weight."""
    labels = np.asarray(labels, dtype=np.int64)
    return class_weights(labels, n_classes, rule)[labels]
