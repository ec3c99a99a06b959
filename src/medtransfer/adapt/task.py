"""One task of an adapt run: build the model, initialise its head, train (and refit), test, and make the row.

``AdaptJob`` is what every task of a run shares (backbone, method and its options, config, pixels, device);
``run_task(job, task, ...)`` returns the task's result row and test predictions. ``adapt.run`` enumerates the
tasks, skips finished ones and writes the rows.
"""

from __future__ import annotations

import copy
import json
import time
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
from medtransfer.adapt.model import Classifier, parameter_counts, set_train_mode, trained_state
from medtransfer.adapt.options import LinearProbeOptions, MethodOptions, PeftOptions
from medtransfer.adapt.packed import PackedRun, fit_packed, module_refusal
from medtransfer.adapt.probe_head import HEAD_SOLVER, fit_probe_head, install_linear
from medtransfer.adapt.registry import AdaptMethod
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
    peak_memory_mb,
    predict,
)
from medtransfer.backbones.registry import BackboneSpec
from medtransfer.backbones.vit import without_unused_projection
from medtransfer.errors import MedtransferError, first_line
from medtransfer.metrics import compute_metrics, is_degenerate, predict_labels
from medtransfer.results import ResultRow
from medtransfer.splits.schema import SplitsFile
from medtransfer.splits.tasks import Task

STANDARDIZE_ROWS = 1024


class TaskFailed(Exception):
    """A task that cannot be fitted (its reason is the row's ``error``), not a problem of the whole run."""


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
    columns, labels = _columns(job, task), _task_labels(job, task)
    if len(np.unique(labels[0])) < 2:
        return _failed(job, columns, "training rows hold a single class"), None
    try:
        return _TaskRunner(job, task, run, labels).run(columns)
    except TaskFailed as failure:
        return _failed(job, columns, str(failure)), None


def run_tasks_packed(job: AdaptJob, tasks: list[Task], runs: list[TaskRun]
                     ) -> list[tuple[ResultRow, pd.DataFrame | None]]:
    """Train several tasks (same configuration, equally many training rows) as one pack (``adapt.packed``): each
    task's row and predictions as ``run_task`` makes them. Tasks that cannot train are failed rows; a pack the
    backbone cannot run (dropout active in training) says why in the log and runs its tasks one by one."""
    outcomes: dict[int, tuple[ResultRow, pd.DataFrame | None]] = {}
    members = []
    for i, (task, run) in enumerate(zip(tasks, runs, strict=True)):
        columns, labels = _columns(job, task), _task_labels(job, task)
        if len(np.unique(labels[0])) < 2:
            outcomes[i] = _failed(job, columns, "training rows hold a single class"), None
        else:
            members.append((i, columns, _TaskRunner(job, task, run, labels)))
    begun = []
    for i, columns, runner in members:
        try:
            begun.append((i, columns, runner, time.perf_counter(), runner.begin()))
        except TaskFailed as failure:
            outcomes[i] = _failed(job, columns, str(failure)), None
    if begun:
        begun[0][4].set_mode()
        refusal = module_refusal(begun[0][4].module)
        if refusal:
            runs[0].log(f"pack of {len(begun)} runs one by one: {refusal}")
            results = [runner._fit(prepared, runner.fit_data(), epochs=None, folder=runner.run_options.folder,
                                   desc=runner.run_options.desc) for _, _, runner, _, prepared in begun]
        else:
            results = fit_packed([runner.packed_run(prepared) for _, _, runner, _, prepared in begun],
                                 device=job.device, progress=runs[0].progress)
        for (i, columns, runner, start, prepared), result in zip(begun, results, strict=True):
            try:
                outcomes[i] = runner.complete(columns, prepared, result, start)
            except TaskFailed as failure:
                outcomes[i] = _failed(job, columns, str(failure)), None
    return [outcomes[i] for i in range(len(tasks))]


def _failed(job: AdaptJob, columns: dict, error: str) -> ResultRow:
    return ResultRow.create(**columns, status="failed", error=error, extra={"weights_source": job.weights_source})


def _task_labels(job: AdaptJob, task: Task) -> list[np.ndarray]:
    return [_labels(job.splits, ids) for ids in (task.train, task.val, task.test)]


