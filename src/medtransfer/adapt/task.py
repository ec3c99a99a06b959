"""One task of an adapt run: build the model, initialise its head, train (and refit), test, and make the row.

``AdaptJob`` is what every task of a run shares (backbone, method and its options, config, pixels, device);
``run_task(job, task, ...)`` returns the task's result row and test predictions. ``adapt.run`` enumerates the
tasks, skips finished ones and writes the rows.
"""

from __future__ import annotations

import copy
import json
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn

from medtransfer.adapt.augment import AugmentSpec
from medtransfer.adapt.config import AdaptConfig
from medtransfer.adapt.data import PixelStore
from medtransfer.adapt.methods import AdaptMethod
from medtransfer.adapt.model import Classifier, parameter_counts, set_train_mode, trained_state
from medtransfer.adapt.options import MethodOptions, PeftOptions
from medtransfer.adapt.train import (
    STATE_FILE,
    Checkpoint,
    FeatureInputs,
    FitResult,
    ImageInputs,
    Schedule,
    TrainData,
    embed_rows,
    fit,
    predict,
)
from medtransfer.backbones.registry import BackboneSpec
from medtransfer.backbones.vit import without_unused_projection
from medtransfer.errors import MedtransferError, first_line
from medtransfer.metrics import compute_metrics, is_degenerate, predict_labels
from medtransfer.results import ResultRow
from medtransfer.splits.schema import SplitsFile
from medtransfer.splits.tasks import Task
from medtransfer.vocabulary import LOGREG_C_GRID

STANDARDIZE_ROWS = 1024


@dataclass(frozen=True)
class AdaptJob:
    """What every task of one run shares."""

    pristine: nn.Module  # the pretrained backbone; each task wraps a deep copy
    spec: BackboneSpec
    method: AdaptMethod
    options: MethodOptions
    config: AdaptConfig
    splits: SplitsFile
    store: PixelStore
    device: torch.device
    weights: str = "default"  # as probe writes it: "default", "random" or the path
    weights_source: str = ""

    @property
    def label(self) -> str:
        return self.method.label(self.options)

    @property
    def n_classes(self) -> int:
        return len(self.splits.classes)


@dataclass(frozen=True)
class TaskRun:
    """How one task runs in this process: its folder, ``--resume``, progress bars, the log, its bar's title."""

    folder: Path
    resume: bool = False
    progress: bool = True
    log: Callable[[str], None] = print
    first: bool = False  # the run's first task: log parameter counts, smoke-test a peft wrapper
    desc: str = "adapt"


def build_model(pristine: nn.Module, spec: BackboneSpec, method: AdaptMethod, *, n_classes: int, seed: int = 0,
                options: MethodOptions | None = None, config: AdaptConfig | None = None) -> Classifier:
    """A fresh copy of the pretrained backbone, wrapped by ``method``, with a new head (seeded)."""
    torch.manual_seed(seed)
    options = options if options is not None else method.make_options()
    # the pre-projection feature is the embedding: a CLIP projection head would be dead weight
    backbone = method.apply(without_unused_projection(copy.deepcopy(pristine)), spec, options,
                            config or AdaptConfig())
    return Classifier(backbone, spec.embed_dim, n_classes)


def _labels(splits: SplitsFile, ids: list[str]) -> np.ndarray:
    try:
        return np.array([splits.labels[i] for i in ids], dtype=int)
    except KeyError as exc:
        raise MedtransferError(f"splits file lists sample {exc} in a fold but gives no label for it") from exc


def run_task(job: AdaptJob, task: Task, run: TaskRun) -> tuple[ResultRow, pd.DataFrame | None]:
    """Train, test and describe one task; a task that cannot train is a ``failed`` row, not an exception."""
    columns = {
        "backbone": job.spec.name, "method": job.label, "regime": task.regime, "shots": task.shots,
        "seed": task.seed, "fold": task.fold, "fraction": float(task.fraction), "n_test": len(task.test),
        "n_train": len(task.train), "weights": job.weights, "splits": job.splits.fingerprint,
        "positive": job.splits.positive or "", "repeat": task.repeat,
        # the columns probe fills that mean the same for adapt: the head standardises embeddings with
        # training-row statistics, the loss is class-weighted or not, and the threshold is 0.5
        "preprocessing": "standardize", "threshold_rule": "0.5",
        "class_weight": "balanced" if job.config.balance == "weighted-loss" else "none",
        # the peft method's --targets preset (part of the results key); "" for methods that wrap no modules
        "peft_targets": job.options.targets if isinstance(job.options, PeftOptions) else "",
    }
    labels = [_labels(job.splits, ids) for ids in (task.train, task.val, task.test)]
    if len(np.unique(labels[0])) < 2:
        return ResultRow.create(**columns, status="failed", error="training rows hold a single class",
                                extra={"weights_source": job.weights_source}), None
    return _TaskRunner(job, task, run, labels).run(columns)


