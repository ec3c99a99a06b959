"""Many jobs' preprocessing folded into one matmul per set of evaluated rows.

Each batched job has its own affine preprocessing ``z = (x - mu_j) @ A_j`` fitted on its own training rows
(``probe.features.fit_affine``; ``A_j`` diagonal for ``standardize``, a matrix for ``pcaN``). Scoring a fold's
val or test rows under every job of the fold would preprocess those rows once per job. Instead, what a head
needs from ``z`` is linear in it (``z @ u_j``: a linear head's scores, the dot products with centroids or with
training rows) or its squared norm, and both fold onto the raw rows:

    z @ u_j  = x @ (A_j u_j) - mu_j @ (A_j u_j)                        one GEMM x @ [A_1 u_1 | A_2 u_2 | ...]
    ||z||^2  = x^2 @ a_j^2 - 2 x @ (a_j^2 mu_j) + ||a_j mu_j||^2       (diagonal A_j = diag(a_j))

so the rows go through one ``[n, D] @ [D, sum_j m_j]`` product for every job together. Rows are shifted by a
common origin first, which leaves every result unchanged in exact arithmetic and keeps the cancellation in
``||z||^2`` small when features sit far from zero. The origin is the mean of the training means of the jobs
being scored in that call (``rows(x, jobs)``): the driver scores one fold's jobs at a time, so it comes from that
fold's training rows only and never, not even through rounding, from the fold's test rows (which other folds
train on).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from medtransfer.probe.features import Affine


@dataclass(frozen=True)
class ShiftedRows:
    """Rows to score, shifted by the origin of the jobs they are scored under."""

    x: torch.Tensor  # [n, D]
    origin: np.ndarray  # [D], float64
    jobs: tuple[int, ...]


class StackedAffines:
    """The affine maps of a list of jobs, on one device and dtype."""

    def __init__(self, affines: list[Affine], *, device: torch.device, dtype: torch.dtype):
        self.affines, self.device, self.dtype = affines, device, dtype
        self.diagonal = all(a.a.ndim == 1 for a in affines)
        self.mu = np.stack([a.mu for a in affines]).astype(np.float64)  # [J, D]: each job's training mean
        self.scale = self.tensor(np.stack([a.a for a in affines])) if self.diagonal else None  # [J, D]

    def tensor(self, array) -> torch.Tensor:
        return torch.as_tensor(np.asarray(array), dtype=self.dtype, device=self.device)

    def rows(self, x: np.ndarray, jobs) -> ShiftedRows:
        """Raw rows in the shifted coordinates of ``jobs`` (the origin: the mean of their training means): what
        ``project`` and ``sq_norms`` take, for those jobs."""
        jobs = tuple(int(j) for j in jobs)
        origin = self.mu[list(jobs)].mean(0)
        return ShiftedRows(self.tensor(np.asarray(x, dtype=np.float64) - origin), origin, jobs)

    def _centres(self, rows: ShiftedRows, jobs: list[int]) -> torch.Tensor:
        """The jobs' means in the rows' shifted coordinates [J, D]; the jobs must be those the rows were shifted
        for (another job's origin would bring other training rows into the rounding)."""
        if not set(jobs) <= set(rows.jobs):
            raise ValueError(f"rows were shifted for jobs {rows.jobs}, not {jobs}")
        return self.tensor(self.mu[jobs] - rows.origin)

    def transform(self, job: int, x: np.ndarray) -> torch.Tensor:
        """Rows through one job's preprocessing, explicitly (its training rows)."""
        return self.tensor(self.affines[job](np.asarray(x, dtype=np.float64)))

    def project(self, rows: ShiftedRows, jobs, us: list[torch.Tensor]) -> list[torch.Tensor]:
        """``z_j @ u_j`` for every job of ``jobs`` ([n, m_j] each) from one GEMM over the shifted rows."""
        jobs = list(jobs)
        centre, xs = self._centres(rows, jobs), rows.x
        if self.diagonal and len({tuple(u.shape) for u in us}) == 1:  # one broadcast for every job
            v = self.scale[jobs][:, :, None] * torch.stack(us)  # [J, D, m]
            offset = -torch.einsum("jd,jdm->jm", centre, v).reshape(-1)
            v = v.permute(1, 0, 2).reshape(v.shape[1], -1)
        else:  # each job's z-space weights [k, m] as raw-feature weights [D, m] and offsets [m]
            vs = [self.scale[j][:, None] * u if self.diagonal else self.tensor(self.affines[j].a) @ u
                  for j, u in zip(jobs, us, strict=True)]
            v = torch.cat(vs, dim=1)
            offset = torch.cat([-(c @ vj) for c, vj in zip(centre, vs, strict=True)])
        out = xs @ v + offset
        return list(torch.split(out, [u.shape[1] for u in us], dim=1))

    def sq_norms(self, rows: ShiftedRows, jobs) -> torch.Tensor:
        """``||z_j||^2`` of every row under every job of ``jobs``: [n, J]."""
        jobs = list(jobs)
        c, xs = self._centres(rows, jobs), rows.x
        if self.diagonal:
            a2 = self.scale[jobs] ** 2
            return torch.cat([xs * xs, xs], dim=1) @ torch.cat([a2, -2 * a2 * c], dim=1).T + (a2 * c * c).sum(1)[None]
        out = []
        for j, cj in zip(jobs, c, strict=True):
            z = (xs - cj) @ self.tensor(self.affines[j].a)
            out.append((z * z).sum(1))
        return torch.stack(out, dim=1)
