"""The forest heads (rf, extratrees) as a ``GridSolver`` for ``probe.grid_driver``: one estimator per (job,
candidate), grown tree by tree under the successive-halving schedule (``probe.halving``). A forest grown in
stages with ``warm_start`` is the forest fitted at once (same seeds, tree for tree), so halving only decides
which candidates get all their trees; the refit on train + val is one forest at the full count.

Source: ``warm_start`` on RandomForestClassifier / ExtraTreesClassifier adds ``n_estimators - len(estimators_)``
trees to the fitted ones (https://scikit-learn.org/stable/modules/ensemble.html#fitting-additional-trees).
"""

from __future__ import annotations

from medtransfer.probe.context import ProbeContext
from medtransfer.probe.grid_driver import GridJob, grid_fitter
from medtransfer.probe.halving import FitData, HalvingModel, estimator_threads
from medtransfer.probe.registry import HeadSpec, candidate_grid


class ForestGrower:
    resource = "trees"

    def __init__(self, threads: int):
        self.threads = threads

    def full(self, head: HeadSpec) -> int:
        return int(head.make(**head.grid[0]).get_params()["n_estimators"])

    def grow(self, head: HeadSpec, params: dict, data: FitData, budget: int, *, previous, fixed: dict):
        model = previous if previous is not None else head.make(**params)
        model.set_params(n_estimators=budget, warm_start=True, n_jobs=self.threads)
        model.fit(data.x, data.codes, sample_weight=data.sample_weight)
        # predict in one thread: threads add the trees' probabilities in whichever order they finish, so the
        # last bits would depend on the thread count (and on --workers); one thread adds them in tree order
        model.set_params(n_jobs=1)
        return model, {}


def fit_forest(head: HeadSpec, ctx: ProbeContext, jobs: list[GridJob]) -> HalvingModel:
    return HalvingModel(head, ctx, jobs, ForestGrower(estimator_threads(ctx)))


def forest_head(name: str, estimator: type, description: str) -> dict:
    """``register_head`` keywords of a 200-tree ensemble head (``heads/rf.py``, ``heads/extratrees.py``): the
    same grid, seed and parallelism for both."""
    return dict(
        name=name,
        description=f"{description} (200 trees); max_features and min_samples_leaf tuned by successive halving "
                    "over trees",
        make=lambda max_features, min_samples_leaf: estimator(
            n_estimators=200, max_features=max_features, min_samples_leaf=min_samples_leaf, n_jobs=-1,
            random_state=0),
        grid=candidate_grid(min_samples_leaf=(5, 1), max_features=("sqrt", 0.1)),
        fitter=grid_fitter("medtransfer.probe.solvers.forests", "fit_forest"),
        halving="trees",
        spreads=True,
    )
