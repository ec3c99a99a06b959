"""The boosting heads (hgb, xgb) as ``GridSolver``s for ``probe.grid_driver``: each (job, candidate) is still one
estimator, but early-stopped on the job's held-out rows (the fold's val rows or the inner-CV eval rows; never
test rows) instead of a fixed number of rounds for every candidate; the rounds it settles on are recorded and
reused by the refit on train + val. XGBoost runs on the GPU (``device="cuda"``) when torch sees one.

Sources: HistGradientBoostingClassifier.fit takes ``X_val`` / ``y_val`` / ``sample_weight_val`` for its early
stopping (scikit-learn >= 1.4, https://scikit-learn.org/stable/modules/generated/
sklearn.ensemble.HistGradientBoostingClassifier.html); XGBClassifier's ``early_stopping_rounds`` with
``eval_set`` and ``best_iteration`` (https://xgboost.readthedocs.io/en/stable/python/python_api.html).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from medtransfer.probe.context import ProbeContext
from medtransfer.probe.features import apply_preprocess
from medtransfer.probe.grid_driver import GridJob, to_full
from medtransfer.weighting import sample_weights

if TYPE_CHECKING:
    from medtransfer.probe.heads import HeadSpec

MAX_ROUNDS = 300  # the ceiling early stopping works under
PATIENCE = 10  # rounds without improvement of the held-out loss


def _gpu() -> bool:
    import torch

    return torch.cuda.is_available()


class BoostingModel:
    """One early-stopped estimator per (job, candidate)."""

    def __init__(self, head: HeadSpec, ctx: ProbeContext, jobs: list[GridJob]):
        self.ctx, self.jobs, self.models, self.rounds, self.classes, self.fitted = ctx, jobs, {}, {}, {}, {}
        weighted = head.sample_weight and ctx.options.balanced
        for j, job in enumerate(jobs):
            held = job.stop_rows if job.stop_rows is not None and len(job.stop_rows) else None
            x_fit, others = apply_preprocess(ctx.x_all[job.rows], [] if held is None else [ctx.x_all[held]],
                                             ctx.options.steps)
            y = ctx.y_all[job.rows]
            classes = np.unique(y)
            codes = np.searchsorted(classes, y)
            sw = _weights(codes) if weighted else None
            self.classes[j] = classes
            for position, candidate in enumerate(job.candidates):
                params = head.grid[candidate]
                fixed = job.settled[position]["rounds"] if job.settled else None
                stop = None
                if held is not None and fixed is None:
                    keep = np.isin(ctx.y_all[held], classes)  # a held-out class the fit never saw cannot score
                    stop = (others[0][keep], np.searchsorted(classes, ctx.y_all[held][keep]))
                model, rounds = _fit(head.name, params, x_fit, codes, sw, stop=stop, rounds=fixed)
                self.models[(j, position)], self.rounds[(j, position)] = model, rounds

    def proba(self, jobs: Sequence[int], rows: np.ndarray) -> list[np.ndarray]:
        out = []
        for j in jobs:
            _, (x,) = apply_preprocess(self.ctx.x_all[self.jobs[j].rows], [self.ctx.x_all[rows]],
                                       self.ctx.options.steps)
            per = [self.models[(j, p)].predict_proba(x) for p in range(len(self.jobs[j].candidates))]
            out.append(to_full(np.stack(per), self.classes[j], self.ctx.n_classes))
        return out

    def settled(self, job: int, position: int) -> dict:
        return {"rounds": int(self.rounds[(job, position)])}


def _weights(codes: np.ndarray) -> np.ndarray:
    return sample_weights(codes, int(codes.max()) + 1, "balanced")


def _fit(name: str, params: dict, x, codes, sw, *, stop, rounds):
    """(fitted estimator, rounds used): early-stopped on ``stop`` (x, codes) when given, else ``rounds``."""
    n_rounds = rounds or MAX_ROUNDS
    if name == "xgb":
        from xgboost import XGBClassifier

        model = XGBClassifier(n_estimators=n_rounds, tree_method="hist", n_jobs=2, random_state=0, verbosity=0,
                              device="cuda" if _gpu() else "cpu",
                              early_stopping_rounds=PATIENCE if stop is not None and len(np.unique(stop[1])) > 1
                              else None, **params)
        can_stop = model.get_params()["early_stopping_rounds"] is not None
        model.fit(x, codes, sample_weight=sw,
                  eval_set=[stop] if can_stop else None, verbose=False)
        return model, (model.best_iteration + 1) if can_stop else n_rounds
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
    return model, model.n_iter_


def fit_boosting(head: HeadSpec, ctx: ProbeContext, jobs: list[GridJob]) -> BoostingModel:
    return BoostingModel(head, ctx, jobs)
