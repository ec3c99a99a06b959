"""A batched L2 logistic-regression solver: a whole (task x C) grid solved at once as one stacked problem.

Every problem ``(g, p)`` (group ``g`` = one task's training rows, ``p`` = one value of C) minimizes the same
objective as scikit-learn's ``LogisticRegression(penalty="l2", solver="lbfgs")``::

    sum_i sw_i * loss(y_i, x_i . W + b) / sum_i sw_i  +  ||W||^2 / (2 * C * sum_i sw_i)

which has the same minimizer as scikit-learn's ``0.5 ||W||^2 + C sum_i sw_i loss_i`` -- so **C is the inverse
L2 strength in scikit-learn's convention: small C, strong penalty**; the intercept is not penalized. Binary
problems have one weight vector (sigmoid), multi-class ones K (softmax, multinomial), as scikit-learn does.

The minimizer is found by a batched L-BFGS (own history and Armijo backtracking per problem, all problems in
the same tensor ops), on the GPU when there is one. Per iteration it costs one matmul for the scores of the
search direction and one for the gradient at the accepted point: the scores are linear in the parameters, so
the line search's trial points are ``scores + step * direction_scores``, elementwise. Problems leave the batch
as soon as they stop, so the matmuls narrow as the strongly regularized problems (few iterations) finish and
only the weakly regularized ones (most iterations) remain. Two designs feed it:

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

LOSSES = ("log", "squared_hinge")
HISTORY = 10  # L-BFGS memory (s, y pairs kept): scipy L-BFGS-B default maxcor=10 (scipy/optimize/_lbfgsb_py.py)


class DenseDesign:
    """Per-group features ``z`` [G, n, d] (already preprocessed). Scores are laid out [problems, n, Q]."""

    row_dim = 1

    def __init__(self, z: torch.Tensor):
        self.z = z
        self.groups, self.dim = z.shape[0], z.shape[2]

    def bind(self, grp: torch.Tensor) -> _DenseBound:
        return _DenseBound(self.z[grp])


class _DenseBound:
    def __init__(self, z: torch.Tensor):
        self.z = z

    def forward(self, w: torch.Tensor) -> torch.Tensor:  # w [m, d, Q] -> scores [m, n, Q]
        return torch.bmm(self.z, w)

    def backward(self, r: torch.Tensor) -> torch.Tensor:  # r [m, n, Q] -> [m, d, Q]
        return torch.bmm(self.z.transpose(1, 2), r)


class SharedDesign:
    """One feature matrix ``x`` [n, d] for all groups, each with its affine map ``(x - mu[g]) * scale[g]``.
    Scores are laid out [n, problems, Q], so that one GEMM ``X [n, d] @ V [d, problems * Q]`` (and one
    ``X^T [d, n] @ R [n, problems * Q]`` back) serves every problem still being solved."""

    row_dim = 0

    def __init__(self, x: torch.Tensor, mu: torch.Tensor, scale: torch.Tensor):
        self.x, self.mu, self.scale = x, mu, scale
        self.xt = x.T.contiguous()  # a row-major copy of X^T: the backward matmul runs ~2x faster on CPU
        self.groups, self.dim = mu.shape

    def bind(self, grp: torch.Tensor) -> _SharedBound:
        return _SharedBound(self, self.mu[grp], self.scale[grp])


class _SharedBound:
    def __init__(self, design: SharedDesign, mu: torch.Tensor, scale: torch.Tensor):
        self.x, self.xt, self.mu, self.scale = design.x, design.xt, mu, scale

    def forward(self, w: torch.Tensor) -> torch.Tensor:  # w [m, d, Q] -> scores [n, m, Q]
        v = w * self.scale[:, :, None]  # weights on raw features
        offset = torch.einsum("md,mdq->mq", self.mu, v)
        m, d, q = v.shape
        raw = (self.x @ v.permute(1, 0, 2).reshape(d, m * q)).view(-1, m, q)
        return raw - offset[None]

    def backward(self, r: torch.Tensor) -> torch.Tensor:  # r [n, m, Q] -> [m, d, Q]
        n, m, q = r.shape
        xr = (self.xt @ r.reshape(n, m * q)).view(-1, m, q).permute(1, 0, 2)
        return (xr - self.mu[:, :, None] * r.sum(0)[:, None, :]) * self.scale[:, :, None]


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
    *,
    n_classes: int,
    max_iter: int = 200,
    tol: float = 1e-4,
    init: torch.Tensor | None = None,
    loss: str = "log",
    penalize_intercept: bool = False,
) -> Solution:
    """Solve every (group, C) problem. ``y`` [G, n] ints, ``sample_weight`` [G, n] (0 = not a training row),
    ``Cs`` [P] or [G, P]; ``init`` [G, P, d + 1, Q] (weights, then the intercept) is the starting point, else 0.

    Stopping rule, as scikit-learn's lbfgs: a problem stops when the largest absolute entry of its gradient
    (weights and intercept) falls to ``tol`` (scipy's ``gtol``, which scikit-learn sets to its ``tol``), the
    objective being scaled as scikit-learn scales it (loss divided by the sum of sample weights, penalty
    ``1 / (C * sum of sample weights)``): the same ``tol`` means the same stopping point on both sides.
    (scipy's L-BFGS-B also stops on a relative decrease of the objective below 64 float64 epsilons, which
    practically never comes first, and uses a Wolfe line search where this uses Armijo backtracking: the
    iteration counts come out alike, e.g. 10 for C = 1e-4 to ~30 for C >= 1 on a 10,880 x 1,024 problem.)
    A problem whose line search fails (no decrease at any step) stops there, not converged. The Armijo test
    sums the change of the loss row by row, not the difference of two sums, and falls back on Hager & Zhang's
    approximate (derivative) form where the change is at rounding level: no false failures near the optimum,
    in float32 at ``tol = 1e-4`` nor in float64 at ``tol = 1e-10``.

    Cost: every iteration is one design ``forward`` (scores of the search direction) and one ``backward``
    (gradient at the accepted point); the backtracking line search needs no matmul since the scores are linear
    in the parameters. Problems that stop are dropped from the batch, so the matmuls narrow as the strongly
    regularized (quick) problems finish.

    ``loss="squared_hinge"`` (the linear SVM head) swaps the per-row loss for scikit-learn's LinearSVC one,
    ``max(0, 1 - t s)^2`` with ``t = +-1``, one-vs-rest per class column for multi-class (``Q = K``), and
    ``penalize_intercept=True`` puts the intercept under the L2 penalty as liblinear does (LinearSVC's
    ``intercept_scaling=1``: the bias is one more weight on a constant feature)."""
    if loss not in LOSSES:
        raise ValueError(f"loss must be one of {LOSSES}, got {loss!r}")
    hinge = loss == "squared_hinge"
    groups, dim = design.groups, design.dim
    dtype, device = sample_weight.dtype, sample_weight.device
    cs = Cs.to(device=device, dtype=dtype)
    cs = cs.expand(groups, -1) if cs.dim() == 1 else cs
    n_c = cs.shape[1]
    total = groups * n_c
    q = 1 if n_classes == 2 else n_classes
    pen = slice(None) if penalize_intercept else slice(None, -1)  # the penalized part of theta
    rd = design.row_dim  # the rows' dimension in the score layout ([m, n, Q] or [n, m, Q])
    pd = 1 - rd  # the problems' dimension there
    sw_sum = sample_weight.sum(1).clamp_min(1e-12)  # [G]
    swn = sample_weight / sw_sum[:, None]  # normalized weights
    lam_all = (1.0 / (cs * sw_sum[:, None])).reshape(total)  # [G * P]
    # binary: [G, n, 1] of 0/1; multi-class: one-hot [G, n, K]
    target_g = y.to(dtype)[:, :, None] if q == 1 else torch.nn.functional.one_hot(y.long(), n_classes).to(dtype)
    group_of = torch.arange(groups, device=device).repeat_interleave(n_c)
    noise = 100 * torch.finfo(dtype).eps  # relative rounding level of the objective's change

    def per_problem(v):  # [m] -> broadcastable against the score layout
        return v[None, :, None] if rd == 0 else v[:, None, None]

    def row_loss(s, target):  # unweighted per-row loss, [.., 1]
        if hinge:  # target 0/1 per column -> t = +-1
            return (1 - (2 * target - 1) * s).clamp_min(0).square().sum(-1, keepdim=True)
        if q == 1:
            return torch.nn.functional.softplus(s) - target * s
        return torch.logsumexp(s, -1, keepdim=True) - (target * s).sum(-1, keepdim=True)

    def residual(s, target):  # d loss / d score
        if hinge:
            t = 2 * target - 1
            return -2 * t * (1 - t * s).clamp_min(0)
        return (torch.sigmoid(s) if q == 1 else torch.softmax(s, -1)) - target

    def gradient(bound, theta, resid, sw, lam):  # -> [m, d + 1, Q]
        r = resid * sw
        gw = bound.backward(r) + lam[:, None, None] * theta[:, :-1]
        gb = r.sum(rd)[:, None, :]
        if penalize_intercept:
            gb = gb + lam[:, None, None] * theta[:, -1:]
        return torch.cat([gw, gb], dim=1)

    idx = torch.arange(total, device=device)  # the problems still being solved
    theta_out = torch.zeros(total, dim + 1, q, dtype=dtype, device=device)
    converged = torch.zeros(total, dtype=torch.bool, device=device)

    # per-group row data in the score layout, taken per problem by ``select``
    swn_l = swn.T.contiguous() if rd == 0 else swn
    target_l = target_g.transpose(0, 1).contiguous() if rd == 0 else target_g

    def select(idx):
        grp = group_of[idx]
        return design.bind(grp), swn_l.index_select(pd, grp)[..., None], target_l.index_select(pd, grp), lam_all[idx]

    bound, sw, target, lam = select(idx)
    if init is None:
        theta = torch.zeros(total, dim + 1, q, dtype=dtype, device=device)
        n_rows = swn.shape[1]
        scores = torch.zeros((n_rows, total, q) if rd == 0 else (total, n_rows, q), dtype=dtype, device=device)
    else:
        theta = init.to(device=device, dtype=dtype).reshape(total, dim + 1, q).clone()
        scores = bound.forward(theta[:, :-1]) + _broadcast_bias(theta[:, -1], rd)
    loss_rows = row_loss(scores, target)
    grad = gradient(bound, theta, residual(scores, target), sw, lam)
    s_hist: list[torch.Tensor] = []
    y_hist: list[torch.Tensor] = []
    rho_hist: list[torch.Tensor] = []
    iteration = 0
    for iteration in range(1, max_iter + 1):  # noqa: B007
        gmax = grad.abs().amax((1, 2))
        done = gmax <= tol
        if bool(done.any()):
            theta_out[idx[done]] = theta[done]
            converged[idx[done]] = True
            (idx, theta, grad, gmax), (scores, loss_rows), (s_hist, y_hist, rho_hist) = _compact(  # they leave
                ~done, pd, (idx, theta, grad, gmax), (scores, loss_rows), (s_hist, y_hist, rho_hist))
            if not len(idx):
                break
            bound, sw, target, lam = select(idx)
        # two-loop recursion, per problem
        direction = -grad
        alphas = []
        for s_k, y_k, rho_k in zip(reversed(s_hist), reversed(y_hist), reversed(rho_hist), strict=True):
            a = rho_k * (s_k * direction).sum((1, 2))
            direction = direction - a[:, None, None] * y_k
            alphas.append(a)
        if s_hist:
            s_k, y_k = s_hist[-1], y_hist[-1]
            gamma = (s_k * y_k).sum((1, 2)) / (y_k * y_k).sum((1, 2)).clamp_min(1e-30)
            direction = direction * gamma[:, None, None]
        else:
            direction = direction / gmax.clamp_min(1.0)[:, None, None]
        for s_k, y_k, rho_k, a in zip(s_hist, y_hist, rho_hist, reversed(alphas), strict=True):
            bcoef = rho_k * (y_k * direction).sum((1, 2))
            direction = direction + (a - bcoef)[:, None, None] * s_k
        slope = (grad * direction).sum((1, 2))
        bad = ~(slope < 0)  # not a descent direction (or not finite): restart from steepest descent
        if bool(bad.any()):
            direction = torch.where(bad[:, None, None], -grad / gmax.clamp_min(1.0)[:, None, None], direction)
            slope = (grad * direction).sum((1, 2))
        # scores along the direction: one matmul; the line search is elementwise from here
        d_scores = bound.forward(direction[:, :-1]) + _broadcast_bias(direction[:, -1], rd)
        w, dw = theta[:, pen], direction[:, pen]  # the penalized parameters
        w_dw, dw_dw = (w * dw).sum((1, 2)), (dw * dw).sum((1, 2))
        # Armijo backtracking, per problem; the change of the objective is summed row by row (accurate in float32)
        step = torch.ones_like(slope)
        accepted = torch.zeros_like(slope, dtype=torch.bool)
        first = None
        for trial_index in range(40):
            trial = scores + d_scores if trial_index == 0 else scores + per_problem(step) * d_scores
            trial_rows = row_loss(trial, target)
            if trial_index == 0:
                first = trial, trial_rows
            change = (sw * (trial_rows - loss_rows)).sum((rd, 2)) + lam * step * (w_dw + 0.5 * step * dw_dw)
            ok = change <= 1e-4 * step * slope
            if not bool((ok | accepted).all()):
                # Hager & Zhang's approximate Armijo test where the change is at rounding level (near the
                # optimum): the slope at the trial point, free of cancellation, must not exceed (1 - 2e-4) x
                # the initial descent rate -- the same test as Armijo's on a quadratic
                f0 = (sw * loss_rows).sum((rd, 2)) + 0.5 * lam * (w * w).sum((1, 2))
                dphi = (sw * residual(trial, target) * d_scores).sum((rd, 2)) + lam * (w_dw + step * dw_dw)
                ok = ok | ((change.abs() <= noise * f0) & (dphi <= -(1 - 2e-4) * slope))
            accepted = accepted | ok
            if bool(accepted.all()):
                break
            step = torch.where(accepted, step, step * 0.5)
        if trial_index == 0:  # the full step, taken by every problem (the usual case): its scores are at hand
            scores, loss_rows = first
        else:
            step = torch.where(accepted, step, torch.zeros_like(step))  # failed: stays put, stopped below
            scores = scores + per_problem(step) * d_scores
            loss_rows = row_loss(scores, target)
        s_k = step[:, None, None] * direction
        theta = theta + s_k
        new_grad = gradient(bound, theta, residual(scores, target), sw, lam)
        y_k = new_grad - grad
        sy = (s_k * y_k).sum((1, 2))
        rho = torch.where(sy > 1e-20, 1.0 / sy.clamp_min(1e-20), torch.zeros_like(sy))
        s_hist.append(s_k)
        y_hist.append(y_k)
        rho_hist.append(rho)
        if len(s_hist) > HISTORY:
            s_hist.pop(0), y_hist.pop(0), rho_hist.pop(0)
        grad = new_grad
        failed = ~accepted
        if bool(failed.any()):  # no decrease along a descent direction (numerically at its optimum): stop it
            theta_out[idx[failed]] = theta[failed]
            (idx, theta, grad), (scores, loss_rows), (s_hist, y_hist, rho_hist) = _compact(
                ~failed, pd, (idx, theta, grad), (scores, loss_rows), (s_hist, y_hist, rho_hist))
            if not len(idx):
                break
            bound, sw, target, lam = select(idx)
    if len(idx):
        final = grad.abs().amax((1, 2)) <= tol
        theta_out[idx] = theta
        converged[idx] = final
    theta_out = theta_out.reshape(groups, n_c, dim + 1, q)
    return Solution(w=theta_out[:, :, :-1, :], b=theta_out[:, :, -1, :], iterations=iteration,
                    converged=converged.reshape(groups, n_c))


def _compact(keep: torch.Tensor, pd: int, per_problem, in_layout, histories):
    """Keep the problems where ``keep``: per-problem tensors (problems first), score-layout tensors (problems
    on dimension ``pd``) and the L-BFGS histories (lists of per-problem tensors)."""
    index = keep.nonzero().squeeze(1)
    return ([t.index_select(0, index) for t in per_problem], [t.index_select(pd, index) for t in in_layout],
            [[h.index_select(0, index) for h in hs] for hs in histories])


def _broadcast_bias(b: torch.Tensor, rd: int) -> torch.Tensor:  # [m, Q] -> broadcastable against the scores
    return b[None] if rd == 0 else b[:, None, :]


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
