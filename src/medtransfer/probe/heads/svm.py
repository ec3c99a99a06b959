"""Linear SVM (LinearSVC's squared hinge), through the linear heads' batched solver."""

from __future__ import annotations

import numpy as np
from sklearn.svm import LinearSVC

from medtransfer.probe.registry import register_head
from medtransfer.probe.solvers.logreg import fit_svm_tasks

register_head(
    name="svm",
    description="linear SVM (squared hinge); C tuned; probabilities are sigmoid/softmax of margins",
    make=lambda C: LinearSVC(C=C, max_iter=5000),
    grid=({"C": float(c)} for c in np.logspace(-4, 1, 6)),
    fitter=fit_svm_tasks,
)