@dataclass
class _Prepared:
    """A model ready to fit: ``module`` is what trains (the head alone on cached features), ``inputs`` feeds it."""

    model: Classifier
    module: nn.Module
    inputs: Callable[[torch.Tensor, bool], torch.Tensor]
    set_mode: Callable[[], None]
    generator: torch.Generator


class _TaskRunner:
    """One task's training: derived settings (seed, lr, augmentation, memory format) and the models it builds."""

    def __init__(self, job: AdaptJob, task: Task, run: TaskRun, labels: list[np.ndarray]):
        config, method, device = job.config, job.method, job.device
        self.job, self.task, self.run_options = job, task, run
        self.y_train, self.y_val, self.y_test = labels
        self.seed = config.seed * 1_000_003 + task.seed * 1009 + task.fold * 101 + task.shots
        self.channels_last = config.channels_last if config.channels_last is not None else (
            device.type == "cuda" and job.spec.family == "cnn")
        self.augment = config.augment or method.default_augment
        self.augment_spec = AugmentSpec(hflip=config.hflip) if self.augment == "cxr" else None
        self.rows = [job.store.index(ids) for ids in (task.train, task.val, task.test)]
        self.eval_batch = config.eval_batch_size or 2 * config.batch_size
        self.lr = config.lr or method.default_lr
        self.head_lr = self.lr if method.backbone_eval else self.lr * config.head_lr_scale
        # frozen features and no augmentation: embed once, train the head on the embeddings
        self.fast = method.backbone_eval and self.augment == "none"
        self.features: FeatureInputs | None = None

    def _embed(self, model: Classifier, images: ImageInputs, rows: torch.Tensor) -> torch.Tensor:
        return embed_rows(model, images, rows, batch_size=self.eval_batch, device=self.job.device,
                          precision=self.job.config.precision)

    def _prepare(self, fit_rows: torch.Tensor, y_fit: np.ndarray, *, refit_of: tuple | None,
                 skip_init: bool) -> _Prepared:
        """A fresh model (same seed), its head initialised from ``fit_rows``."""
        job, method = self.job, self.job.method
        model = build_model(job.pristine, job.spec, method, n_classes=job.n_classes, seed=self.seed,
                            options=job.options, config=job.config).to(job.device)
        if self.channels_last:
            model.to(memory_format=torch.channels_last)
        generator = torch.Generator().manual_seed(self.seed)
        images = ImageInputs(job.store, job.spec.preprocessing, job.device, augment=self.augment_spec,
                             channels_last=self.channels_last, generator=generator)
        train_rows, val_rows, test_rows = self.rows
        if self.fast:
            model.eval()
            if self.features is None:
                all_rows = torch.cat([train_rows, val_rows, test_rows]).unique()
                self.features = FeatureInputs(self._embed(model, images, all_rows), all_rows, len(job.store.rows))
            model.head.standardize_from(self.features(fit_rows, False))
            return _Prepared(model, model.head, self.features, model.head.train, generator)
        if method.head_init in ("standardize", "probe") and not skip_init:
            model.eval()
            sample = fit_rows if method.head_init == "probe" else fit_rows[
                torch.randperm(len(fit_rows), generator=torch.Generator().manual_seed(self.seed))[:STANDARDIZE_ROWS]]
            embeddings = self._embed(model, images, sample)
            if method.head_init == "standardize":
                model.head.standardize_from(embeddings)
            else:  # LP-FT: C tuned on train -> val, the head fitted on ``fit_rows``
                tune_train, tune_val = refit_of or (fit_rows, val_rows)
                x_tune = self._embed(model, images, tune_train) if refit_of else embeddings
                init_head_from_probe(model, x_tune, self.y_train, self._embed(model, images, tune_val), self.y_val,
                                     n_classes=job.n_classes, final=(embeddings, y_fit) if refit_of else None)

        def set_mode() -> None:
            set_train_mode(model, method, job.config.train_norms)

        return _Prepared(model, model, images, set_mode, generator)

    def _fit(self, prepared: _Prepared, data: tuple, *, epochs: int | None, folder: Path, desc: str) -> FitResult:
        job = self.job
        config = job.config if epochs is None else replace(job.config, epochs=epochs)
        hook, backbone = job.method.step_hook, prepared.model.backbone
        schedule = Schedule(config, self.lr, self.head_lr, method_options=job.options.to_json(),
                            on_step=None if hook is None else lambda step, total: hook(backbone, step, total))
        data = TrainData(prepared.inputs, *data, job.n_classes, prepared.generator)
        return fit(prepared.module, data, schedule, device=job.device, set_mode=prepared.set_mode,
                   checkpoint=Checkpoint(folder, self.run_options.resume), progress=self.run_options.progress,
                   desc=desc)

    def _resumes(self, folder: Path) -> bool:
        return self.run_options.resume and (folder / STATE_FILE).is_file()

    def run(self, columns: dict) -> tuple[ResultRow, pd.DataFrame]:
        job, method, run = self.job, self.job.method, self.run_options
        start = time.perf_counter()
        train_rows, val_rows, test_rows = self.rows
        prepared = self._prepare(train_rows, self.y_train, refit_of=None, skip_init=self._resumes(run.folder))
        model = prepared.model
        trainable, total = parameter_counts(model)
        pct = 100.0 * trainable / total
        if run.first:
            run.log(f"{job.spec.name} + {job.label}: trainable {trainable:,} / total {total:,} parameters "
                    f"({pct:.4f}%); trains {method.trains}")
            if method.is_peft:
                plain = ImageInputs(job.store, job.spec.preprocessing, job.device, augment=None,
                                    channels_last=self.channels_last, generator=prepared.generator)
                _smoke_forward(model, plain, train_rows[:2], job)
        result = self._fit(prepared, (train_rows, self.y_train, val_rows, self.y_val), epochs=None,
                           folder=run.folder, desc=run.desc)
        refit = job.config.refit if job.config.refit is not None else method.refit_with_val
        refit_epochs, n_train = 0, len(train_rows)
        if refit and self.task.refit_with_val and len(val_rows) and result.best_epoch > 0:
            # as probe refits on train + val: the epoch count chosen on val, then train + val from scratch
            refit_epochs = result.best_epoch
            rows = torch.cat([train_rows, val_rows])
            labels = np.concatenate([self.y_train, self.y_val])
            refit_dir = run.folder / "refit"
            del prepared, model  # free the first model before building the second (FFT on a GPU)
            prepared = self._prepare(rows, labels, refit_of=(train_rows, val_rows),
                                     skip_init=self._resumes(refit_dir))
            model = prepared.model
            refit_result = self._fit(prepared, (rows, labels, torch.zeros(0, dtype=torch.long),
                                                np.zeros(0, dtype=int)),
                                     epochs=refit_epochs, folder=refit_dir, desc=f"{run.desc} refit")
            n_train = len(rows)
            result.train_seconds += refit_result.train_seconds
            result.peak_memory_mb = max(result.peak_memory_mb, refit_result.peak_memory_mb)
        run.folder.mkdir(parents=True, exist_ok=True)
        torch.save(trained_state(model, method), run.folder / "best.pt")
        probabilities = predict(prepared.module, prepared.inputs, test_rows, batch_size=self.eval_batch,
                                device=job.device, precision=job.config.precision)
        metrics = compute_metrics(self.y_test, probabilities)
        best = result.history[result.best_epoch - 1] if result.best_epoch else {}
        row = ResultRow.create(
            **{**columns, "n_train": n_train, "trained_on": "train+val" if refit_epochs else "train"}, metrics=metrics,
            threshold=0.5 if job.n_classes == 2 else float("nan"), mcc_at_05=metrics["mcc"],
            fit_seconds=time.perf_counter() - start, hyperparameters=self._hyperparameters(),
            degenerate=is_degenerate(predict_labels(probabilities), probabilities),
            extra={
                "trainable_params": trainable, "total_params": total, "pct_trainable": pct,
                "epochs_run": result.epochs_run, "best_epoch": result.best_epoch,
                "peak_memory_mb": result.peak_memory_mb, "train_seconds": result.train_seconds,
                # both validation figures of the epoch kept, whichever of them chose it
                "best_val_mcc": best.get("val_mcc", float("nan")),
                "best_val_loss": best.get("val_loss", float("nan")),
                "device": str(job.device), "refit_epochs": refit_epochs, "weights_source": job.weights_source,
                # how many modules the peft method's --targets preset (the peft_targets column) resolved to
                "n_wrapped_modules": wrapped_modules(model) if method.is_peft else 0,
            },
        )
        return row, self._predictions(probabilities)

    def _hyperparameters(self) -> str:
        config = self.job.config
        return json.dumps({
            "lr": self.lr, "head_lr": self.head_lr, "epochs": config.epochs, "batch_size": config.batch_size,
            "optimizer": config.optimizer, "weight_decay": config.weight_decay, "balance": config.balance,
            "early_stopping": config.early_stopping, "patience": config.patience, "augment": self.augment,
            **self.job.options.record(),
            **({"train_norms": True} if config.train_norms else {}),
        }, sort_keys=True)

    def _predictions(self, probabilities: np.ndarray) -> pd.DataFrame:
        job, task = self.job, self.task
        prediction = pd.DataFrame({
            "backbone": job.spec.name, "method": job.label, "regime": task.regime, "shots": task.shots,
            "seed": task.seed, "fold": task.fold, "fraction": float(task.fraction),
            "id": task.test, "patient": [job.splits.groups.get(i, i) for i in task.test], "label": self.y_test,
            "probability": probabilities[:, 1] if job.n_classes == 2 else probabilities.max(axis=1),
            "predicted": predict_labels(probabilities, 0.5),  # adapt's rule: 0.5 (binary), argmax otherwise
        })
        if job.n_classes > 2:
            for class_index in range(job.n_classes):
                prediction[f"probability_{class_index}"] = probabilities[:, class_index]
        return prediction


