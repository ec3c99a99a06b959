"""The training loop: AdamW (or SGD), warmup + cosine, class-weighted CE or a balanced sampler, early stopping
on validation MCC or loss with the best epoch restored, bf16 (or fp16 with a GradScaler) autocast and
channels_last on CUDA, gradient accumulation, optional ``torch.compile``, and a resumable per-epoch state file.

``fit`` takes what travels together as three small dataclasses: the data (``TrainData``), the schedule
(``Schedule``) and where its state goes (``Checkpoint``).
"""

from __future__ import annotations

import errno
import json
import math
import os
import resource
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from medtransfer import weighting
from medtransfer.adapt.augment import AugmentSpec, augment_batch
from medtransfer.adapt.config import AdaptConfig
from medtransfer.adapt.data import PixelStore, normalize
from medtransfer.adapt.registry import HEAD_PREFIX
from medtransfer.backbones.registry import Preprocessing, checkpoint_refusal
from medtransfer.device import resolve_precision
from medtransfer.errors import MedtransferError
from medtransfer.metrics import compute_metrics

STATE_FILE = "state.pt"
STATE_KEYS = frozenset({"epoch", "history", "elapsed", "model", "optimizer", "scheduler", "scaler", "generator",
                        "torch_rng", "best_state", "best_epoch", "best_score", "bad_epochs", "settings"})


class ImageInputs:
    """Batches of images from the PixelStore: augmented when training, normalised, on the device."""

    def __init__(self, store: PixelStore, preprocessing: Preprocessing, device: torch.device, *,
                 augment: AugmentSpec | None, channels_last: bool, generator: torch.Generator):
        self.store, self.preprocessing, self.device = store, preprocessing, device
        self.augment, self.channels_last, self.generator = augment, channels_last, generator
        self._stats: tuple[torch.Tensor, torch.Tensor] | None = None

    def __call__(self, index: torch.Tensor, train: bool) -> torch.Tensor:
        images = self.store.batch(index, self.device)
        if train and self.augment is not None:
            images = augment_batch(images, self.augment, self.generator)
        if self._stats is None:
            self._stats = (torch.tensor(self.preprocessing.mean, device=self.device).view(1, 3, 1, 1),
                           torch.tensor(self.preprocessing.std, device=self.device).view(1, 3, 1, 1))
        images = normalize(images, self.preprocessing, self._stats)
        if self.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        return images


class FeatureInputs:
    """Fixed embeddings (frozen backbone, no augmentation): the ``lp`` fast path; index = PixelStore rows."""

    def __init__(self, features: torch.Tensor, rows: torch.Tensor, n_store: int):
        self.features = features
        self.lookup = torch.full((n_store,), -1, dtype=torch.long)
        self.lookup[rows] = torch.arange(len(rows))

    def __call__(self, index: torch.Tensor, train: bool) -> torch.Tensor:
        return self.features[self.lookup[index].to(self.features.device)]


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """``vocabulary.PRECISIONS`` through ``device.resolve_precision``; fp16 only on CUDA, where the loop scales
    the loss (GradScaler) so that small fp16 gradients do not underflow to zero."""
    dtype = resolve_precision(precision, device)
    if dtype == torch.float16 and device.type != "cuda":
        raise MedtransferError(
            f"--precision fp16 trains only on a CUDA device (with a GradScaler); on {device.type} use bf16 or fp32")
    return dtype


def autocast(device: torch.device, precision: str):
    dtype = autocast_dtype(precision, device)
    return torch.autocast(device_type=device.type, dtype=dtype or torch.bfloat16, enabled=dtype is not None)


@torch.no_grad()
def embed_rows(model: nn.Module, inputs: ImageInputs, rows: torch.Tensor, *, batch_size: int,
               device: torch.device, precision: str) -> torch.Tensor:
    """Embeddings (float32, on ``device``) of PixelStore rows through ``model.embed``, without augmentation."""
    out = []
    for start in range(0, len(rows), batch_size):
        with autocast(device, precision):
            out.append(model.embed(inputs(rows[start:start + batch_size], False)).float())
    return torch.cat(out) if out else torch.zeros(0)


@torch.no_grad()
def predict(forward: Callable, inputs, rows: torch.Tensor, *, batch_size: int, device: torch.device,
            precision: str) -> np.ndarray:
    """Class probabilities (N x K, float64) for PixelStore rows."""
    out = []
    for start in range(0, len(rows), batch_size):
        with autocast(device, precision):
            logits = forward(inputs(rows[start:start + batch_size], False))
        out.append(torch.softmax(logits.float(), dim=1).cpu())
    return torch.cat(out).double().numpy()


