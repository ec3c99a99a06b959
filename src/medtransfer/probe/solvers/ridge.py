"""The ridge head batched (a ``GridSolver`` for ``probe.grid_driver``): every alpha of a job from one linear
solve per alpha, batched: of the d x d weighted covariance (primal) or, when the job has fewer rows than
features (few-shot), of the n x n Gram matrix (dual), jobs of the same size solved together. The same solution
as scikit-learn's RidgeClassifier:

    min_w,b  sum_i sw_i ||t_i - x_i w - b||^2 + alpha ||w||^2,   t_i in {-1, +1} per class column

(one column for a binary problem, one per class otherwise; the intercept from the weighted means, not
penalized: ``sklearn/linear_model/_ridge.py``, ``_BaseRidge.fit`` and ``RidgeClassifier`` with its
LabelBinarizer(pos_label=1, neg_label=-1); its cholesky solver solves (X^T X + alpha I) w = X^T t, or the kernel
form when n < d, ``_solve_cholesky`` / ``_solve_cholesky_kernel``). Probabilities are the sigmoid / softmax of
the margins, as ``sklearn_fit.scores_to_proba`` makes them for the task-by-task path. Scoring folds each job's
preprocessing into the weights: one GEMM per scored set of rows for every job (``probe.solvers.stacked``)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from medtransfer.probe.context import ProbeContext
from medtransfer.probe.grid_driver import GridJob, to_full
from medtransfer.probe.registry import HeadSpec
from medtransfer.probe.solvers.prepared import PreparedJobs, cpu_threads
from medtransfer.probe.solvers.solver import softmax_probabilities


class RidgeModel:
    def __init__(self, head: HeadSpec, ctx: ProbeContext, jobs: list[GridJob]):
        self.prep = PreparedJobs(ctx, jobs)
        self.stack = self.prep.stacked()
        weighted = head.sample_weight and ctx.options.balanced
        self.classes = [np.unique(ctx.y_all[job.rows]) for job in jobs]
        self.weights: list[torch.Tensor | None] = [None] * len(jobs)  # [P, k, Q] on preprocessed features
        self.offsets: list[torch.Tensor | None] = [None] * len(jobs)  # [P, Q]
        groups: dict[tuple, list[int]] = {}
        for j, job in enumerate(jobs):  # jobs of one size, classes and grid: one batched solve
            groups.setdefault((len(job.rows), tuple(self.classes[j]), job.candidates), []).append(j)
        with cpu_threads():
            for (_, classes, candidates), members in groups.items():
                alphas = self.prep.tensor([head.grid[p]["alpha"] for p in candidates])
                z = torch.stack([self.stack.transform(j, ctx.x_all[jobs[j].rows]) for j in members])
                codes = np.searchsorted(classes, np.stack([ctx.y_all[jobs[j].rows] for j in members]))
                targets = np.eye(len(classes))[codes] * 2 - 1
                targets = targets[..., 1:] if len(classes) == 2 else targets  # binary: +1 for the second class
                sw = np.stack([self.prep.weights(j) if weighted else np.ones(len(jobs[j].rows)) for j in members])
                w, b = ridge_path(z, self.prep.tensor(targets), self.prep.tensor(sw), alphas)
                for g, j in enumerate(members):
                    self.weights[j], self.offsets[j] = w[g], b[g]

    def proba(self, jobs: Sequence[int], rows: np.ndarray) -> list[np.ndarray]:
        jobs = list(jobs)
        with cpu_threads():
            xs = self.stack.rows(self.prep.ctx.x_all[rows], jobs)
            flat = [self.weights[j].permute(1, 0, 2).reshape(self.weights[j].shape[1], -1) for j in jobs]
            scores = self.stack.project(xs, jobs, flat)  # [n, P * Q] per job
            out = []
            for j, s in zip(jobs, scores, strict=True):
                p, q = self.offsets[j].shape
                margins = s.view(len(rows), p, q).permute(1, 0, 2) + self.offsets[j][:, None, :]
                partial = softmax_probabilities(margins, len(self.classes[j])).cpu().numpy()
                out.append(to_full(partial, self.classes[j], self.prep.ctx.n_classes))
        return out

    def settled(self, job: int, position: int) -> dict:
        return {}


def ridge_path(z: torch.Tensor, t: torch.Tensor, sw: torch.Tensor, alphas: torch.Tensor):
    """Weights [G, P, d, Q] and intercepts [G, P, Q] of G same-sized problems (features z [G, n, d], targets
    t [G, n, Q], sample weights sw [G, n]) for every alpha [P] (> 0): one batched solve per alpha."""
    total = sw.sum(1, keepdim=True)  # [G, 1]
    x_mean = (sw[..., None] * z).sum(1) / total  # [G, d]
    t_mean = (sw[..., None] * t).sum(1) / total  # [G, Q]
    root = sw.sqrt()[..., None]
    xs, ts = (z - x_mean[:, None]) * root, (t - t_mean[:, None]) * root
    n, d = xs.shape[1:]
    ridge = alphas[None, :, None, None]
    if n < d:  # dual: w = Xs^T (Xs Xs^T + alpha I)^-1 Ts
        eye = torch.eye(n, dtype=z.dtype, device=z.device)
        coef = torch.linalg.solve((xs @ xs.transpose(1, 2))[:, None] + ridge * eye, ts[:, None])  # [G, P, n, Q]
        w = xs.transpose(1, 2)[:, None] @ coef
    else:  # primal: w = (Xs^T Xs + alpha I)^-1 Xs^T Ts
        eye = torch.eye(d, dtype=z.dtype, device=z.device)
        xt = xs.transpose(1, 2)
        # positive definite (alpha > 0): a Cholesky per alpha, half an LU's cost (the d x d solves dominate)
        chol = torch.linalg.cholesky((xt @ xs)[:, None] + ridge * eye)
        w = torch.cholesky_solve((xt @ ts)[:, None].expand(-1, len(alphas), -1, -1), chol)  # [G, P, d, Q]
    b = t_mean[:, None] - torch.einsum("gd,gpdq->gpq", x_mean, w)
    return w, b


def fit_ridge(head: HeadSpec, ctx: ProbeContext, jobs: list[GridJob]) -> RidgeModel:
    return RidgeModel(head, ctx, jobs)
