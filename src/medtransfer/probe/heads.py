"""The probe-classifier registry: each head is a scikit-learn estimator factory plus its tuning grid.

Adding a head is one ``register_head(HeadSpec(...))``. Features are standardized on the training rows
inside the pipeline, so no statistic of validation or test rows leaks into the fit.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from sklearn.base import BaseEstimator
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from medtransfer.errors import MedtransferError


@dataclass(frozen=True)
class HeadSpec:
    name: str
    description: str
    make: Callable[..., BaseEstimator]  # keyword hyperparameters -> unfitted estimator with predict_proba
    grid: tuple[dict, ...]  # candidates, tried in order; ties go to the earlier (simpler) one


HEADS: dict[str, HeadSpec] = {}


def register_head(spec: HeadSpec) -> HeadSpec:
    if spec.name in HEADS:
        raise ValueError(f"probe head {spec.name!r} registered twice")
    HEADS[spec.name] = spec
    return spec


def get_head(name: str) -> HeadSpec:
    if name not in HEADS:
        raise MedtransferError(f"unknown probe head {name!r}; known: {', '.join(sorted(HEADS))}")
    return HEADS[name]


def _logreg(C: float, class_weight: str | None = "balanced") -> BaseEstimator:
    return make_pipeline(
        StandardScaler(),
        LogisticRegression(C=C, class_weight=class_weight, max_iter=2000),
    )


# C is the inverse L2 strength on standardized features (scikit-learn's convention): small C, strong penalty.
register_head(
    HeadSpec(
        name="logreg",
        description="L2 logistic regression on standardized features; C tuned on the fold's validation rows",
        make=_logreg,
        grid=tuple({"C": float(c)} for c in np.logspace(-4, 3, 8)),
    )
)