@dataclass(frozen=True)
class TrainData:
    """What one fit learns from: PixelStore rows and labels (train; val for early stopping, may be empty)."""

    inputs: Callable[[torch.Tensor, bool], torch.Tensor]  # (rows, train?) -> model input batch on the device
    train_rows: torch.Tensor
    y_train: np.ndarray
    val_rows: torch.Tensor
    y_val: np.ndarray
    n_classes: int
    generator: torch.Generator  # shuffling / sampling (and the inputs' augmentation); saved for --resume


@dataclass(frozen=True)
class Schedule:
    """How the fit runs: the run's AdaptConfig and the learning rates the method resolved. ``method_options``
    (JSON of the method's options) is part of what a resumed run must match."""

    config: AdaptConfig
    lr: float
    head_lr: float
    method_options: str = "{}"
    # the method's per-step hook, ``on_step(step, total_steps)`` after each optimizer step and before the
    # gradients are cleared (AdaLoRA's rank budget); not part of ``settings``
    on_step: Callable[[int, int], None] | None = field(default=None, compare=False, repr=False)

    def settings(self) -> str:
        return json.dumps({"config": self.config.to_json(), "lr": [self.lr, self.head_lr],
                           "options": self.method_options}, sort_keys=True)


@dataclass(frozen=True)
class Checkpoint:
    """Where the per-epoch state file goes, and whether a state found there is continued (``--resume``)."""

    folder: Path
    resume: bool = False

    @property
    def path(self) -> Path:
        return self.folder / STATE_FILE


@dataclass
class FitResult:
    epochs_run: int
    best_epoch: int  # 1-based; 0 when there was no validation set (the last epoch is kept)
    best_score: float
    train_seconds: float
    peak_memory_mb: float
    history: list[dict] = field(default_factory=list)
    resumed_from: int = 0  # epochs already done when this process picked the run up
    pack_size: int = 1  # runs trained together with this one (``adapt.packed``); train_seconds is its share


def class_weights(labels: np.ndarray, n_classes: int) -> torch.Tensor:
    """The loss's per-class weights: ``weighting.class_weights`` ("balanced") as a tensor."""
    return torch.tensor(weighting.class_weights(labels, n_classes, "balanced"), dtype=torch.float32)


def param_groups(module: nn.Module, lr: float, head_lr: float, weight_decay: float) -> list[dict]:
    """Head at ``head_lr``, the rest at ``lr``; no weight decay on 1-D tensors (biases, norms, scaling vectors)."""
    groups: dict[tuple[bool, bool], list] = {}
    for name, parameter in module.named_parameters():
        if parameter.requires_grad:
            groups.setdefault((name.startswith(HEAD_PREFIX), parameter.ndim >= 2), []).append(parameter)
    return [{"params": params, "lr": head_lr if is_head else lr, "weight_decay": weight_decay if decay else 0.0}
            for (is_head, decay), params in sorted(groups.items())]


def batch_plan(n_train: int, batch_size: int) -> tuple[int, int]:
    """(batch size, batches per epoch): a final batch of one sample is dropped (BatchNorm cannot train on it)."""
    batch_size = min(batch_size, n_train)
    n_batches = math.ceil(n_train / batch_size)
    if n_batches > 1 and n_train % batch_size == 1:
        n_batches -= 1
    return batch_size, n_batches


def clip_coefficient(norms: torch.Tensor, max_norm: float) -> torch.Tensor:
    """The factor ``torch.nn.utils.clip_grad_norm_`` scales gradients by, for gradient norm(s) ``norms``:
    ``min(1, max_norm / (norm + 1e-6))`` (torch/nn/utils/clip_grad.py); a packed step applies it per run."""
    return (max_norm / (norms + 1e-6)).clamp(max=1.0)


def warmup_cosine(total_steps: int, warmup_fraction: float) -> Callable[[int], float]:
    warmup = round(total_steps * warmup_fraction)

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, total_steps - warmup)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return factor


def peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # process peak RSS on CPU (Linux: kB)


def _full_state(module: nn.Module) -> dict[str, torch.Tensor]:
    state = {n: p.detach().to("cpu", copy=True) for n, p in module.named_parameters() if p.requires_grad}
    state.update({n: b.detach().to("cpu", copy=True) for n, b in module.named_buffers()})
    return state


