"""The centroid and knn heads batched (``GridSolver``s for ``probe.grid_driver``): the rows a call scores (a fold's
val or test rows) go through one GEMM against every job's centroids or training rows together, each job's own
preprocessing folded into that product (``probe.solvers.stacked``), instead of being preprocessed once per job.
centroid: one distance matrix per job and metric serves every temperature. knn: one similarity matrix per job
and one top-k at the largest k serve every k (the votes of the first k sorted neighbours). Same results as the
estimators ``heads.centroid.Prototype`` / ``heads.knn.CosineKNN`` fitted task by task."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from medtransfer.probe.context import ProbeContext
from medtransfer.probe.grid_driver import GridJob
from medtransfer.probe.registry import HeadSpec
from medtransfer.probe.solvers.prepared import PreparedJobs, cpu_threads

METRICS = ("euclidean", "cosine")  # heads.centroid.Prototype's metrics, in the order of the distance stack below


def _by_key(jobs: Sequence[int], key) -> dict:
    groups: dict = {}
    for position, j in enumerate(jobs):
        groups.setdefault(key(j), []).append((position, j))
    return groups


def _softmax(logits: torch.Tensor) -> torch.Tensor:
    """Softmax over the last dimension; two classes as the sigmoid of the difference (the same numbers, and
    measured 10x faster than torch.softmax over a last dimension of size 2)."""
    if logits.shape[-1] != 2:
        return torch.softmax(logits, -1)
    p1 = torch.sigmoid(logits[..., 1] - logits[..., 0])  # an absent class: -inf logit, probability 0
    return torch.stack([1 - p1, p1], dim=-1)


class CentroidModel:
    def __init__(self, head: HeadSpec, ctx: ProbeContext, jobs: list[GridJob]):
        self.head, self.prep = head, PreparedJobs(ctx, jobs)
        self.stack = self.prep.stacked()
        n_classes, dim = ctx.n_classes, None
        centroids, present = [], np.zeros((len(jobs), n_classes), dtype=bool)
        for j, job in enumerate(jobs):
            x, y = ctx.x_all[job.rows], ctx.y_all[job.rows]
            means = np.zeros((n_classes, x.shape[1]))
            for c in np.unique(y):
                means[c] = x[y == c].mean(0, dtype=np.float64)
                present[j, c] = True
            z = self.stack.transform(j, means)  # the class means of the preprocessed rows (the map is affine)
            dim = z.shape[1]
            centroids.append(z * self.stack.tensor(present[j])[:, None])
        self.dim = dim
        self.centroids = torch.stack(centroids)  # [J, K, k]; zero rows for classes a job never saw
        self.norm2 = (self.centroids**2).sum(-1)  # [J, K]
        self.absent = torch.as_tensor(~present, device=self.prep.device)

    def proba(self, jobs: Sequence[int], rows: np.ndarray) -> list[np.ndarray]:
        jobs = list(jobs)
        with cpu_threads():
            xs = self.stack.rows(self.prep.ctx.x_all[rows], jobs)
            sq = self.stack.sq_norms(xs, jobs)[..., None]  # [n, J, 1]
            dots = torch.stack(self.stack.project(xs, jobs, [self.centroids[j].T for j in jobs]), dim=1)  # [n, J, K]
            norm2 = self.norm2[jobs][None]
            euclidean = (sq - 2 * dots + norm2).clamp_min(0) / self.dim
            cosine = 1 - dots / (sq.clamp_min(0).sqrt().clamp_min(1e-12) * norm2.sqrt().clamp_min(1e-12))
            distance = torch.stack([euclidean, cosine]).masked_fill(self.absent[jobs][None, None], float("inf"))
            out: list[np.ndarray | None] = [None] * len(jobs)
            for candidates, members in _by_key(jobs, lambda j: self.prep.jobs[j].candidates).items():
                grid = [self.head.grid[c] for c in candidates]
                metric = torch.as_tensor([METRICS.index(p["metric"]) for p in grid], device=xs.x.device)
                temperature = self.prep.tensor([p["temperature"] for p in grid])[:, None, None, None]
                where = [position for position, _ in members]
                logits = -distance[:, :, where][metric] / temperature  # [P, n, G, K]
                proba = _softmax(logits).permute(2, 0, 1, 3).cpu().numpy()
                for g, position in enumerate(where):
                    out[position] = proba[g]
        return out

    def settled(self, job: int, position: int) -> dict:
        return {}


class KnnModel:
    """Similarities in float32, as ``heads.knn.CosineKNN`` computes them on the store's float32 features."""

    def __init__(self, head: HeadSpec, ctx: ProbeContext, jobs: list[GridJob]):
        self.head, self.prep = head, PreparedJobs(ctx, jobs)
        self.stack = self.prep.stacked(torch.float32)
        weighted = head.sample_weight and ctx.options.balanced
        self.unit, self.codes, self.weight = [], [], []
        for j, job in enumerate(jobs):
            z = self.stack.transform(j, ctx.x_all[job.rows])
            self.unit.append(z / z.norm(dim=1, keepdim=True).clamp_min(1e-12))
            self.codes.append(torch.as_tensor(ctx.y_all[job.rows], device=z.device))
            w = self.prep.weights(j) if weighted else np.ones(len(job.rows))
            self.weight.append(self.stack.tensor(w))

    def proba(self, jobs: Sequence[int], rows: np.ndarray) -> list[np.ndarray]:
        """The eval rows' own norm is left out of the similarity: it does not change which neighbours are
        nearest, and the votes are all the probabilities depend on."""
        jobs, n_classes = list(jobs), self.prep.ctx.n_classes
        out: list[np.ndarray | None] = [None] * len(jobs)
        with cpu_threads():
            xs = self.stack.rows(self.prep.ctx.x_all[rows], jobs)
            sims = self.stack.project(xs, jobs, [self.unit[j].T for j in jobs])
            key = lambda j: (len(self.codes[j]), self.prep.jobs[j].candidates)  # noqa: E731
            for (n_train, candidates), members in _by_key(jobs, key).items():
                ks = [min(self.head.grid[c]["k"], n_train) for c in candidates]
                where = [position for position, _ in members]
                group = torch.stack([sims[position] for position in where], dim=1)  # [n, G, n_train]
                top = torch.topk(group, max(ks), dim=2).indices  # sorted: the first k are the k nearest
                codes = torch.stack([self.codes[j] for _, j in members])[None].expand(len(rows), -1, -1)
                weight = torch.stack([self.weight[j] for _, j in members])[None].expand(len(rows), -1, -1)
                one_hot = torch.nn.functional.one_hot(codes.gather(2, top), n_classes).to(weight.dtype)
                votes = (one_hot * weight.gather(2, top)[..., None]).cumsum(2)  # [n, G, kmax, K]: first k at k-1
                per = torch.stack([votes[:, :, k - 1] for k in ks])  # [P, n, G, K]
                proba = (per / per.sum(-1, keepdim=True).clamp_min(1e-12)).permute(2, 0, 1, 3).double().cpu().numpy()
                for g, position in enumerate(where):
                    out[position] = proba[g]
        return out

    def settled(self, job: int, position: int) -> dict:
        return {}


def fit_centroid(head: HeadSpec, ctx: ProbeContext, jobs: list[GridJob]) -> CentroidModel:
    return CentroidModel(head, ctx, jobs)


def fit_knn(head: HeadSpec, ctx: ProbeContext, jobs: list[GridJob]) -> KnnModel:
    return KnnModel(head, ctx, jobs)
