"""The mlp head batched (a ``GridSolver`` for ``probe.grid_driver``): every (job, alpha) is one small network
(one hidden ReLU layer of 256 units, softmax output), and networks are trained together as batched matrices,
full-batch Adam, early-stopped on the validation loss.

What it keeps from scikit-learn's MLPClassifier (``sklearn/neural_network/_multilayer_perceptron.py``): the
architecture, Glorot-uniform initialisation (bound sqrt(6 / (fan_in + fan_out))), Adam (lr 1e-3, betas 0.9 /
0.999, eps 1e-8), the penalty ``alpha / (2 n) ||W||^2`` on weights (not biases), at most 200 epochs. What it
changes (the search, reported by ``benchmarks/probe_heads.py``): one full-batch step per epoch (scikit-learn
steps every 200 rows; identical for training sets up to 200 rows, i.e. few-shot), and stopping at the lowest
loss on the job's held-out rows (the fold's val rows, at most ``STOP_ROWS`` of them, never test rows; patience
``PATIENCE`` epochs) instead of on the training loss. The epoch count it settles on is recorded and reused by the
refit on train + val, which has no held-out rows left.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from medtransfer.probe.context import ProbeContext
from medtransfer.probe.grid_driver import GridJob
from medtransfer.probe.registry import HeadSpec
from medtransfer.probe.solvers.prepared import PreparedJobs, cpu_threads

HIDDEN = 256
MAX_EPOCHS = 200  # MLPClassifier's max_iter default
LEARNING_RATE = 1e-3  # MLPClassifier's learning_rate_init default
PATIENCE = 10  # MLPClassifier's n_iter_no_change default
STOP_ROWS = 512  # held-out rows scored each epoch for early stopping (a fixed, stratified-by-order subset)
CHUNK_PARAMS = 2**25  # networks trained together: at most this many first-layer weights at once


class MlpModel:
    def __init__(self, head: HeadSpec, ctx: ProbeContext, jobs: list[GridJob]):
        self.prep = PreparedJobs(ctx, jobs)
        self.device, self.n_classes = self.prep.device, ctx.n_classes
        nets = [(j, position) for j, job in enumerate(jobs) for position in range(len(job.candidates))]
        self.index = {net: k for k, net in enumerate(nets)}
        self.params: list[tuple[torch.Tensor, ...] | None] = [None] * len(nets)
        self.epochs = np.zeros(len(nets), dtype=int)
        weighted = head.sample_weight and ctx.options.balanced
        dim = self.prep.features(0, jobs[0].rows[:1]).shape[1]  # after preprocessing (pcaN changes it)
        self.dim = dim
        per_chunk = max(1, CHUNK_PARAMS // (dim * HIDDEN))
        order = sorted(range(len(nets)), key=lambda k: len(jobs[nets[k][0]].rows))  # similar sizes together
        with cpu_threads():
            for start in range(0, len(order), per_chunk):
                chunk = [nets[k] for k in order[start : start + per_chunk]]
                self._train(head, chunk, weighted=weighted)

    def _train(self, head: HeadSpec, chunk: list[tuple[int, int]], *, weighted: bool) -> None:
        jobs, prep = self.prep.jobs, self.prep
        n_max = max(len(jobs[j].rows) for j, _ in chunk)
        z = torch.zeros(len(chunk), n_max, self.dim, device=self.device)
        target = torch.zeros(len(chunk), n_max, self.n_classes, device=self.device)
        sw = torch.zeros(len(chunk), n_max, device=self.device)
        alpha = torch.zeros(len(chunk), device=self.device)
        epochs = torch.full((len(chunk),), MAX_EPOCHS, device=self.device)
        stopping = [jobs[j].stop_rows is not None and len(jobs[j].stop_rows) > 0 for j, _ in chunk]
        n_stop = max([min(len(jobs[j].stop_rows), STOP_ROWS) for (j, _), s in zip(chunk, stopping, strict=True)
                      if s], default=0)
        z_stop = torch.zeros(len(chunk), n_stop, z.shape[2], device=self.device)
        t_stop = torch.zeros(len(chunk), n_stop, self.n_classes, device=self.device)
        m_stop = torch.zeros(len(chunk), n_stop, device=self.device)
        for b, (j, position) in enumerate(chunk):
            rows = jobs[j].rows
            z[b, : len(rows)] = prep.features(j, rows).float()
            target[b, : len(rows)] = torch.nn.functional.one_hot(
                torch.as_tensor(prep.ctx.y_all[rows], device=self.device), self.n_classes).float()
            w = prep.weights(j) if weighted else np.ones(len(rows))
            sw[b, : len(rows)] = torch.as_tensor(w / w.sum(), dtype=torch.float32, device=self.device)
            alpha[b] = head.grid[jobs[j].candidates[position]]["alpha"] / len(rows)
            if jobs[j].settled:
                epochs[b] = jobs[j].settled[position]["epochs"]
            if stopping[b]:
                held = jobs[j].stop_rows[np.linspace(0, len(jobs[j].stop_rows) - 1,
                                                     min(len(jobs[j].stop_rows), STOP_ROWS)).astype(int)]
                z_stop[b, : len(held)] = prep.features(j, held).float()
                t_stop[b, : len(held)] = torch.nn.functional.one_hot(
                    torch.as_tensor(prep.ctx.y_all[held], device=self.device), self.n_classes).float()
                m_stop[b, : len(held)] = 1.0 / len(held)
        generator = torch.Generator(device="cpu").manual_seed(0)
        dim = z.shape[2]

        def glorot(fan_in, fan_out, *shape):
            bound = (6.0 / (fan_in + fan_out)) ** 0.5
            return ((torch.rand(*shape, generator=generator) * 2 - 1) * bound).to(self.device)

        params = [glorot(dim, HIDDEN, len(chunk), dim, HIDDEN), glorot(dim, HIDDEN, len(chunk), 1, HIDDEN),
                  glorot(HIDDEN, self.n_classes, len(chunk), HIDDEN, self.n_classes),
                  glorot(HIDDEN, self.n_classes, len(chunk), 1, self.n_classes)]
        for p in params:
            p.requires_grad_(True)
        optimizer = torch.optim.Adam(params, lr=LEARNING_RATE, betas=(0.9, 0.999), eps=1e-8)
        best_loss = torch.full((len(chunk),), float("inf"), device=self.device)
        best = [p.detach().clone() for p in params]
        best_epoch = torch.zeros(len(chunk), device=self.device)
        since = torch.zeros(len(chunk), device=self.device)
        active = torch.ones(len(chunk), dtype=torch.bool, device=self.device)
        has_stop = torch.as_tensor(stopping, device=self.device)
        where = torch.arange(len(chunk))  # batch position -> position in ``chunk`` (stopped networks leave)
        final: list[tuple[tuple[torch.Tensor, ...], int] | None] = [None] * len(chunk)
        for epoch in range(1, int(epochs.max()) + 1):
            active = active & (epoch <= epochs)
            if not bool(active.any()):
                break
            if int(active.sum()) <= len(active) // 2:
                # most networks have stopped: drop them from the batch so that the rest no longer pay for their
                # forward passes and Adam steps (the remaining networks' arithmetic is unchanged)
                keep = active.nonzero().squeeze(1)
                for gone in (~active).nonzero().squeeze(1).tolist():
                    final[int(where[gone])] = (tuple(kept[gone].clone() for kept in best), int(best_epoch[gone]))
                (z, target, sw, alpha, epochs, z_stop, t_stop, m_stop, best_loss, best_epoch, since, active,
                 has_stop) = (t[keep] for t in (z, target, sw, alpha, epochs, z_stop, t_stop, m_stop, best_loss,
                                                best_epoch, since, active, has_stop))
                best = [kept[keep] for kept in best]
                states = [optimizer.state.get(p, {}) for p in params]
                params = [p.detach()[keep].clone().requires_grad_(True) for p in params]
                optimizer = torch.optim.Adam(params, lr=LEARNING_RATE, betas=(0.9, 0.999), eps=1e-8)
                for p, state in zip(params, states, strict=True):
                    if state:
                        optimizer.state[p] = {key: value[keep].clone() if key != "step" else value.clone()
                                              for key, value in state.items()}
                where = where[keep]
            optimizer.zero_grad(set_to_none=True)
            logits = _forward(params, z)
            data = -(sw[..., None] * target * torch.log_softmax(logits, -1)).sum((1, 2))
            penalty = 0.5 * alpha * ((params[0] ** 2).sum((1, 2)) + (params[2] ** 2).sum((1, 2)))
            ((data + penalty) * active).sum().backward()
            for p in params:  # a stopped network's gradient is zero, but Adam's momentum would still move it
                p.grad.mul_(active.view(-1, *[1] * (p.dim() - 1)))
            frozen = not bool(active.all())
            saved = [p.detach().clone() for p in params] if frozen else []
            optimizer.step()
            with torch.no_grad():
                for p, s in zip(params, saved, strict=False):  # nothing saved: every network active
                    p.copy_(torch.where(active.view(-1, *[1] * (p.dim() - 1)), p, s))
                if bool(has_stop.any()):
                    held = -(m_stop[..., None] * t_stop * torch.log_softmax(_forward(params, z_stop), -1)).sum((1, 2))
                    better = active & has_stop & (held < best_loss - 1e-4)
                    best_loss = torch.where(better, held, best_loss)
                    best_epoch = torch.where(better, torch.full_like(best_epoch, epoch), best_epoch)
                    since = torch.where(better, torch.zeros_like(since), since + 1)
                    for p, kept in zip(params, best, strict=True):
                        kept.copy_(torch.where(better.view(-1, *[1] * (p.dim() - 1)), p, kept))
                    active = active & ~(has_stop & (since >= PATIENCE))
                no_stop = ~has_stop
                if bool(no_stop.any()):
                    for p, kept in zip(params, best, strict=True):
                        kept.copy_(torch.where(no_stop.view(-1, *[1] * (p.dim() - 1)), p, kept))
                best_epoch = torch.where(no_stop & active, torch.full_like(best_epoch, epoch), best_epoch)
        for b in range(len(where)):
            final[int(where[b])] = (tuple(kept[b] for kept in best), int(best_epoch[b]))
        for b, net in enumerate(chunk):
            k = self.index[net]
            self.params[k], self.epochs[k] = final[b]

    def proba(self, jobs: Sequence[int], rows: np.ndarray) -> list[np.ndarray]:
        out = []
        with cpu_threads(), torch.no_grad():
            for j in jobs:
                z = self.prep.features(j, rows).float()
                per = []
                for position in range(len(self.prep.jobs[j].candidates)):
                    w1, b1, w2, b2 = self.params[self.index[(j, position)]]
                    per.append(torch.softmax(torch.relu(z @ w1 + b1) @ w2 + b2, -1))
                out.append(torch.stack(per).double().cpu().numpy())
        return out

    def settled(self, job: int, position: int) -> dict:
        return {"epochs": max(1, int(self.epochs[self.index[(job, position)]]))}


def _forward(params, z: torch.Tensor) -> torch.Tensor:
    w1, b1, w2, b2 = params
    return torch.baddbmm(b2, torch.relu(torch.baddbmm(b1, z, w1)), w2)


def fit_mlp(head: HeadSpec, ctx: ProbeContext, jobs: list[GridJob]) -> MlpModel:
    return MlpModel(head, ctx, jobs)