def save_state(state_path: Path, state: dict) -> None:
    """Write the training state through a temporary renamed over it: a kill or a full disk leaves the last saved
    epoch as it was, and a failed write is one line (torch.save raises RuntimeError "file write failed" when the
    disk fills: its zip writer reports no errno), with the temporary removed."""
    tmp = state_path.with_suffix(".tmp")
    try:
        torch.save(state, tmp)
        os.replace(tmp, state_path)
    except (OSError, RuntimeError) as exc:
        tmp.unlink(missing_ok=True)
        text = str(exc)
        # torch's zip writer reports a full disk as "file write failed", "iostream error" or "unexpected pos": no
        # errno, so the free space decides
        full = getattr(exc, "errno", None) == errno.ENOSPC or "No space left" in text \
            or shutil.disk_usage(state_path.parent).free < 64 * 2**20
        reason = "the disk is full" if full else (getattr(exc, "strerror", None) or text.splitlines()[0][:160])
        raise MedtransferError(f"cannot write the training state {state_path}: {reason}; the last saved epoch is "
                               "kept -- free space and run the same command with --resume") from None


def load_state(path: Path) -> dict:
    """The training state saved by ``fit``, read with ``weights_only=True``: tensors, numbers, strings and
    containers only, so a crafted ``state.pt`` in a results folder cannot run code (torch's restricted
    unpickler, https://pytorch.org/docs/stable/notes/serialization.html#weights-only); anything else is one
    clear error and nothing of it is executed."""
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # UnpicklingError for a forbidden global, RuntimeError/EOFError for a torn file
        raise MedtransferError(f"{checkpoint_refusal(path, exc)}; delete it and run without --resume") from None
    if not isinstance(saved, dict) or not set(saved) >= STATE_KEYS:
        raise MedtransferError(f"refusing the training state {path}: it lacks the fields medtransfer saves; "
                               "delete it and run without --resume")
    return saved


