"""Decision thresholds: 0.5, or the one that maximizes MCC on the fold's validation rows (binary tasks only).

The threshold is a property of the fitted probe chosen without test rows: ``val-mcc`` scans every distinct
validation probability of class 1 as a cut (``P >= t`` is positive) and keeps the best validation MCC, ties
going to the cut nearest 0.5. Multi-class tasks predict the most probable class (threshold NaN).
"""

from __future__ import annotations

import numpy as np

from medtransfer.errors import MedtransferError
from medtransfer.metrics import mcc_from_confusion

RULES = ("0.5", "val-mcc")


def check_rule(rule: str) -> str:
    rule = str(rule)
    if rule in ("0.5", "default", "fixed"):
        return "0.5"
    if rule not in RULES:
        raise MedtransferError(f"unknown --threshold {rule!r}; choose 0.5 or val-mcc")
    return rule


def choose_threshold(rule: str, val_labels: np.ndarray | None, val_probabilities: np.ndarray | None) -> float:
    """The decision threshold on P(class 1) under ``rule``; only validation rows may be passed here."""
    rule = check_rule(rule)
    if val_probabilities is not None and val_probabilities.shape[1] != 2:
        return float("nan")
    if rule == "0.5" or val_labels is None or len(val_labels) == 0:
        return 0.5
    return best_mcc_threshold(np.asarray(val_labels, dtype=int), val_probabilities[:, 1])


def best_mcc_threshold(labels: np.ndarray, scores: np.ndarray) -> float:
    cuts = np.unique(np.concatenate([scores, [0.5]]))
    positive = scores[None, :] >= cuts[:, None]  # [n_cuts, n]
    tp = (positive & (labels == 1)).sum(1)
    fp = (positive & (labels == 0)).sum(1)
    fn = (labels == 1).sum() - tp
    tn = (labels == 0).sum() - fp
    cms = np.stack([np.stack([tn, fp], -1), np.stack([fn, tp], -1)], -2)
    mcc = mcc_from_confusion(cms)
    best = np.flatnonzero(mcc >= mcc.max() - 1e-12)
    return float(cuts[best[np.argmin(np.abs(cuts[best] - 0.5))]])
