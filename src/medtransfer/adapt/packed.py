"""Packed runs: several runs of one (task, backbone, method config) that differ only in training subset and seed
train together in one model.

The frozen weights are held once (those of the first run's model; every run's copy is checked equal), each run's
trainable parameters and buffers are stacked on a leading run axis, and one step runs every run's batch at once
through ``torch.func.vmap`` of ``torch.func.functional_call``: vmap turns each matmul / conv of the adapters into
its batched form (``bmm``) over the run axis, so a GPU sees one R x B batch instead of R batches of B.

Why a packed run equals the run trained alone (same initialisation, data order, seeds):
- each run keeps its own model (built with its seed), generator (shuffling, augmentation), class weights, history,
  early stopping, best state, checkpoint file (in the lone run's format: either can resume the other);
- the loss is the sum of the runs' losses, so run r's gradient is exactly d loss_r / d theta_r;
- AdamW / SGD are per element (moments, weight decay), with one schedule shared (every run has the same number of
  steps: packs hold runs with equally many training rows); gradient-norm clipping is computed per run;
- BatchNorm in train mode sees each run's own batch under vmap (its running statistics are per-run buffers).
A packed run's floating-point sums are ordered differently (batched kernels), so predictions agree within
tolerance, not bit for bit. What cannot pack says why (``pack_refusal``) and runs alone.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, vmap
from tqdm.auto import tqdm

from medtransfer.adapt.registry import HEAD_PREFIX, AdaptMethod
from medtransfer.adapt.train import (
    Checkpoint,
    FitResult,
    Schedule,
    TrainData,
    autocast,
    batch_plan,
    class_weights,
    clip_coefficient,
    load_state,
    peak_memory_mb,
    warmup_cosine,
)
from medtransfer.errors import MedtransferError
from medtransfer.metrics import compute_metrics

# ``adapt --pack``'s default, measured by benchmarks/adapt_packed.py: 8 few-shot LoRA runs of the tiny ViT on this
# 2-core CPU (load ~15) trained 2.3x faster packed than one by one (1.9x whole run), equal MCCs; a GPU gains more
# (the batch grows 8x on an idle card). Full fine-tuning shares no frozen weight and would hold 8 models'
# optimizer state: one by one unless asked.
DEFAULT_PACK = 8
UNSHARED_METHODS = ("fft", "lp-ft")


def default_pack(device: torch.device, method: AdaptMethod) -> int:
    return 1 if method.name in UNSHARED_METHODS else DEFAULT_PACK


def method_refusal(method: AdaptMethod, options, config) -> str | None:
    """Why runs of this method / configuration cannot pack (one line), or None. Checked before any model exists."""
    if method.step_hook is not None:
        return (f"{method.name} changes its parameters' shapes or masks during training (a per-step hook): each run "
                "prunes its own ranks, so the runs cannot share one stacked tensor")
    if getattr(options, "solver", "") == "probe-logreg":
        return "lp's probe-logreg solver fits no gradient epochs: there is no training loop to pack"
    if getattr(options, "dropout", 0.0):
        return ("the method's dropout > 0 draws random masks per step, which a packed step draws for all runs at "
                "once: the runs would not equal the same runs trained alone")
    if config.compile:
        return "--compile compiles one run's model; a packed step runs torch.func.vmap, which it does not compile"
    if config.precision == "fp16":
        return ("fp16's GradScaler skips every run's step when one run's gradients overflow: packed runs would not "
                "equal lone runs (use bf16, the CUDA default)")
    return None


def module_refusal(module: nn.Module) -> str | None:
    """Random layers active in train mode (a backbone's own dropout / drop-path) make packed != alone."""
    for name, layer in module.named_modules():
        rate = getattr(layer, "p", None) if isinstance(layer, nn.modules.dropout._DropoutNd) else \
            getattr(layer, "drop_prob", None)
        if layer.training and rate:
            return (f"{name} drops activations at random in training (p={rate}): a packed step draws its masks "
                    "for all runs at once, so the runs would not equal lone runs")
    return None


@dataclass
class PackedRun:
    """One run of a pack: its module (built with its own seed), data, schedule, train-mode setter, checkpoint."""

    module: nn.Module
    data: TrainData
    schedule: Schedule
    set_mode: Callable[[], None]
    checkpoint: Checkpoint | None = None
    desc: str = "adapt"


@dataclass
class _RunState:
    """What stays per run between epochs (as ``train.fit`` keeps it for one run)."""

    history: list
    elapsed: float
    best_state: dict | None
    best_epoch: int
    best_score: float
    bad_epochs: int
    first_epoch: int
    done: bool = False


class _Stack:
    """The pack's per-run tensors: trainable parameters (leaf tensors with a run axis) and buffers, the optimizer
    over them and its schedule. ``names`` / ``decay`` / ``is_head`` follow ``train.param_groups``'s order, so that a
    run's slice of the optimizer state is a lone run's optimizer state."""

    def __init__(self, runs: list[PackedRun], device: torch.device):
        base = runs[0].module
        schedule = runs[0].schedule
        named = [dict(run.module.named_parameters()) for run in runs]
        trainable = [n for n, p in base.named_parameters() if p.requires_grad]
        for name, parameter in base.named_parameters():
            if not parameter.requires_grad:
                for other in named[1:]:
                    if not torch.equal(other[name], parameter):
                        raise MedtransferError(f"cannot pack these runs: frozen parameter {name} differs between "
                                               "them (each run must start from the same pretrained weights)")
        groups: dict[tuple[bool, bool], list[str]] = {}
        for name in trainable:
            groups.setdefault((name.startswith(HEAD_PREFIX), named[0][name].ndim >= 2), []).append(name)
        self.group_keys = sorted(groups)
        self.names = [n for key in self.group_keys for n in groups[key]]
        self.params = {n: torch.stack([p[n].detach() for p in named]).requires_grad_(True) for n in self.names}
        # per-run buffers: those that differ between runs (the head's standardisation) and BatchNorm statistics
        # (updated in train mode); the others (VeRA's shared projections, position ids) stay shared
        buffers = [dict(run.module.named_buffers()) for run in runs]
        norm_buffers = {f"{m}.{b}" if m else b for m, module in base.named_modules()
                        if isinstance(module, nn.modules.batchnorm._BatchNorm) for b, _ in module.named_buffers()}
        self.buffers = {n: torch.stack([b[n].detach() for b in buffers]) for n in buffers[0]
                        if n in norm_buffers or any(not torch.equal(b[n], buffers[0][n]) for b in buffers[1:])}
        self.config, self.lr, self.head_lr = schedule.config, schedule.lr, schedule.head_lr
        self.device = device
        self._build_optimizer()

    def _build_optimizer(self) -> None:
        config = self.config
        groups = [{"params": [self.params[n] for n in self.names_of(key)], "lr": self.head_lr if key[0] else self.lr,
                   "weight_decay": config.weight_decay if key[1] else 0.0} for key in self.group_keys]
        if config.optimizer == "sgd":
            self.optimizer = torch.optim.SGD(groups, momentum=0.9)
        else:
            self.optimizer = torch.optim.AdamW(groups, fused=self.device.type == "cuda")

    def names_of(self, key: tuple[bool, bool]) -> list[str]:
        return [n for n in self.names if (n.startswith(HEAD_PREFIX), self.params[n].ndim >= 3) == key]

    @property
    def n_runs(self) -> int:
        return next(iter(self.params.values())).shape[0]

    def tensors(self) -> dict[str, torch.Tensor]:
        return {**self.buffers, **self.params}

    def run_state(self, r: int) -> dict[str, torch.Tensor]:
        """Run r's trainable parameters and buffers, as ``train._full_state`` saves a lone run's."""
        return {n: t[r].detach().to("cpu", copy=True) for n, t in self.tensors().items()}

    def run_optimizer_state(self, r: int) -> dict:
        """Run r's slice of the optimizer state: a lone run's ``optimizer.state_dict()``."""
        saved = self.optimizer.state_dict()
        state = {index: {k: _slice(v, r) for k, v in entry.items()} for index, entry in saved["state"].items()}
        return {"state": state, "param_groups": saved["param_groups"]}

    def load_optimizer(self, saved: list[dict]) -> None:
        """Stack the lone-format optimizer states of each run (``--resume``) into the pack's optimizer."""
        states = [s["optimizer"] for s in saved]
        merged = {"param_groups": states[0]["param_groups"], "state": {}}
        for index, entry in states[0]["state"].items():
            merged["state"][index] = {k: (v if k == "step" or not torch.is_tensor(v) or v.ndim == 0
                                          else torch.stack([s["state"][index][k] for s in states]))
                                      for k, v in entry.items()}
        self.optimizer.load_state_dict(merged)

    def keep(self, rows: list[int]) -> None:
        """Drop the runs not in ``rows`` (they stopped early): slice every tensor and the optimizer state, so the
        pack stops paying for their forward and backward passes."""
        index = torch.tensor(rows, device=self.device)
        saved = self.optimizer.state_dict()
        lrs = [group["lr"] for group in self.optimizer.param_groups]
        self.params = {n: p.detach()[index].clone().requires_grad_(True) for n, p in self.params.items()}
        self.buffers = {n: b[index].clone() for n, b in self.buffers.items()}
        self._build_optimizer()
        saved["state"] = {i: {k: (v if k == "step" or not torch.is_tensor(v) or v.ndim == 0 else v[index.to(v.device)])
                              for k, v in entry.items()} for i, entry in saved["state"].items()}
        self.optimizer.load_state_dict(saved)
        for group, lr in zip(self.optimizer.param_groups, lrs, strict=True):
            group["lr"] = lr

    def clip_per_run(self, max_norm: float) -> None:
        """``clip_grad_norm_`` per run: each run's norm over its own slices of every parameter."""
        grads = [p.grad for p in self.params.values() if p.grad is not None]
        if not grads:
            return
        norms = torch.stack([g.reshape(g.shape[0], -1).float().pow(2).sum(1) for g in grads]).sum(0).sqrt()
        coefficient = clip_coefficient(norms, max_norm)
        for g in grads:
            g.mul_(coefficient.view(-1, *[1] * (g.ndim - 1)).to(g.dtype))


def _slice(value, r: int):
    return value[r].clone() if torch.is_tensor(value) and value.ndim >= 1 else value


def fit_packed(runs: list[PackedRun], *, device: torch.device, progress: bool = True) -> list[FitResult]:
    """Train several runs as one pack; afterwards each run's module holds its best epoch's weights, as after
    ``train.fit``. Runs resumed at different epochs (a kill between their state files) train as separate packs."""
    starts = [_start_state(run) for run in runs]
    epochs = sorted({s[0].first_epoch for s in starts})
    if len(epochs) > 1:
        results: dict[int, FitResult] = {}
        for epoch in epochs:
            members = [i for i, s in enumerate(starts) if s[0].first_epoch == epoch]
            for i, result in zip(members, fit_packed([runs[i] for i in members], device=device, progress=progress),
                                 strict=True):
                results[i] = result
        return [results[i] for i in range(len(runs))]
    return _PackedFit(runs, starts, device, progress).run()


def _start_state(run: PackedRun) -> tuple[_RunState, dict | None]:
    checkpoint = run.checkpoint
    if checkpoint is not None and checkpoint.resume and checkpoint.path.is_file():
        saved = load_state(checkpoint.path)
        if saved.get("settings") != run.schedule.settings():
            raise MedtransferError(
                f"the run in {checkpoint.folder} was started with other settings; drop --resume, or use the same "
                "settings")
        return _RunState(saved["history"], saved["elapsed"], saved["best_state"], saved["best_epoch"],
                         saved["best_score"], saved["bad_epochs"], saved["epoch"]), saved
    return _RunState([], 0.0, None, 0, -math.inf, 0, 0), None


class _PackedFit:
    def __init__(self, runs: list[PackedRun], starts: list, device: torch.device, progress: bool):
        self.runs, self.device, self.progress = runs, device, progress
        self.states = [s[0] for s in starts]
        config = runs[0].schedule.config
        settings = {run.schedule.settings() for run in runs}
        sizes = {len(run.data.train_rows) for run in runs}
        if len(settings) > 1 or len(sizes) > 1:
            raise MedtransferError("cannot pack these runs: a pack holds runs of one configuration with equally "
                                   f"many training rows (got {len(settings)} configurations, sizes {sorted(sizes)})")
        self.config = config
        self.base = runs[0].module
        saved = [s[1] for s in starts]
        if saved[0] is not None:  # each run's module first: the stack then sees which buffers differ
            for run, state in zip(runs, saved, strict=True):
                run.module.load_state_dict(state["model"], strict=False)
        self.stack = _Stack(runs, device)
        n_train = sizes.pop()
        self.batch_size, self.n_batches = batch_plan(n_train, config.batch_size)
        self.steps_per_epoch = math.ceil(self.n_batches / config.grad_accumulation)
        self.total_steps = config.epochs * self.steps_per_epoch
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.stack.optimizer,
                                                           warmup_cosine(self.total_steps, config.warmup_fraction))
        if saved[0] is not None:  # as train.fit resumes: the optimizer's state (and rates) after the schedule's
            self.stack.load_optimizer(saved)
            self.scheduler.load_state_dict(saved[0]["scheduler"])
            for run, state in zip(runs, saved, strict=True):
                run.data.generator.set_state(state["generator"])
            torch.set_rng_state(saved[0]["torch_rng"])
        self.weights = [class_weights(run.data.y_train, run.data.n_classes).to(device)
                        if config.balance == "weighted-loss" else None for run in runs]
        self.active = list(range(len(runs)))  # run indices, in the stack's order
        self.higher_better = config.early_stopping == "mcc"

    def forward(self, images: torch.Tensor, *, shared_images: bool = False) -> torch.Tensor:
        """Logits (R x B x K) of every active run: ``images`` R x B x ... (or one B x ... batch for all)."""
        def one(tensors, x):
            return functional_call(self.base, tensors, (x,))
        return vmap(one, in_dims=(0, None if shared_images else 0), randomness="different")(self.stack.tensors(),
                                                                                           images)

    def run(self) -> list[FitResult]:
        start = self.start = time.perf_counter()
        config, device = self.config, self.device
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        resumed = [s.first_epoch for s in self.states]
        epoch = self.states[0].first_epoch
        for epoch in range(self.states[0].first_epoch, config.epochs):
            stopping = [i for i in self.active if self.states[i].bad_epochs >= config.patience
                        and epoch >= config.min_epochs]
            if stopping:
                self._finish(stopping)
                if not self.active:
                    break
            self.runs[self.active[0]].set_mode()
            self._epoch(epoch)
        if self.active:
            self._finish(list(self.active))
        return [self._result(i, start, resumed[i]) for i in range(len(self.runs))]

    def _orders(self) -> list[torch.Tensor]:
        orders = []
        for i in self.active:
            data = self.runs[i].data
            n_train = len(data.train_rows)
            if self.config.balance == "sampler":
                sample_weights = torch.as_tensor(
                    1.0 / np.bincount(data.y_train, minlength=data.n_classes)[data.y_train], dtype=torch.float)
                orders.append(torch.multinomial(sample_weights, n_train, replacement=True, generator=data.generator))
            else:
                orders.append(torch.randperm(n_train, generator=data.generator))
        return orders

    def _epoch(self, epoch: int) -> None:
        config, device, stack = self.config, self.device, self.stack
        orders = self._orders()
        running = torch.zeros(len(self.active), device=device)
        seen = 0
        bar = tqdm(range(self.n_batches), desc=f"pack of {len(self.active)} epoch {epoch + 1}/{config.epochs}",
                   unit="batch", disable=not self.progress, leave=False)
        for b in bar:
            images, targets = [], []
            for order, i in zip(orders, self.active, strict=True):
                data = self.runs[i].data
                index = order[b * self.batch_size:(b + 1) * self.batch_size]
                images.append(data.inputs(data.train_rows[index], True))
                targets.append(torch.as_tensor(data.y_train, dtype=torch.long)[index].to(device, non_blocking=True))
            with autocast(device, config.precision):
                logits = self.forward(torch.stack(images))
            losses = torch.stack([F.cross_entropy(logits[r].float(), targets[r], weight=self.weights[i])
                                  for r, i in enumerate(self.active)])
            (losses.sum() / config.grad_accumulation).backward()
            if (b + 1) % config.grad_accumulation == 0 or b == self.n_batches - 1:
                if config.max_grad_norm:
                    stack.clip_per_run(config.max_grad_norm)
                stack.optimizer.step()
                self.scheduler.step()
                stack.optimizer.zero_grad(set_to_none=True)
            running += losses.detach() * len(targets[0])
            seen += len(targets[0])
        self._evaluate(epoch, (running / max(seen, 1)).tolist())

    @torch.no_grad()
    def _evaluate(self, epoch: int, train_losses: list[float]) -> None:
        self.base.eval()
        val = [self.runs[i].data.val_rows for i in self.active]
        probabilities = self._predict_val(val) if len(val[0]) else [None] * len(self.active)
        for r, i in enumerate(self.active):
            run, state = self.runs[i], self.states[i]
            record = {"epoch": epoch + 1, "train_loss": train_losses[r]}
            if probabilities[r] is not None:
                weight = self.weights[i]
                y_val = run.data.y_val
                val_loss = F.nll_loss(torch.log(torch.from_numpy(probabilities[r]).float().clamp_min(1e-12)),
                                      torch.as_tensor(y_val, dtype=torch.long),
                                      weight=weight.cpu() if weight is not None else None).item()
                record.update(val_loss=val_loss, val_mcc=compute_metrics(y_val, probabilities[r])["mcc"])
                score = record["val_mcc"] if self.higher_better else -val_loss
                if score > state.best_score + 1e-9:
                    state.best_state, state.best_epoch, state.best_score, state.bad_epochs = (
                        self.stack.run_state(r), epoch + 1, score, 0)
                else:
                    state.bad_epochs += 1
            state.history.append(record)
            if self.progress:
                shown = ", ".join(f"{k} {v:.4f}" for k, v in record.items() if k != "epoch")
                tqdm.write(f"{run.desc} epoch {epoch + 1}/{self.config.epochs}: {shown}")
            self._save(i, r, epoch)

    def _predict_val(self, val: list[torch.Tensor]) -> list[np.ndarray]:
        """Validation probabilities per active run; runs of one fold share their val rows: one vmapped pass."""
        config, device = self.config, self.device
        eval_batch = config.eval_batch_size or 2 * config.batch_size
        shared = all(torch.equal(v, val[0]) for v in val)
        out: list[list[torch.Tensor]] = [[] for _ in val]
        for begin in range(0, len(val[0]), eval_batch):
            if shared:
                images = self.runs[self.active[0]].data.inputs(val[0][begin:begin + eval_batch], False)
            else:
                images = torch.stack([self.runs[i].data.inputs(v[begin:begin + eval_batch], False)
                                      for v, i in zip(val, self.active, strict=True)])
            with autocast(device, config.precision):
                logits = self.forward(images, shared_images=shared)
            for r in range(len(val)):
                out[r].append(torch.softmax(logits[r].float(), dim=1).cpu())
        return [torch.cat(o).double().numpy() for o in out]

    def _save(self, i: int, r: int, epoch: int) -> None:
        run, state = self.runs[i], self.states[i]
        if run.checkpoint is None:
            return
        run.checkpoint.folder.mkdir(parents=True, exist_ok=True)
        path = run.checkpoint.path
        tmp = path.with_suffix(".tmp")
        torch.save({
            "epoch": epoch + 1, "history": state.history,
            "elapsed": state.elapsed + (time.perf_counter() - self.start) / len(self.runs),
            "model": self.stack.run_state(r), "optimizer": self.stack.run_optimizer_state(r),
            "scheduler": self.scheduler.state_dict(),
            "scaler": torch.amp.GradScaler(self.device.type, enabled=False).state_dict(),
            "generator": run.data.generator.get_state(), "torch_rng": torch.get_rng_state(),
            "best_state": state.best_state, "best_epoch": state.best_epoch, "best_score": state.best_score,
            "bad_epochs": state.bad_epochs, "settings": run.schedule.settings(),
        }, tmp)
        os.replace(tmp, path)

    def _finish(self, leaving: list[int]) -> None:
        """Runs that stop: their module gets their best (or last) weights; the pack drops them."""
        for i in leaving:
            r = self.active.index(i)
            state = self.states[i]
            weights = state.best_state if state.best_state is not None else self.stack.run_state(r)
            self.runs[i].module.load_state_dict(weights, strict=False)
            self.runs[i].module.eval()
        self.active = [i for i in self.active if i not in leaving]
        if self.active:
            self.stack.keep([r for r, i in enumerate(self._order_before(leaving)) if i in self.active])
            # the schedule follows the new optimizer (its state: step count and base rates; the rates of now)
            lrs = [group["lr"] for group in self.stack.optimizer.param_groups]
            saved = self.scheduler.state_dict()
            self.scheduler = torch.optim.lr_scheduler.LambdaLR(
                self.stack.optimizer, warmup_cosine(self.total_steps, self.config.warmup_fraction))
            self.scheduler.load_state_dict(saved)
            for group, lr in zip(self.stack.optimizer.param_groups, lrs, strict=True):
                group["lr"] = lr

    def _order_before(self, leaving: list[int]) -> list[int]:
        return sorted(self.active + leaving)

    def _result(self, i: int, start: float, resumed_from: int) -> FitResult:
        state = self.states[i]
        return FitResult(
            epochs_run=len(state.history), best_epoch=state.best_epoch,
            best_score=state.best_score if self.higher_better else -state.best_score,
            # the pack's time shared out: summed over a pack's rows it is the pack's wall time
            train_seconds=state.elapsed + (time.perf_counter() - start) / len(self.runs),
            peak_memory_mb=peak_memory_mb(self.device), history=state.history, resumed_from=resumed_from,
            pack_size=len(self.runs))
