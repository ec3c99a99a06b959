"""Many jobs' preprocessing folded into one matmul per set of evaluated rows.

Each batched job has its own affine preprocessing ``z = (x - mu_j) @ A_j`` fitted on its own training rows
(``probe.features.fit_affine``; ``A_j`` diagonal for ``standardize``, a matrix for ``pcaN``). Scoring a fold's
val or test rows under every job of the fold would preprocess those rows once per job. Instead, what a head
needs from ``z`` is linear in it (``z @ u_j``: a linear head's scores, the dot products with centroids or with
training rows) or its squared norm, and both fold onto the raw rows:

    z @ u_j  = x @ (A_j u_j) - mu_j @ (A_j u_j)                        one GEMM x @ [A_1 u_1 | A_2 u_2 | ...]
    ||z||^2  = x^2 @ a_j^2 - 2 x @ (a_j^2 mu_j) + ||a_j mu_j||^2       (diagonal A_j = diag(a_j))

so the rows go through one ``[n, D] @ [D, sum_j m_j]`` product for every job together. Rows are shifted by a
common origin first (the mean of the jobs' training means: training rows only), which leaves every result
unchanged and keeps the cancellation in ``||z||^2`` small when features sit far from zero.
"""

from __future__ import annotations

import numpy as np
import torch

from medtransfer.probe.features import Affine


class StackedAffines:
    """The affine maps of a list of jobs, on one device and dtype."""

    def __init__(self, affines: list[Affine], *, device: torch.device, dtype: torch.dtype):
        self.affines, self.device, self.dtype = affines, device, dtype
        self.diagonal = all(a.a.ndim == 1 for a in affines)
        mu = np.stack([a.mu for a in affines]).astype(np.float64)
        self.origin = mu.mean(0)
        self.centre = self.tensor(mu - self.origin)  # [J, D]: each job's mean, in shifted coordinates
        self.scale = self.tensor(np.stack([a.a for a in affines])) if self.diagonal else None  # [J, D]

    def tensor(self, array) -> torch.Tensor:
        return torch.as_tensor(np.asarray(array), dtype=self.dtype, device=self.device)

    def rows(self, x: np.ndarray) -> torch.Tensor:
        """Raw rows in shifted coordinates: what ``project`` and ``sq_norms`` take."""
        return self.tensor(np.asarray(x, dtype=np.float64) - self.origin)

    def transform(self, job: int, x: np.ndarray) -> torch.Tensor:
        """Rows through one job's preprocessing, explicitly (its training rows)."""
        return self.tensor(self.affines[job](np.asarray(x, dtype=np.float64)))

    def fold(self, job: int, u: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """z-space weights ``u`` [k, m] of one job as raw-feature weights [D, m] and offsets [m]."""
        a = self.affines[job].a
        v = self.scale[job][:, None] * u if self.diagonal else self.tensor(a) @ u
        return v, -(self.centre[job] @ v)

    def project(self, xs: torch.Tensor, jobs, us: list[torch.Tensor]) -> list[torch.Tensor]:
        """``z_j @ u_j`` for every job of ``jobs`` ([n, m_j] each) from one GEMM over the shifted rows ``xs``."""
        jobs = list(jobs)
        if self.diagonal and len({tuple(u.shape) for u in us}) == 1:  # one broadcast for every job
            v = self.scale[jobs][:, :, None] * torch.stack(us)  # [J, D, m]
            offset = -torch.einsum("jd,jdm->jm", self.centre[jobs], v).reshape(-1)
            v = v.permute(1, 0, 2).reshape(v.shape[1], -1)
        else:
            folded = [self.fold(j, u) for j, u in zip(jobs, us, strict=True)]
            v = torch.cat([f[0] for f in folded], dim=1)
            offset = torch.cat([f[1] for f in folded])
        out = xs @ v + offset
        return list(torch.split(out, [u.shape[1] for u in us], dim=1))

    def sq_norms(self, xs: torch.Tensor, jobs) -> torch.Tensor:
        """``||z_j||^2`` of every row under every job of ``jobs``: [n, J]."""
        jobs = list(jobs)
        c = self.centre[jobs]
        if self.diagonal:
            a2 = self.scale[jobs] ** 2
            return torch.cat([xs * xs, xs], dim=1) @ torch.cat([a2, -2 * a2 * c], dim=1).T + (a2 * c * c).sum(1)[None]
        out = []
        for j, cj in zip(jobs, c, strict=True):
            z = (xs - cj) @ self.tensor(self.affines[j].a)
            out.append((z * z).sum(1))
        return torch.stack(out, dim=1)
