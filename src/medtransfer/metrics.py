"""Classification metrics of one fitted model on one test set; macro-averaged when there are >2 classes."""

from __future__ import annotations

import warnings

import numpy as np
from sklearn.exceptions import UndefinedMetricWarning
from sklearn.metrics import (
    average_precision_score,
    balanced_accuracy_score,
    matthews_corrcoef,
    roc_auc_score,
)

METRICS = ("mcc", "pr_auc", "roc_auc", "balanced_accuracy")


def predict_labels(probabilities: np.ndarray, threshold: float = 0.5) -> np.ndarray:
    """Binary: positive when P(class 1) >= threshold; multi-class: the most probable class."""
    if probabilities.shape[1] == 2:
        return (probabilities[:, 1] >= threshold).astype(int)
    return probabilities.argmax(axis=1)


def compute_metrics(labels: np.ndarray, probabilities: np.ndarray, threshold: float = 0.5) -> dict[str, float]:
    """MCC, PR-AUC (average precision), ROC-AUC and balanced accuracy; NaN where a metric is undefined."""
    labels = np.asarray(labels)
    n_classes = probabilities.shape[1]
    predicted = predict_labels(probabilities, threshold)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UndefinedMetricWarning)
        warnings.simplefilter("ignore", RuntimeWarning)
        result = {
            "mcc": float(matthews_corrcoef(labels, predicted)),
            "balanced_accuracy": float(balanced_accuracy_score(labels, predicted)),
        }
        if len(np.unique(labels)) < 2:
            result.update(pr_auc=float("nan"), roc_auc=float("nan"))
        elif n_classes == 2:
            result["pr_auc"] = float(average_precision_score(labels, probabilities[:, 1]))
            result["roc_auc"] = float(roc_auc_score(labels, probabilities[:, 1]))
        else:
            onehot = np.eye(n_classes)[labels]
            result["pr_auc"] = float(average_precision_score(onehot, probabilities, average="macro"))
            result["roc_auc"] = float(
                roc_auc_score(labels, probabilities, multi_class="ovr", average="macro", labels=range(n_classes))
            )
    return result
