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
    mcc = np.array([fast_mcc(val_labels, p) for p in val_proba])
    tied = np.flatnonzero(mcc >= mcc.max() - 1e-12)
    if len(tied) == 1:
        return int(tied[0])
    picked = np.take_along_axis(np.asarray(val_proba)[tied], val_labels[None, :, None].astype(int), axis=2)[..., 0]
    log_loss = -np.log(np.clip(picked, 1e-15, 1)).mean(1)
    return int(tied[np.argmin(log_loss + 1e-12 * np.arange(len(tied)))])