def fit(
    module: nn.Module,
    data: TrainData,
    schedule: Schedule,
    *,
    device: torch.device,
    set_mode: Callable[[], None],
    checkpoint: Checkpoint | None = None,
    progress: bool = True,
    desc: str = "adapt",
) -> FitResult:
    """Train ``module``'s trainable parameters; afterwards ``module`` holds the best epoch's weights."""
    start = time.perf_counter()
    config, generator = schedule.config, data.generator
    train_rows, y_train, val_rows, y_val = data.train_rows, data.y_train, data.val_rows, data.y_val
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    forward = torch.compile(module) if config.compile else module
    params = [p for p in module.parameters() if p.requires_grad]
    if not params:
        raise MedtransferError("nothing to train: the method left no parameter trainable")
    groups = param_groups(module, schedule.lr, schedule.head_lr, config.weight_decay)
    if config.optimizer == "sgd":
        optimizer = torch.optim.SGD(groups, momentum=0.9)
    else:
        optimizer = torch.optim.AdamW(groups, fused=device.type == "cuda")
    # fp16 gradients underflow without loss scaling; with bf16 / fp32 the scaler is a no-op
    scaler = torch.amp.GradScaler(device.type, enabled=autocast_dtype(config.precision, device) == torch.float16)
    n_train = len(train_rows)
    batch_size, n_batches = batch_plan(n_train, config.batch_size)
    steps_per_epoch = math.ceil(n_batches / config.grad_accumulation)
    total_steps = config.epochs * steps_per_epoch
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_cosine(total_steps, config.warmup_fraction))
    weight = class_weights(y_train, data.n_classes).to(device) if config.balance == "weighted-loss" else None
    y_train_t = torch.as_tensor(y_train, dtype=torch.long)
    y_val_t = torch.as_tensor(y_val, dtype=torch.long)
    sample_weights = torch.as_tensor(1.0 / np.bincount(y_train, minlength=data.n_classes)[y_train],
                                     dtype=torch.float)
    eval_batch = config.eval_batch_size or 2 * config.batch_size
    higher_better = config.early_stopping == "mcc"

    first_epoch, history, elapsed = 0, [], 0.0
    best_state, best_epoch, best_score, bad_epochs = None, 0, -math.inf, 0
    state_path = checkpoint.path if checkpoint is not None else None
    if checkpoint is not None and checkpoint.resume and state_path.is_file():
        saved = load_state(state_path)
        if saved.get("settings") != schedule.settings():
            raise MedtransferError(
                f"the run in {checkpoint.folder} was started with other settings; drop --resume, or use the same "
                "settings")
        module.load_state_dict(saved["model"], strict=False)
        optimizer.load_state_dict(saved["optimizer"])
        scheduler.load_state_dict(saved["scheduler"])
        scaler.load_state_dict(saved["scaler"])
        generator.set_state(saved["generator"])
        torch.set_rng_state(saved["torch_rng"])
        first_epoch, history, elapsed = saved["epoch"], saved["history"], saved["elapsed"]
        best_state, best_epoch, best_score, bad_epochs = (saved["best_state"], saved["best_epoch"],
                                                          saved["best_score"], saved["bad_epochs"])
    resumed_from = first_epoch

    epoch = first_epoch
    for epoch in range(first_epoch, config.epochs):
        if bad_epochs >= config.patience and epoch >= config.min_epochs:
            break
        set_mode()
        if config.balance == "sampler":
            order = torch.multinomial(sample_weights, n_train, replacement=True, generator=generator)
        else:
            order = torch.randperm(n_train, generator=generator)
        bar = tqdm(range(n_batches), desc=f"{desc} epoch {epoch + 1}/{config.epochs}", unit="batch",
                   disable=not progress, leave=False)
        running, seen = torch.zeros((), device=device), 0  # summed on the device: no sync per step
        for b in bar:
            index = order[b * batch_size:(b + 1) * batch_size]
            images = data.inputs(train_rows[index], True)
            target = y_train_t[index].to(device, non_blocking=True)
            with autocast(device, config.precision):
                logits = forward(images)
            loss = F.cross_entropy(logits.float(), target, weight=weight)
            scaler.scale(loss / config.grad_accumulation).backward()
            if (b + 1) % config.grad_accumulation == 0 or b == n_batches - 1:
                if config.max_grad_norm:
                    scaler.unscale_(optimizer)
                    torch.nn.utils.clip_grad_norm_(params, config.max_grad_norm)  # as clip_coefficient
                scaler.step(optimizer)
                scaler.update()
                scheduler.step()
                if schedule.on_step is not None:
                    schedule.on_step(scheduler.last_epoch, total_steps)
                optimizer.zero_grad(set_to_none=True)
            running += loss.detach() * len(index)
            seen += len(index)
            if progress and (b % 20 == 0 or b == n_batches - 1):
                bar.set_postfix(loss=f"{running.item() / seen:.4f}")
        record = {"epoch": epoch + 1, "train_loss": running.item() / max(seen, 1)}
        if len(val_rows):
            module.eval()
            probabilities = predict(forward, data.inputs, val_rows, batch_size=eval_batch, device=device,
                                    precision=config.precision)
            val_loss = F.nll_loss(torch.log(torch.from_numpy(probabilities).float().clamp_min(1e-12)), y_val_t,
                                  weight=weight.cpu() if weight is not None else None).item()
            record.update(val_loss=val_loss, val_mcc=compute_metrics(y_val, probabilities)["mcc"])
            score = record["val_mcc"] if higher_better else -val_loss
            if score > best_score + 1e-9:
                best_state, best_epoch, best_score, bad_epochs = _full_state(module), epoch + 1, score, 0
            else:
                bad_epochs += 1
        history.append(record)
        if progress:
            shown = ", ".join(f"{k} {v:.4f}" for k, v in record.items() if k != "epoch")
            tqdm.write(f"{desc} epoch {epoch + 1}/{config.epochs}: {shown}")
        if state_path is not None:
            checkpoint.folder.mkdir(parents=True, exist_ok=True)
            save_state(state_path, {
                "epoch": epoch + 1, "history": history, "elapsed": elapsed + time.perf_counter() - start,
                "model": _full_state(module), "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict(),
                "generator": generator.get_state(), "torch_rng": torch.get_rng_state(), "best_state": best_state,
                "best_epoch": best_epoch, "best_score": best_score, "bad_epochs": bad_epochs,
                "settings": schedule.settings(),
            })
    if best_state is not None:
        module.load_state_dict(best_state, strict=False)
    module.eval()
    return FitResult(
        epochs_run=len(history), best_epoch=best_epoch,
        best_score=best_score if higher_better else -best_score,
        train_seconds=elapsed + time.perf_counter() - start, peak_memory_mb=peak_memory_mb(device),
        history=history, resumed_from=resumed_from,
    )
