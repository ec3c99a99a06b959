"""A batched L2 logistic-regression solver: a whole (task x C) grid solved at once as one stacked problem.

Every problem ``(g, p)`` (group ``g`` = one task's training rows, ``p`` = one value of C) minimizes the same
objective as scikit-learn's ``LogisticRegression(penalty="l2", solver="lbfgs")``::

    sum_i sw_i * loss(y_i, x_i . W + b) / sum_i sw_i  +  ||W||^2 / (2 * C * sum_i sw_i)

which has the same minimizer as scikit-learn's ``0.5 ||W||^2 + C sum_i sw_i loss_i`` -- so **C is the inverse
L2 strength in scikit-learn's convention: small C, strong penalty**; the intercept is not penalized. Binary
problems have one weight vector (sigmoid), multi-class ones K (softmax, multinomial), as scikit-learn does.

The minimizer is found by a batched L-BFGS (own history and Armijo backtracking per problem, all problems in
the same tensor ops), on the GPU when there is one. Two designs feed it:

* ``DenseDesign``: each group's (preprocessed) training rows gathered into ``Z[g]`` (padded rows have weight 0).
  Few-shot groups are first reduced to their row space (``reduce_rows``): with ``L L^T = Z Z^T + eps I`` the
  problem on features ``L`` (n x n) is the original one up to the jitter ``eps``, and ``W = Z^T L^-T beta``.
* ``SharedDesign``: the full-data tasks of all folds share one feature matrix ``X`` (all rows of the store); each
  group's standardization ``(x - mu_g) * scale_g`` is folded into the weights and its training rows are those
  with a non-zero weight. One ``X @ V`` per iteration serves every fold and every C.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


def pick_device(device: str = "auto") -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


class DenseDesign:
    """Per-group features ``z`` [G, n, d] (already preprocessed)."""

    def __init__(self, z: torch.Tensor):
        self.z = z
        self.groups, self.dim = z.shape[0], z.shape[2]

    def forward(self, w: torch.Tensor) -> torch.Tensor:  # w [G, d, Q] -> scores [G, n, Q]
        return torch.bmm(self.z, w)

    def backward(self, r: torch.Tensor) -> torch.Tensor:  # r [G, n, Q] -> [G, d, Q]
        return torch.bmm(self.z.transpose(1, 2), r)


class SharedDesign:
    """One feature matrix ``x`` [n, d] for all groups, each with its affine map ``(x - mu[g]) * scale[g]``."""

    def __init__(self, x: torch.Tensor, mu: torch.Tensor, scale: torch.Tensor):
        self.x, self.mu, self.scale = x, mu, scale
        self.xt = x.T.contiguous()  # a row-major copy of X^T: the backward matmul runs ~2x faster on CPU
        self.groups, self.dim = mu.shape

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        v = w * self.scale[:, :, None]  # [G, d, Q]: weights on raw features
        offset = torch.einsum("gd,gdq->gq", self.mu, v)
        g, d, q = v.shape
        raw = (self.x @ v.permute(1, 0, 2).reshape(d, g * q)).reshape(-1, g, q).permute(1, 0, 2)
        return raw - offset[:, None, :]

    def backward(self, r: torch.Tensor) -> torch.Tensor:
        g, n, q = r.shape
        xr = (self.xt @ r.permute(1, 0, 2).reshape(n, g * q)).reshape(-1, g, q).permute(1, 0, 2)
        return (xr - self.mu[:, :, None] * r.sum(1)[:, None, :]) * self.scale[:, :, None]


@dataclass
class Solution:
    w: torch.Tensor  # [G, P, d, Q] in the design's (preprocessed) feature space
    b: torch.Tensor  # [G, P, Q]
    iterations: int
    converged: torch.Tensor  # [G, P] bool


def solve_logreg(
    design,
    y: torch.Tensor,
    sample_weight: torch.Tensor,
    Cs: torch.Tensor,
    n_classes: int,
    max_iter: int = 200,
    tol: float = 1e-4,
    history: int = 10,
) -> Solution:
    """Solve every (group, C) problem. ``y`` [G, n] ints, ``sample_weight`` [G, n] (0 = not a training row),
    ``Cs`` [P] or [G, P]. Stops a problem when its largest gradient entry is below ``tol`` (scikit-learn's gtol)."""
    groups, dim = design.groups, design.dim
    dtype, device = sample_weight.dtype, sample_weight.device
    cs = Cs.to(device=device, dtype=dtype)
    cs = cs.expand(groups, -1) if cs.dim() == 1 else cs
    n_c = cs.shape[1]
    q = 1 if n_classes == 2 else n_classes
    sw_sum = sample_weight.sum(1).clamp_min(1e-12)  # [G]
    swn = sample_weight / sw_sum[:, None]  # normalized weights
    lam = 1.0 / (cs * sw_sum[:, None])  # [G, P]
    # binary: [G, n, 1] of 0/1; multi-class: one-hot [G, n, K]
    target = y.to(dtype)[:, :, None] if q == 1 else torch.nn.functional.one_hot(y.long(), n_classes).to(dtype)

    def objective(theta, need_grad=True):  # theta [G, P, d+1, Q] -> (f [G, P], grad or None)
        w, b = theta[:, :, :-1, :], theta[:, :, -1, :]
        scores = design.forward(w.permute(0, 2, 1, 3).reshape(groups, dim, n_c * q))
        scores = scores.reshape(groups, -1, n_c, q) + b[:, None, :, :]  # [G, n, P, Q]
        if q == 1:
            s = scores[..., 0]
            loss = torch.nn.functional.softplus(s) - target * s  # [G, n, P]
            resid = (torch.sigmoid(s) - target)[..., None]
        else:
            logp = torch.log_softmax(scores, dim=-1)
            loss = -(target[:, :, None, :] * logp).sum(-1)
            resid = logp.exp() - target[:, :, None, :]
        f = torch.einsum("gn,gnp->gp", swn, loss) + 0.5 * lam * (w * w).sum((2, 3))
        if not need_grad:
            return f, None
        r = resid * swn[:, :, None, None]  # [G, n, P, Q]
        gw = design.backward(r.reshape(groups, -1, n_c * q)).reshape(groups, dim, n_c, q).permute(0, 2, 1, 3)
        gw = gw + lam[:, :, None, None] * w
        gb = r.sum(1)
        return f, torch.cat([gw, gb[:, :, None, :]], dim=2)

    theta = torch.zeros(groups, n_c, dim + 1, q, dtype=dtype, device=device)
    f, grad = objective(theta)
    s_hist, y_hist, rho_hist = [], [], []
    active = torch.ones(groups, n_c, dtype=torch.bool, device=device)
    iteration = 0
    for iteration in range(1, max_iter + 1):  # noqa: B007
        active = grad.abs().amax((2, 3)) > tol
        if not bool(active.any()):
            break
        # two-loop recursion, per problem
        direction = -grad
        alphas = []
        for s_k, y_k, rho_k in reversed(list(zip(s_hist, y_hist, rho_hist, strict=True))):
            a = rho_k * (s_k * direction).sum((2, 3))
            direction = direction - a[:, :, None, None] * y_k
            alphas.append(a)
        if s_hist:
            s_k, y_k = s_hist[-1], y_hist[-1]
            gamma = (s_k * y_k).sum((2, 3)) / (y_k * y_k).sum((2, 3)).clamp_min(1e-30)
            direction = direction * gamma[:, :, None, None]
        else:
            direction = direction / grad.abs().amax((2, 3)).clamp_min(1.0)[:, :, None, None]
        for (s_k, y_k, rho_k), a in zip(zip(s_hist, y_hist, rho_hist, strict=True), reversed(alphas), strict=True):
            bcoef = rho_k * (y_k * direction).sum((2, 3))
            direction = direction + (a - bcoef)[:, :, None, None] * s_k
        slope = (grad * direction).sum((2, 3))
        bad = slope >= 0  # not a descent direction: restart from steepest descent
        if bool(bad.any()):
            direction = torch.where(bad[:, :, None, None], -grad, direction)
            slope = torch.where(bad, -(grad * grad).sum((2, 3)), slope)
        direction = direction * active[:, :, None, None]
        # Armijo backtracking, per problem
        step = torch.ones(groups, n_c, dtype=dtype, device=device)
        accepted = ~active
        new_theta, new_f, new_grad = theta, f, grad
        for trial_index in range(30):  # the first trial brings its gradient; later ones only the objective
            trial = theta + step[:, :, None, None] * direction
            f_trial, g_trial = objective(trial, need_grad=trial_index == 0)
            ok = (f_trial <= f + 1e-4 * step * slope) & ~accepted
            if bool(ok.any()):
                m = ok[:, :, None, None]
                new_theta = torch.where(m, trial, new_theta)
                new_f = torch.where(ok, f_trial, new_f)
                if g_trial is not None:
                    new_grad = torch.where(m, g_trial, new_grad)
                accepted = accepted | ok
            if bool(accepted.all()):
                break
            step = torch.where(accepted, step, step * 0.5)
        if trial_index > 0:  # some problems backtracked: their gradient at the accepted point
            new_f, new_grad = objective(new_theta)
        s_k, y_k = new_theta - theta, new_grad - grad
        sy = (s_k * y_k).sum((2, 3))
        rho = torch.where(sy > 1e-20, 1.0 / sy.clamp_min(1e-20), torch.zeros_like(sy))
        s_hist.append(s_k)
        y_hist.append(y_k)
        rho_hist.append(rho)
        if len(s_hist) > history:
            s_hist.pop(0), y_hist.pop(0), rho_hist.pop(0)
        theta, f, grad = new_theta, new_f, new_grad
    converged = grad.abs().amax((2, 3)) <= tol
    return Solution(w=theta[:, :, :-1, :], b=theta[:, :, -1, :], iterations=iteration, converged=converged)


def reduce_rows(z: torch.Tensor, jitter: float = 1e-6) -> tuple[torch.Tensor, torch.Tensor]:
    """Row-space reduction of [G, n, d] features with n < d: returns (L [G, n, n], back [G, d, n]) such that
    the problem on features ``L`` has the same scores and penalty (up to the relative ``jitter``) and the
    weights in the original space are ``back @ beta``."""
    gram = torch.bmm(z, z.transpose(1, 2))
    n = gram.shape[1]
    eps = jitter * gram.diagonal(dim1=1, dim2=2).mean(1).clamp_min(1e-12)
    gram = gram + eps[:, None, None] * torch.eye(n, dtype=z.dtype, device=z.device)
    chol = torch.linalg.cholesky(gram)
    # back = Z^T L^-T  (d x n)
    back = torch.linalg.solve_triangular(chol, z, upper=False).transpose(1, 2)
    return chol, back


def softmax_probabilities(scores: torch.Tensor, n_classes: int) -> torch.Tensor:
    """Scores [..., Q] (Q = 1 for binary) -> probabilities [..., K]."""
    if n_classes == 2:
        p1 = torch.sigmoid(scores[..., 0])
        return torch.stack([1 - p1, p1], dim=-1)
    return torch.softmax(scores, dim=-1)