def wrapped_modules(model: nn.Module) -> int:
    """Modules a peft method replaced with its adapter layers (``peft``'s ``BaseTunerLayer``)."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    return sum(isinstance(module, BaseTunerLayer) for module in model.modules())


def _smoke_forward(model: Classifier, images: ImageInputs, rows: torch.Tensor, job: AdaptJob) -> None:
    """peft reports some unsupported shapes only on the first forward: make that a one-line error."""
    model.eval()
    try:
        with torch.no_grad():
            model(images(rows, False))
    except (RuntimeError, ValueError, TypeError) as exc:
        raise MedtransferError(
            f"method {job.method.name!r} cannot apply to backbone {job.spec.name!r} (family {job.spec.family}): "
            f"the wrapped model fails: {first_line(exc, 200)}"
        ) from exc


def init_head_from_probe(model: Classifier, x_train: torch.Tensor, y_train: np.ndarray, x_val: torch.Tensor,
                         y_val: np.ndarray, *, n_classes: int, final: tuple | None = None) -> None:
    """LP-FT's first stage, as probe's logreg does it: standardise on the training rows, L2 logistic regression
    with balanced class weights, C tuned on validation MCC (``vocabulary.LOGREG_C_GRID``, probe's grid); the
    result becomes the head. ``final``: (embeddings, labels) to refit on with the chosen C (train + val)."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression

    model.head.standardize_from(x_train)
    x_train_np = ((x_train - model.head.mean) * model.head.scale).cpu().numpy()
    x_val_np = ((x_val - model.head.mean) * model.head.scale).cpu().numpy()
    best, best_score = LOGREG_C_GRID[0], -np.inf
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        for c in LOGREG_C_GRID if len(y_val) else ():
            fitted = LogisticRegression(C=c, class_weight="balanced", max_iter=2000).fit(x_train_np, y_train)
            probabilities = np.zeros((len(y_val), n_classes))
            probabilities[:, fitted.classes_] = fitted.predict_proba(x_val_np)
            score = compute_metrics(y_val, probabilities)["mcc"]
            if score > best_score + 1e-12:
                best, best_score = c, score
        if final is not None:  # refit on train + val with the C chosen on val, standardised on them
            model.head.standardize_from(final[0])
            x_train_np, y_train = ((final[0] - model.head.mean) * model.head.scale).cpu().numpy(), final[1]
        fitted = LogisticRegression(C=best, class_weight="balanced", max_iter=2000).fit(x_train_np, y_train)
    model.head.load_logreg(fitted, n_classes)
