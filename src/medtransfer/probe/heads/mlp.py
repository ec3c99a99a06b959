"""One-hidden-layer MLP, full-batch adam early-stopped on the val loss; every (task, alpha) trained batched."""

from __future__ import annotations

from sklearn.neural_network import MLPClassifier

from medtransfer.probe.grid_driver import grid_fitter
from medtransfer.probe.registry import register_head

register_head(
    name="mlp",
    description="one-hidden-layer MLP (256 units, full-batch adam, early-stopped on val loss); L2 alpha tuned",
    make=lambda alpha: MLPClassifier(hidden_layer_sizes=(256,), alpha=alpha, max_iter=200, random_state=0),
    grid=({"alpha": a} for a in (1.0, 1e-2, 1e-4)),
    fitter=grid_fitter("medtransfer.probe.solvers.mlp", "fit_mlp"),
)
