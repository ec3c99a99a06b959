"""Ridge classifier (one-vs-rest least squares); its grid solved in closed form for every task at once."""

from __future__ import annotations

import numpy as np
from sklearn.linear_model import RidgeClassifier

from medtransfer.probe.grid_driver import grid_fitter
from medtransfer.probe.registry import register_head

register_head(
    name="ridge",
    description="ridge classifier (one-vs-rest least squares); alpha tuned; margins as probabilities",
    make=lambda alpha: RidgeClassifier(alpha=alpha),
    grid=({"alpha": float(a)} for a in np.logspace(4, -2, 7)),
    fitter=grid_fitter("medtransfer.probe.solvers.ridge", "fit_ridge"),
)
