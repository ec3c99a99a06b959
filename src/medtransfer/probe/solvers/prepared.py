"""Per-job preprocessing for the batched heads: each job's affine map (``probe.features.fit_affine``) fitted on
its own training rows, as the task-by-task path fits it, and rows moved to the solver's device through it."""

from __future__ import annotations

import os
from contextlib import contextmanager

import numpy as np
import torch

from medtransfer.device import resolve_device
from medtransfer.probe.context import ProbeContext
from medtransfer.probe.features import fit_affines
from medtransfer.probe.grid_driver import GridJob
from medtransfer.probe.solvers.stacked import StackedAffines
from medtransfer.weighting import sample_weights


class PreparedJobs:
    """The jobs' affine maps, training features and labels, on ``ctx.options.device``: float64 on the CPU
    (exact enough to match scikit-learn's float64 fits), float32 on a GPU."""

    def __init__(self, ctx: ProbeContext, jobs: list[GridJob]):
        self.ctx, self.jobs = ctx, jobs
        self.device = resolve_device(ctx.options.device)
        self.dtype = torch.float64 if self.device.type == "cpu" else torch.float32
        self.affines = fit_affines(ctx.x_all, [job.rows for job in jobs], ctx.options.steps)

    def stacked(self, dtype: torch.dtype | None = None) -> StackedAffines:
        """The jobs' maps folded for one-GEMM scoring of shared rows (``probe.solvers.stacked``)."""
        return StackedAffines(self.affines, device=self.device, dtype=dtype or self.dtype)

    def tensor(self, array: np.ndarray) -> torch.Tensor:
        return torch.as_tensor(np.asarray(array), dtype=self.dtype, device=self.device)

    def features(self, job: int, rows: np.ndarray) -> torch.Tensor:
        """Rows of ``ctx.x_all`` through the job's preprocessing."""
        return self.tensor(self.affines[job](self.ctx.x_all[rows]))

    def train(self, job: int) -> tuple[torch.Tensor, np.ndarray]:
        rows = self.jobs[job].rows
        return self.features(job, rows), self.ctx.y_all[rows]

    def weights(self, job: int) -> np.ndarray:
        """Per-row class weights of the job's training rows ("balanced" or ones)."""
        y = np.asarray(self.ctx.y_all[self.jobs[job].rows], dtype=np.int64)
        return sample_weights(y, int(y.max()) + 1, "balanced" if self.ctx.options.balanced else "none")


@contextmanager
def cpu_threads():
    """torch's CPU thread count for a batched head's many small ops (``MEDTRANSFER_PROBE_THREADS``, default 1:
    see ``probe.solvers.batched.fit_linear_grid`` for the measurement behind it)."""
    before = torch.get_num_threads()
    torch.set_num_threads(int(os.environ.get("MEDTRANSFER_PROBE_THREADS", "1")))
    try:
        yield
    finally:
        torch.set_num_threads(before)
