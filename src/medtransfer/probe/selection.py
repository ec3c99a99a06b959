"""Choosing among a head's candidates on held-out rows: the one rule every head shares (batched or not)."""

from __future__ import annotations

import numpy as np

from medtransfer.metrics import confusion, mcc_from_confusion, predict_labels


def fast_mcc(labels: np.ndarray, proba: np.ndarray, threshold: float = 0.5) -> float:
    n_classes = proba.shape[-1]
    return float(mcc_from_confusion(confusion(labels, predict_labels(proba, threshold), n_classes)))


def choose_on_val(val_labels: np.ndarray, val_proba: np.ndarray) -> int:
    """Index of the best validation MCC (threshold 0.5 / argmax) over the grid; ties broken by the lower
    validation log loss (then the earlier, more regularized candidate) -- so a grid where every candidate
    separates the validation rows does not fall back to the most shrunk, least calibrated one."""
    return int(choose_many(val_labels, np.asarray(val_proba)[None])[0])


def choose_many(val_labels: np.ndarray, val_proba: np.ndarray) -> np.ndarray:
    """``choose_on_val`` for many jobs scored on the same rows at once: ``val_proba`` [J, P, n, K] -> [J]
    candidate indexes. Every (job, candidate) MCC comes from confusion counts in one pass (no per-candidate
    scikit-learn or Python call), which is what a batched head's selection costs."""
    proba = np.asarray(val_proba)
    labels = np.asarray(val_labels, dtype=np.int64)
    n_classes = proba.shape[-1]
    # metrics.predict_labels at threshold 0.5
    predicted = (proba[..., 1] >= 0.5).astype(np.int64) if n_classes == 2 else proba.argmax(-1)
    cells = labels * n_classes + predicted  # [J, P, n]
    flat = cells.reshape(-1, cells.shape[-1]) + (np.arange(cells[..., 0].size) * n_classes**2)[:, None]
    counts = np.bincount(flat.ravel(), minlength=cells[..., 0].size * n_classes**2)
    mcc = mcc_from_confusion(counts.reshape(*cells.shape[:-1], n_classes, n_classes))  # [J, P]
    tied = mcc >= mcc.max(-1, keepdims=True) - 1e-12
    picked = np.take_along_axis(proba, labels[None, None, :, None], axis=-1)[..., 0]  # [J, P, n]
    log_loss = -np.log(np.clip(picked, 1e-15, 1)).mean(-1)
    rank = np.cumsum(tied, axis=-1) - 1  # position among the tied: the earlier wins an exact log-loss tie
    return np.where(tied, log_loss + 1e-12 * rank, np.inf).argmin(-1)
