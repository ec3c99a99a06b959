"""XGBoost (hist), early-stopped on the val loss, its grid searched by successive halving over rounds."""

from __future__ import annotations

from medtransfer.probe.grid_driver import grid_fitter
from medtransfer.probe.registry import candidate_grid, register_head


def make_xgb(max_depth: int, learning_rate: float):
    """Imported when a fit needs it: listing the heads does not import xgboost."""
    from xgboost import XGBClassifier

    return XGBClassifier(n_estimators=150, max_depth=max_depth, learning_rate=learning_rate, tree_method="hist",
                         n_jobs=2, random_state=0, verbosity=0)


register_head(
    name="xgb",
    description="XGBoost (hist; GPU when present), early-stopped on val loss; depth and learning rate tuned by "
                "successive halving over rounds; min_child_weight shrinks below 40 rows (recorded per row)",
    make=make_xgb,
    grid=candidate_grid(max_depth=(2, 4, 6), learning_rate=(0.1, 0.3)),
    fitter=grid_fitter("medtransfer.probe.solvers.boosting", "fit_boosting"),
    halving="rounds",
    spreads=True,
)
