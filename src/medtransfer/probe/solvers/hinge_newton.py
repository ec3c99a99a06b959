"""LinearSVC's objective solved exactly for small problems: a batched semi-smooth Newton method.

For the linear SVM head's few-shot problems (reduced to their row space, ``solver.reduce_rows``: at most a few
dozen features), every (group, C, class column) problem

    0.5 ||theta||^2 + C sum_i sw_i max(0, 1 - t_i x~_i . theta)^2,   x~_i = [x_i, 1], t_i = +-1

(liblinear's L2-regularized squared-hinge SVM with its penalized intercept, LinearSVC's ``intercept_scaling=1``;
one-vs-rest per class column for multi-class) is piecewise quadratic. With the rows whose margin is violated
held fixed, it is a quadratic whose minimizer is one linear solve, so the generalized Newton method (Keerthi &
DeCoste, "A modified finite Newton method for fast solution of large scale linear SVMs", JMLR 6, 2005) ends in
a handful of iterations where the first-order L-BFGS path (``solver.solve_logreg``, squared hinge) needs
hundreds: the objective is not twice differentiable, which L-BFGS's curvature pairs handle badly. Steps are
damped by Armijo backtracking, problems leave the batch when they stop. Same stopping rule as
``solve_logreg``: the largest gradient entry of the objective scaled by ``1 / (C sum_i sw_i)`` at ``tol``.
"""

from __future__ import annotations

import torch

from medtransfer.probe.solvers.solver import Solution


def solve_squared_hinge(z: torch.Tensor, y: torch.Tensor, sample_weight: torch.Tensor, Cs: torch.Tensor, *,
                        n_classes: int, max_iter: int = 100, tol: float = 1e-5) -> Solution:
    """Every (group, C) problem; ``z`` [G, n, r] features (padded rows have weight 0), ``y`` [G, n] codes,
    ``sample_weight`` [G, n], ``Cs`` [G, P]. Returns weights [G, P, r, Q] and intercepts [G, P, Q]."""
    groups, n, r = z.shape
    n_c = Cs.shape[1]
    q = 1 if n_classes == 2 else n_classes
    dtype, device = z.dtype, z.device
    signs = (2 * y.to(dtype) - 1)[..., None] if q == 1 else \
        2 * torch.nn.functional.one_hot(y.long(), n_classes).to(dtype) - 1  # [G, n, Q]
    aug = torch.cat([z, torch.ones(groups, n, 1, dtype=dtype, device=device)], dim=2)  # [G, n, r + 1]
    # one problem per (group, C, class column)
    x = aug[:, None, None].expand(groups, n_c, q, n, r + 1).reshape(-1, n, r + 1)
    t = signs.permute(0, 2, 1)[:, None].expand(groups, n_c, q, n).reshape(-1, n)
    c = Cs.to(dtype)[:, :, None].expand(groups, n_c, q).reshape(-1)
    cw = c[:, None] * sample_weight.to(dtype)[:, None, None].expand(groups, n_c, q, n).reshape(-1, n)
    scale = 1.0 / (c * sample_weight.to(dtype).sum(1)[:, None, None].expand(groups, n_c, q).reshape(-1))
    total = x.shape[0]
    theta_out = torch.zeros(total, r + 1, dtype=dtype, device=device)
    converged = torch.zeros(total, dtype=torch.bool, device=device)
    eye = torch.eye(r + 1, dtype=dtype, device=device)
    idx = torch.arange(total, device=device)
    theta = torch.zeros(total, r + 1, dtype=dtype, device=device)

    def objective(th, margin):  # margin = 1 - t * score
        return 0.5 * (th * th).sum(1) + (cw * margin.clamp_min(0).square()).sum(1)

    iteration = 0
    for iteration in range(1, max_iter + 1):  # noqa: B007
        margin = 1 - t * torch.bmm(x, theta[..., None])[..., 0]
        active = cw * (margin > 0)
        grad = theta - 2 * torch.bmm(x.transpose(1, 2), (active * t * margin)[..., None])[..., 0]
        done = (grad.abs().amax(1) * scale) <= tol
        if bool(done.any()):
            theta_out[idx[done]], converged[idx[done]] = theta[done], True
            keep = ~done
            idx, theta, x, t, cw, scale = idx[keep], theta[keep], x[keep], t[keep], cw[keep], scale[keep]
            margin, active, grad = margin[keep], active[keep], grad[keep]
            if not len(idx):
                break
        hessian = eye + 2 * torch.bmm(x.transpose(1, 2) * active[:, None, :], x)
        direction = -torch.cholesky_solve(grad[..., None], torch.linalg.cholesky(hessian))[..., 0]
        d_margin = -t * torch.bmm(x, direction[..., None])[..., 0]
        start = objective(theta, margin)
        slope = (grad * direction).sum(1)
        step = torch.ones(len(idx), dtype=dtype, device=device)
        accepted = torch.zeros(len(idx), dtype=torch.bool, device=device)
        for _ in range(30):  # Armijo backtracking; the full Newton step is the usual case
            trial = objective(theta + step[:, None] * direction, margin + step[:, None] * d_margin)
            accepted = accepted | (trial <= start + 1e-4 * step * slope)
            if bool(accepted.all()):
                break
            step = torch.where(accepted, step, step * 0.5)
        theta = theta + torch.where(accepted, step, torch.zeros_like(step))[:, None] * direction
    theta_out[idx] = theta  # problems still running at max_iter: their last iterate, not converged
    theta_out = theta_out.view(groups, n_c, q, r + 1)
    return Solution(w=theta_out[..., :r].permute(0, 1, 3, 2), b=theta_out[..., r], iterations=iteration,
                    converged=converged.view(groups, n_c, q).all(2))
