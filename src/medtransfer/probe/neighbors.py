"""The centroid and knn heads batched (``GridSolver``s for ``probe.grid_driver``): every grid candidate from one
pass per job. centroid: one distance matrix per (job, metric) serves every temperature. knn: one similarity
matrix per (job, evaluated rows) and one top-k at the largest k serve every k (the votes of the first k sorted
neighbours). Same results as the estimators ``heads.Prototype`` / ``heads.CosineKNN`` fitted task by task."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import torch

from medtransfer.probe.context import ProbeContext
from medtransfer.probe.grid_driver import GridJob, to_full
from medtransfer.probe.prepared import PreparedJobs, cpu_threads

if TYPE_CHECKING:
    from medtransfer.probe.heads import HeadSpec


def _unit(z: torch.Tensor) -> torch.Tensor:
    return z / z.norm(dim=-1, keepdim=True).clamp_min(1e-12)


class CentroidModel:
    def __init__(self, head: HeadSpec, ctx: ProbeContext, jobs: list[GridJob]):
        self.head, self.prep = head, PreparedJobs(ctx, jobs)
        self.classes, self.centroids = [], []
        for j in range(len(jobs)):
            z, y = self.prep.train(j)
            classes = np.unique(y)
            self.classes.append(classes)
            self.centroids.append(torch.stack([z[torch.as_tensor(y == c, device=z.device)].mean(0) for c in classes]))

    def proba(self, jobs: Sequence[int], rows: np.ndarray) -> list[np.ndarray]:
        out = []
        with cpu_threads():
            for j in jobs:
                z, c = self.prep.features(j, rows), self.centroids[j]
                distance = {}
                per = []
                for position in self.prep.jobs[j].candidates:
                    params = self.head.grid[position]
                    metric = params["metric"]
                    if metric not in distance:
                        if metric == "cosine":
                            distance[metric] = 1 - _unit(z) @ _unit(c).T
                        else:
                            d2 = (z * z).sum(1, keepdim=True) - 2 * z @ c.T + (c * c).sum(1)[None]
                            distance[metric] = d2.clamp_min(0) / z.shape[1]
                    per.append(torch.softmax(-distance[metric] / params["temperature"], dim=1))
                out.append(to_full(torch.stack(per).cpu().numpy(), self.classes[j], self.prep.ctx.n_classes))
        return out

    def settled(self, job: int, position: int) -> dict:
        return {}


class KnnModel:
    def __init__(self, head: HeadSpec, ctx: ProbeContext, jobs: list[GridJob]):
        self.head, self.prep = head, PreparedJobs(ctx, jobs)
        weighted = head.sample_weight and ctx.options.balanced
        self.train = []
        for j in range(len(jobs)):
            z, y = self.prep.train(j)
            w = self.prep.weights(j) if weighted else np.ones(len(y))
            self.train.append((_unit(z), torch.as_tensor(y, device=z.device), self.prep.tensor(w)))

    def proba(self, jobs: Sequence[int], rows: np.ndarray) -> list[np.ndarray]:
        n_classes = self.prep.ctx.n_classes
        out = []
        with cpu_threads():
            for j in jobs:
                unit, codes, weight = self.train[j]
                ks = [min(self.head.grid[p]["k"], len(codes)) for p in self.prep.jobs[j].candidates]
                sims = _unit(self.prep.features(j, rows)) @ unit.T
                top = torch.topk(sims, max(ks), dim=1).indices  # sorted: the first k are the k nearest
                one_hot = torch.nn.functional.one_hot(codes[top], n_classes).to(weight.dtype) * weight[top][..., None]
                votes = one_hot.cumsum(1)  # [n, kmax, K]: votes of the first k neighbours at k - 1
                per = [votes[:, k - 1] / votes[:, k - 1].sum(1, keepdim=True).clamp_min(1e-12) for k in ks]
                out.append(torch.stack(per).cpu().numpy())
        return out

    def settled(self, job: int, position: int) -> dict:
        return {}


def fit_centroid(head: HeadSpec, ctx: ProbeContext, jobs: list[GridJob]) -> CentroidModel:
    return CentroidModel(head, ctx, jobs)


def fit_knn(head: HeadSpec, ctx: ProbeContext, jobs: list[GridJob]) -> KnnModel:
    return KnnModel(head, ctx, jobs)
