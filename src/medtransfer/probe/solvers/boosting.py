"""The boosting heads (hgb, xgb) as ``GridSolver``s for ``probe.grid_driver``: each (job, candidate) is still one
estimator, but early-stopped on the job's held-out rows (the fold's val rows or the inner-CV eval rows; never
test rows) instead of a fixed number of rounds for every candidate; the rounds it settles on are recorded and
reused by the refit on train + val. The grid is searched by successive halving over the round cap
(``probe.halving``). XGBoost runs on the GPU (``device="cuda"``) when torch sees one.

Sources: HistGradientBoostingClassifier.fit takes ``X_val`` / ``y_val`` / ``sample_weight_val`` for its early
stopping (scikit-learn >= 1.4, https://scikit-learn.org/stable/modules/generated/
sklearn.ensemble.HistGradientBoostingClassifier.html); XGBClassifier's ``early_stopping_rounds`` with
``eval_set`` and ``best_iteration`` (https://xgboost.readthedocs.io/en/stable/python/python_api.html).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np

from medtransfer.probe.context import ProbeContext
from medtransfer.probe.grid_driver import GridJob
from medtransfer.probe.halving import FitData, HalvingModel, estimator_threads
from medtransfer.probe.registry import HeadSpec
from medtransfer.weighting import sample_weights

MAX_ROUNDS = 300  # the ceiling early stopping works under
PATIENCE = 10  # rounds without improvement of the held-out loss


def _gpu() -> bool:
    import torch

    return torch.cuda.is_available()


class BoostingGrower:
    """Each candidate early-stopped under the stage's round cap (``probe.halving``); a fit that stopped before its
    cap would stop at the same round under a larger one, so it is kept as it is rather than fitted again."""

    resource = "rounds"

    def __init__(self, threads: int):
        self.threads = threads

    def full(self, head: HeadSpec) -> int:
        return MAX_ROUNDS

    def grow(self, head: HeadSpec, params: dict, data: FitData, budget: int, *, previous, fixed: dict):
        if previous is not None and previous.run < previous.cap:
            return previous, {"rounds": previous.used}
        rounds = fixed.get("rounds")
        leaf = leaf_limit(head.name, len(data.codes))
        model, used, run = _fit(head.name, {**params, **leaf}, data.x, data.codes, data.sample_weight,
                                stop=None if rounds else data.stop, rounds=rounds or budget, threads=self.threads)
        return _Fitted(model, int(used), int(run), rounds or budget), {"rounds": int(used), **leaf}


@dataclass(frozen=True)
class _Fitted:
    """A boosting fit with the rounds it settled on, ran, and was allowed."""

    model: object
    used: int
    run: int
    cap: int

    def predict_proba(self, x):
        return self.model.predict_proba(x)


# The libraries' leaf-size defaults: scikit-learn's HistGradientBoostingClassifier min_samples_leaf = 20
# (https://scikit-learn.org/stable/modules/generated/sklearn.ensemble.HistGradientBoostingClassifier.html), XGBoost's
# min_child_weight = 1, a hessian sum (https://xgboost.readthedocs.io/en/stable/parameter.html). With a few-shot
# task's 4-64 training rows neither can split (20 rows a leaf; a row's hessian p(1-p) <= 0.25), so every tree is a
# constant: the limit shrinks with the rows a fit gets, and the row's hyperparameters record the value used.
HGB_MIN_SAMPLES_LEAF = 20
XGB_MIN_CHILD_WEIGHT = 1.0


def leaf_limit(name: str, n_rows: int) -> dict:
    """The leaf-size setting a boosting fit on ``n_rows`` rows uses: the library default from 8 x 20 = 160 rows up
    (hgb), from 40 rows up (xgb); below that as small as lets a leaf of n_rows / 8 rows (hgb) or a child of a
    tenth of the rows at the smallest hessian (xgb) exist, so even a 2-shot task's trees can split."""
    if name == "xgb":
        return {"min_child_weight": float(min(XGB_MIN_CHILD_WEIGHT, n_rows / 40.0))}
    return {"min_samples_leaf": int(min(HGB_MIN_SAMPLES_LEAF, max(1, n_rows // 8)))}


def _weights(codes: np.ndarray) -> np.ndarray:
    return sample_weights(codes, int(codes.max()) + 1, "balanced")


def _fit(name: str, params: dict, x, codes, sw, *, stop, rounds, threads):
    """(fitted estimator, rounds used, rounds run): early-stopped on ``stop`` (x, codes) when given, within
    ``rounds``; exactly ``rounds`` without."""
    n_rounds = rounds or MAX_ROUNDS
    if name == "xgb":
        from xgboost import XGBClassifier

        model = XGBClassifier(n_estimators=n_rounds, tree_method="hist", n_jobs=None if threads < 0 else threads,
                              random_state=0, verbosity=0,
                              device="cuda" if _gpu() else "cpu",
                              early_stopping_rounds=PATIENCE if stop is not None and len(np.unique(stop[1])) > 1
                              else None, **params)
        can_stop = model.get_params()["early_stopping_rounds"] is not None
        model.fit(x, codes, sample_weight=sw,
                  eval_set=[stop] if can_stop else None, verbose=False)
        run = model.get_booster().num_boosted_rounds()
        return model, (model.best_iteration + 1) if can_stop else n_rounds, run
    from sklearn.ensemble import HistGradientBoostingClassifier

    can_stop = stop is not None and len(stop[1]) > 0
    model = HistGradientBoostingClassifier(max_iter=n_rounds, early_stopping=can_stop, n_iter_no_change=PATIENCE,
                                           scoring="loss", random_state=0, **params)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        if can_stop:
            val_w = _weights(stop[1]) if sw is not None and len(np.unique(stop[1])) > 1 else None
            model.fit(x, codes, sample_weight=sw, X_val=stop[0], y_val=stop[1], sample_weight_val=val_w)
        else:
            model.fit(x, codes, sample_weight=sw)
    return model, model.n_iter_, model.n_iter_


def fit_boosting(head: HeadSpec, ctx: ProbeContext, jobs: list[GridJob]) -> HalvingModel:
    return HalvingModel(head, ctx, jobs, BoostingGrower(estimator_threads(ctx)))
