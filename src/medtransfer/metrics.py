"""Classification metrics of one fitted model on one test set; macro-averaged when there are >2 classes.

Binary: the positive class is class 1 and a sample is predicted positive when P(class 1) >= threshold;
multi-class: the most probable class (the threshold does not apply). Sensitivity / specificity / F1 are those
of class 1 (binary) or the macro average over classes, each class against the rest (multi-class). Brier score:
mean squared error of P(class 1) (binary) or the multi-class Brier score sum_k (p_k - y_k)^2 averaged over
samples. ECE: 15 equal-width bins of the top-label confidence, |accuracy - confidence| weighted by bin size.
"""

from __future__ import annotations

import numpy as np

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
    if len(np.unique(labels)) < 2:
        result.update(pr_auc=float("nan"), roc_auc=float("nan"))
    elif n_classes == 2:
        result["pr_auc"] = float(average_precision(labels, probabilities[:, 1]))
        result["roc_auc"] = roc_auc(labels, probabilities[:, 1])
    else:  # macro over the classes present, each against the rest (scikit-learn's average="macro")
        present = np.flatnonzero(actual > 0)
        result["pr_auc"] = float(np.mean([average_precision((labels == k).astype(int), probabilities[:, k])
                                          for k in present]))
        result["roc_auc"] = float(np.mean([roc_auc((labels == k).astype(int), probabilities[:, k]) for k in present]))
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


def roc_auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Binary ROC-AUC from one sort: the Mann-Whitney statistic with tied scores at their mid-rank, which is the
    area under the trapezoidal ROC curve that scikit-learn's ``roc_auc_score`` integrates (equal to 1e-9, tested)."""
    labels = np.asarray(labels)
    scores = np.asarray(scores, dtype=float)
    order = np.argsort(scores, kind="stable")
    ordered = scores[order]
    starts = np.r_[0, np.flatnonzero(np.diff(ordered)) + 1]  # first index of each tied score
    sizes = np.diff(np.r_[starts, len(ordered)])
    ranks = np.empty(len(ordered))
    ranks[order] = np.repeat(starts + (sizes + 1) / 2.0, sizes)  # 1-based mid-ranks
    positive = labels == 1
    n_pos, n_neg = int(positive.sum()), int((~positive).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def average_precision(labels: np.ndarray, scores: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
    """scikit-learn's ``average_precision_score`` (sum over thresholds of recall step x precision, tied scores one
    threshold) from one sort; with ``weights`` ([n_boot, n] sample counts) for every replicate at once."""
    labels = np.asarray(labels)
    scores = np.asarray(scores, dtype=float)
    single = weights is None
    weights = np.ones((1, len(scores))) if single else weights
    order = np.argsort(-scores, kind="stable")
    positive = (labels[order] == 1).astype(float)
    w = weights[:, order]
    tp = np.cumsum(w * positive, axis=1)
    fp = np.cumsum(w * (1 - positive), axis=1)
    ends = np.r_[np.flatnonzero(np.diff(scores[order])), len(scores) - 1]  # last index of each tied score
    tp, fp = tp[:, ends], fp[:, ends]
    total = tp[:, -1]
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = np.where(tp + fp > 0, tp / (tp + fp), 0.0)
        step = np.diff(tp, axis=1, prepend=0.0) / total[:, None]
        value = np.where(total > 0, (step * precision).sum(1), np.nan)
    return value[0] if single else value
