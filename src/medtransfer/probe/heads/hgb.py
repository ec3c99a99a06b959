"""Histogram gradient boosting, early-stopped on the val loss, its grid searched by successive halving over rounds."""

from __future__ import annotations

from sklearn.ensemble import HistGradientBoostingClassifier

from medtransfer.probe.grid_driver import grid_fitter
from medtransfer.probe.registry import candidate_grid, register_head

register_head(
    name="hgb",
    description="histogram gradient boosting, early-stopped on val loss; learning rate and leaves tuned by "
                "successive halving over rounds; min_samples_leaf shrinks below 160 rows (recorded per row)",
    make=lambda learning_rate, max_leaf_nodes: HistGradientBoostingClassifier(
        learning_rate=learning_rate, max_leaf_nodes=max_leaf_nodes, max_iter=100, early_stopping=False,
        random_state=0),
    grid=candidate_grid(max_leaf_nodes=(7, 31), learning_rate=(0.05, 0.2)),
    fitter=grid_fitter("medtransfer.probe.solvers.boosting", "fit_boosting"),
    halving="rounds",
    spreads=True,
)
