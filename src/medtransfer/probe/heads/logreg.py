"""L2 logistic regression. C is the inverse L2 strength in scikit-learn's convention (objective
``0.5 ||w||^2 + C sum_i sw_i loss_i`` on preprocessed features): small C, strong penalty. Its whole (task x C) grid
is solved at once by the batched torch solver (``probe.solvers.logreg.fit_logreg_tasks``); ``make`` gives the
equivalent scikit-learn estimator."""

from __future__ import annotations

from sklearn.base import BaseEstimator
from sklearn.linear_model import LogisticRegression

from medtransfer.probe.registry import register_head
from medtransfer.probe.solvers.logreg import fit_logreg_tasks
from medtransfer.vocabulary import LOGREG_C_GRID


def make_logreg(C: float, class_weight: str | None = None) -> BaseEstimator:
    """scikit-learn's estimator for the same objective (C: inverse L2 strength; small C, strong penalty)."""
    return LogisticRegression(C=C, class_weight=class_weight, max_iter=2000)


register_head(
    name="logreg",
    description="L2 logistic regression; C (inverse L2 strength) tuned; whole grid solved at once in torch",
    make=make_logreg,
    grid=({"C": c} for c in LOGREG_C_GRID),
    fitter=fit_logreg_tasks,
)
