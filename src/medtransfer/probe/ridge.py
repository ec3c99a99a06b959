"""The ridge head batched (a ``GridSolver`` for ``probe.grid_driver``): every alpha of a job from one symmetric
eigendecomposition, of the d x d weighted covariance (primal) or, when the job has fewer rows than features
(few-shot), of the n x n Gram matrix (dual). The same solution as scikit-learn's RidgeClassifier:

    min_w,b  sum_i sw_i ||t_i - x_i w - b||^2 + alpha ||w||^2,   t_i in {-1, +1} per class column

(one column for a binary problem, one per class otherwise; the intercept from the weighted means, not
penalized: ``sklearn/linear_model/_ridge.py``, ``_BaseRidge.fit`` and ``RidgeClassifier`` with its
LabelBinarizer(pos_label=1, neg_label=-1)). Probabilities are the sigmoid / softmax of the margins, as
``sklearn_fit.scores_to_proba`` makes them for the task-by-task path."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import torch

from medtransfer.probe.context import ProbeContext
from medtransfer.probe.grid_driver import GridJob, to_full
from medtransfer.probe.prepared import PreparedJobs, cpu_threads
from medtransfer.probe.solver import softmax_probabilities

if TYPE_CHECKING:
    from medtransfer.probe.heads import HeadSpec


class RidgeModel:
    def __init__(self, head: HeadSpec, ctx: ProbeContext, jobs: list[GridJob]):
        self.prep = PreparedJobs(ctx, jobs)
        weighted = head.sample_weight and ctx.options.balanced
        self.classes, self.weights, self.offsets = [], [], []
        with cpu_threads():
            for j, job in enumerate(jobs):
                alphas = self.prep.tensor([head.grid[p]["alpha"] for p in job.candidates])
                z, y = self.prep.train(j)
                classes = np.unique(y)
                codes = np.searchsorted(classes, y)
                targets = np.eye(len(classes))[codes] * 2 - 1
                targets = targets[:, 1:] if len(classes) == 2 else targets  # binary: +1 for the second class
                sw = self.prep.tensor(self.prep.weights(j) if weighted else np.ones(len(y)))
                w, b = _ridge_path(z, self.prep.tensor(targets), sw, alphas)
                self.classes.append(classes)
                self.weights.append(w)
                self.offsets.append(b)

    def proba(self, jobs: Sequence[int], rows: np.ndarray) -> list[np.ndarray]:
        out = []
        with cpu_threads():
            for j in jobs:
                scores = self.prep.features(j, rows)[None] @ self.weights[j] + self.offsets[j][:, None, :]
                partial = softmax_probabilities(scores, len(self.classes[j])).cpu().numpy()
                out.append(to_full(partial, self.classes[j], self.prep.ctx.n_classes))
        return out

    def settled(self, job: int, position: int) -> dict:
        return {}


def _ridge_path(z: torch.Tensor, t: torch.Tensor, sw: torch.Tensor, alphas: torch.Tensor):
    """Weights [P, d, Q] and intercepts [P, Q] for every alpha, from one eigendecomposition."""
    total = sw.sum()
    x_mean = (sw[:, None] * z).sum(0) / total
    t_mean = (sw[:, None] * t).sum(0) / total
    root = sw.sqrt()[:, None]
    xs, ts = (z - x_mean) * root, (t - t_mean) * root
    n, d = xs.shape
    if n < d:  # dual: w = Xs^T (Xs Xs^T + alpha I)^-1 Ts
        evals, evecs = torch.linalg.eigh(xs @ xs.T)
        proj = evecs.T @ ts  # [n, Q]
        coef = evecs[None] @ (proj[None] / (evals[None, :, None] + alphas[:, None, None]))  # [P, n, Q]
        w = xs.T[None] @ coef
    else:  # primal: w = (Xs^T Xs + alpha I)^-1 Xs^T Ts
        evals, evecs = torch.linalg.eigh(xs.T @ xs)
        proj = evecs.T @ (xs.T @ ts)  # [d, Q]
        w = evecs[None] @ (proj[None] / (evals[None, :, None] + alphas[:, None, None]))
    b = t_mean[None] - torch.einsum("d,pdq->pq", x_mean, w)
    return w, b


def fit_ridge(head: HeadSpec, ctx: ProbeContext, jobs: list[GridJob]) -> RidgeModel:
    return RidgeModel(head, ctx, jobs)
