"""Classification metrics of one fitted model on one test set; macro-averaged when there are >2 classes.

Binary: the positive class is class 1 and a sample is predicted positive when P(class 1) >= threshold;
multi-class: the most probable class (the threshold does not apply). Sensitivity / specificity / F1 are those
of class 1 (binary) or the macro average over classes, each class against the rest (multi-class). Brier score:
mean squared error of P(class 1) (binary) or the multi-class Brier score sum_k (p_k - y_k)^2 averaged over
samples. ECE: 15 equal-width bins of the top-label confidence, |accuracy - confidence| weighted by bin size.
"""

from __future__ import annotations

import warnings

import numpy as np
from sklearn.exceptions import UndefinedMetricWarning
from sklearn.metrics import average_precision_score, roc_auc_score

METRICS = (
    "mcc", "pr_auc", "roc_auc", "balanced_accuracy", "f1", "sensitivity", "specificity", "brier", "ece",
)
ECE_BINS = 15


def predict_labels(probabilities: np.ndarray, threshold: float = 0.5) -> np.ndarray:
    """Binary: positive when P(class 1) >= threshold; multi-class: the most probable class."""
    if probabilities.shape[1] == 2:
        return (probabilities[:, 1] >= threshold).astype(int)
    return probabilities.argmax(axis=1)


def is_degenerate(predicted: np.ndarray, probabilities: np.ndarray | None = None) -> bool:
    """A fit that learnt nothing: one class predicted for every test sample (MCC 0 whatever the data), or the
    same probabilities for every sample (ROC-AUC 0.5). Such a row is ok as a fit, but flagged, not ranked as
    if it had learnt something."""
    if len(predicted) < 2:
        return False
    if len(np.unique(predicted)) == 1:
        return True
    return probabilities is not None and bool(np.ptp(np.asarray(probabilities), axis=0).max() < 1e-9)


def confusion(labels: np.ndarray, predicted: np.ndarray, n_classes: int) -> np.ndarray:
    return np.bincount(labels * n_classes + predicted, minlength=n_classes * n_classes).reshape(n_classes, n_classes)


def mcc_from_confusion(cm: np.ndarray) -> np.ndarray:
    """Matthews correlation (multi-class R_K) of one [K, K] or a stack [..., K, K] of confusion matrices."""
    cm = np.asarray(cm, dtype=float)
    t = cm.sum(-1)  # true counts per class
    p = cm.sum(-2)  # predicted counts per class
    c = np.trace(cm, axis1=-2, axis2=-1)
    s = cm.sum((-2, -1))
    numerator = c * s - (t * p).sum(-1)
    denominator = np.sqrt(s**2 - (p * p).sum(-1)) * np.sqrt(s**2 - (t * t).sum(-1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denominator > 0, numerator / np.where(denominator > 0, denominator, 1), 0.0)


def expected_calibration_error(labels: np.ndarray, probabilities: np.ndarray, bins: int = ECE_BINS) -> float:
    confidence = probabilities.max(axis=1)
    correct = probabilities.argmax(axis=1) == labels
    which = np.minimum((confidence * bins).astype(int), bins - 1)
    total = 0.0
    for b in range(bins):
        in_bin = which == b
        if in_bin.any():
            total += in_bin.sum() * abs(correct[in_bin].mean() - confidence[in_bin].mean())
    return float(total / max(len(labels), 1))


def compute_metrics(labels: np.ndarray, probabilities: np.ndarray, threshold: float = 0.5) -> dict[str, float]:
    """Every metric in METRICS; NaN where a metric is undefined (e.g. AUCs on a one-class test set)."""
    labels = np.asarray(labels, dtype=int)
    probabilities = np.asarray(probabilities, dtype=float)
    n_classes = probabilities.shape[1]
    predicted = predict_labels(probabilities, threshold)
    cm = confusion(labels, predicted, n_classes)
    tp = np.diag(cm).astype(float)
    actual = cm.sum(1).astype(float)
    said = cm.sum(0).astype(float)
    total = cm.sum()
    with np.errstate(invalid="ignore", divide="ignore"):
        recall = np.where(actual > 0, tp / actual, np.nan)
        precision = np.where(said > 0, tp / np.where(said > 0, said, 1), 0.0)
        f1 = np.where(precision + np.nan_to_num(recall) > 0,
                      2 * precision * recall / (precision + recall), 0.0)
        negatives = total - actual
        true_negatives = total - actual - said + tp
        specificity = np.where(negatives > 0, true_negatives / np.where(negatives > 0, negatives, 1), np.nan)
    onehot = np.eye(n_classes)[labels]
    if n_classes == 2:
        sens, spec, f1_value = recall[1], specificity[1], f1[1]
        brier = float(np.mean((probabilities[:, 1] - labels) ** 2))
    else:
        sens, spec = np.nanmean(recall), np.nanmean(specificity)
        f1_value = np.mean(f1[actual > 0]) if (actual > 0).any() else np.nan
        brier = float(np.mean(((probabilities - onehot) ** 2).sum(1)))
    result = {
        "mcc": float(mcc_from_confusion(cm)),
        "balanced_accuracy": float(np.nanmean(recall)),
        "f1": float(f1_value),
        "sensitivity": float(sens),
        "specificity": float(spec),
        "brier": brier,
        "ece": expected_calibration_error(labels, probabilities),
    }
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UndefinedMetricWarning)
        warnings.simplefilter("ignore", RuntimeWarning)
        if len(np.unique(labels)) < 2:
            result.update(pr_auc=float("nan"), roc_auc=float("nan"))
        elif n_classes == 2:
            result["pr_auc"] = float(average_precision_score(labels, probabilities[:, 1]))
            result["roc_auc"] = float(roc_auc_score(labels, probabilities[:, 1]))
        else:
            present = actual > 0
            result["pr_auc"] = float(average_precision_score(onehot[:, present], probabilities[:, present],
                                                             average="macro"))
            result["roc_auc"] = float(np.mean([roc_auc_score(onehot[:, k], probabilities[:, k])
                                               for k in np.flatnonzero(present)]))
    return {name: result[name] for name in METRICS}


def bootstrap_mcc_ci(
    runs: list[tuple[np.ndarray, np.ndarray]], n_classes: int, n_boot: int = 1000, level: float = 0.95, seed: int = 0
) -> tuple[float, float]:
    """Percentile CI of the mean MCC over ``runs`` (one (labels, predicted) pair per fold/seed): each replicate
    resamples every run's test samples with replacement (stratified by nothing) and averages the runs' MCCs."""
    if not runs:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    means = np.zeros(n_boot)
    for labels, predicted in runs:
        n = len(labels)
        if n == 0:
            continue
        idx = rng.integers(0, n, size=(n_boot, n))
        codes = labels[idx] * n_classes + predicted[idx]
        offsets = (np.arange(n_boot) * n_classes * n_classes)[:, None]
        cms = np.bincount((codes + offsets).ravel(), minlength=n_boot * n_classes * n_classes)
        means += mcc_from_confusion(cms.reshape(n_boot, n_classes, n_classes))
    means /= len(runs)
    alpha = (1 - level) / 2
    return float(np.quantile(means, alpha)), float(np.quantile(means, 1 - alpha))