def _columns(job: AdaptJob, task: Task) -> dict:
    return {
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
        # lp's head fitted by probe's logreg on the embeddings (adapt.probe_head), no gradient epochs
        self.probe_solver = isinstance(job.options, LinearProbeOptions) and job.options.solver == HEAD_SOLVER
        # the head's class weighting: a balanced sampler and a weighted loss both mean balanced classes
        self.class_weight = "none" if config.balance == "none" else "balanced"

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
            else:  # LP-FT: lp's head (probe's logreg, C tuned on val; refit_of: refitted on train + val)
                self._init_from_probe(model, images, refit=refit_of is not None)

        def set_mode() -> None:
            set_train_mode(model, method, job.config.train_norms)

        return _Prepared(model, model, images, set_mode, generator)

    def _init_from_probe(self, model: Classifier, images: ImageInputs, *, refit: bool) -> None:
        """LP-FT's first stage starts the head where ``lp`` ends: probe's logreg on the train (and val) embeddings
        of the pretrained backbone, installed in the head's standardised basis (that of the rows it was fitted
        on), so fine-tuning starts from a well-conditioned head."""
        task, (train_rows, val_rows, _) = self.task, self.rows
        x = self._embed(model, images, torch.cat([train_rows, val_rows]))
        # probe's fit scores test rows, which LP-FT's first stage does not need: val (or train) stands in
        stand_in = replace(task, test=list(task.val or task.train), refit_with_val=refit and task.refit_with_val)
        outcome = fit_probe_head(x.cpu().numpy(), [*task.train, *task.val], stand_in, self.job.splits,
                                 class_weight=self.class_weight, device=str(self.job.device))
        if isinstance(outcome, str):
            raise TaskFailed(f"LP-FT's linear probe cannot be fitted: {outcome}")
        fitted_on = x if stand_in.refit_with_val and len(val_rows) else x[:len(train_rows)]
        install_linear(model.head, *outcome.fit.linear, standardize_on=fitted_on)

    def _schedule(self, prepared: _Prepared, epochs: int | None) -> Schedule:
        job = self.job
        config = job.config if epochs is None else replace(job.config, epochs=epochs)
        hook, backbone = job.method.step_hook, prepared.model.backbone
        return Schedule(config, self.lr, self.head_lr, method_options=job.options.to_json(),
                        on_step=None if hook is None else lambda step, total: hook(backbone, step, total))

    def _fit(self, prepared: _Prepared, data: tuple, *, epochs: int | None, folder: Path, desc: str) -> FitResult:
        job = self.job
        schedule = self._schedule(prepared, epochs)
        data = TrainData(prepared.inputs, *data, job.n_classes, prepared.generator)
        return fit(prepared.module, data, schedule, device=job.device, set_mode=prepared.set_mode,
                   checkpoint=Checkpoint(folder, self.run_options.resume), progress=self.run_options.progress,
                   desc=desc)

    def _resumes(self, folder: Path) -> bool:
        return self.run_options.resume and (folder / STATE_FILE).is_file()

    def _log_counts(self, prepared: _Prepared) -> None:
        job, run = self.job, self.run_options
        trainable, total = parameter_counts(prepared.model)
        if run.first:
            run.log(f"{job.spec.name} + {job.label}: trainable {trainable:,} / total {total:,} parameters "
                    f"({100.0 * trainable / total:.4f}%); trains {job.method.trains}")

    def _row(self, columns: dict, model: Classifier, probabilities: np.ndarray, *, start: float,
             hyperparameters: str, extra: dict) -> ResultRow:
        """The task's result row: ``columns`` (key, n_train, trained_on, ...), test metrics, the adapt extras."""
        job = self.job
        trainable, total = parameter_counts(model)
        metrics = compute_metrics(self.y_test, probabilities)
        return ResultRow.create(
            **columns, metrics=metrics, threshold=0.5 if job.n_classes == 2 else float("nan"),
            mcc_at_05=metrics["mcc"], fit_seconds=time.perf_counter() - start, hyperparameters=hyperparameters,
            degenerate=is_degenerate(predict_labels(probabilities), probabilities),
            extra={"trainable_params": trainable, "total_params": total, "pct_trainable": 100.0 * trainable / total,
                   **extra, "device": str(job.device), "weights_source": job.weights_source,
                   # how many modules the peft method's --targets preset (the peft_targets column) resolved to
                   "n_wrapped_modules": wrapped_modules(model) if job.method.is_peft else 0},
        )

    def run_probe_solver(self, columns: dict) -> tuple[ResultRow, pd.DataFrame]:
        """``lp`` with probe's solver: embed the task's rows once, fit probe's logreg on them (its C grid, tuning,
        class weights and full-regime refit on train + val: ``adapt.probe_head``), install it as the head and
        test through adapt's own eval path. No gradient epochs (``epochs_run`` 0)."""
        job, task, run = self.job, self.task, self.run_options
        start = time.perf_counter()
        train_rows, _, test_rows = self.rows
        prepared = self._prepare(train_rows, self.y_train, refit_of=None, skip_init=False)  # embeds every row
        self._log_counts(prepared)
        refit = job.config.refit if job.config.refit is not None else job.method.refit_with_val
        fitted_task = replace(task, refit_with_val=task.refit_with_val and bool(refit) and bool(task.val))
        ids = list(dict.fromkeys([*task.train, *task.val, *task.test]))
        solve_start = time.perf_counter()
        outcome = fit_probe_head(self.features(job.store.index(ids), False).cpu().numpy(), ids, fitted_task,
                                 job.splits, class_weight=self.class_weight, tune=job.options.tune,
                                 device=str(job.device))
        if isinstance(outcome, str):
            raise TaskFailed(outcome)
        install_linear(prepared.model.head, *outcome.fit.linear)
        solve_seconds = time.perf_counter() - solve_start
        run.folder.mkdir(parents=True, exist_ok=True)
        torch.save(trained_state(prepared.model, job.method), run.folder / "best.pt")
        probabilities = predict(prepared.module, prepared.inputs, test_rows, batch_size=self.eval_batch,
                                device=job.device, precision=job.config.precision)
        fit_ = outcome.fit
        val_mcc = (compute_metrics(fit_.tune_labels, fit_.tune_proba)["mcc"] if fit_.tune_labels is not None
                   else float("nan"))
        row = self._row(
            {**columns, "n_train": fit_.n_train, "class_weight": self.class_weight, "tuning": outcome.tuning,
             "trained_on": "train+val" if fitted_task.refit_with_val else "train"},
            prepared.model, probabilities, start=start,
            hyperparameters=json.dumps({**fit_.params, **job.options.record()}, sort_keys=True),
            extra={"epochs_run": 0, "best_epoch": 0, "peak_memory_mb": peak_memory_mb(job.device),
                   "train_seconds": solve_seconds, "refit_epochs": 0, "head_solver": HEAD_SOLVER,
                   # MCC of the chosen C on its tuning rows (val, or inner-CV out-of-fold rows)
                   "best_val_mcc": val_mcc, "best_val_loss": float("nan")})
        return row, self._predictions(probabilities)

    def run(self, columns: dict) -> tuple[ResultRow, pd.DataFrame]:
        if self.probe_solver:
            return self.run_probe_solver(columns)
        start = time.perf_counter()
        prepared = self.begin()
        result = self._fit(prepared, self.fit_data(), epochs=None, folder=self.run_options.folder,
                           desc=self.run_options.desc)
        return self.complete(columns, prepared, result, start)

    def fit_data(self) -> tuple:
        train_rows, val_rows, _ = self.rows
        return train_rows, self.y_train, val_rows, self.y_val

    def begin(self) -> _Prepared:
        """The model of the first fit, built and its head initialised (``run`` fits it; a pack fits several)."""
        job, method, run = self.job, self.job.method, self.run_options
        train_rows = self.rows[0]
        prepared = self._prepare(train_rows, self.y_train, refit_of=None, skip_init=self._resumes(run.folder))
        self._log_counts(prepared)
        if run.first and method.is_peft:
            plain = ImageInputs(job.store, job.spec.preprocessing, job.device, augment=None,
                                channels_last=self.channels_last, generator=prepared.generator)
            _smoke_forward(prepared.model, plain, train_rows[:2], job)
        return prepared

    def packed_run(self, prepared: _Prepared) -> PackedRun:
        """The first fit of this task as one run of a pack (``adapt.packed``)."""
        return PackedRun(prepared.module, TrainData(prepared.inputs, *self.fit_data(), self.job.n_classes,
                                                    prepared.generator),
                         self._schedule(prepared, None), prepared.set_mode,
                         Checkpoint(self.run_options.folder, self.run_options.resume), desc=self.run_options.desc)

    def complete(self, columns: dict, prepared: _Prepared, result: FitResult, start: float
                 ) -> tuple[ResultRow, pd.DataFrame]:
        """After the first fit: the refit on train + val (full regime, when asked), the test predictions, the row."""
        job, method, run = self.job, self.job.method, self.run_options
        train_rows, val_rows, test_rows = self.rows
        model = prepared.model
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
        best = result.history[result.best_epoch - 1] if result.best_epoch else {}
        row = self._row(
            {**columns, "n_train": n_train, "trained_on": "train+val" if refit_epochs else "train"}, model,
            probabilities, start=start, hyperparameters=self._hyperparameters(),
            extra={"epochs_run": result.epochs_run, "best_epoch": result.best_epoch,
                   "peak_memory_mb": result.peak_memory_mb, "train_seconds": result.train_seconds,
                   "refit_epochs": refit_epochs, "pack_size": result.pack_size,
                   "head_solver": f"{HEAD_SOLVER}+gradient" if method.head_init == "probe" else "gradient",
                   # both validation figures of the epoch kept, whichever of them chose it
                   "best_val_mcc": best.get("val_mcc", float("nan")),
                   "best_val_loss": best.get("val_loss", float("nan"))})
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
