"""``run_adapt``: train a backbone with one method on every task of the splits file and write result rows.

Tasks are exactly probe's (``splits.tasks.tasks_for``): per fold, the full regime trains on ``train`` and
few-shot regimes on their k-per-class subsets; the fold's ``val`` rows drive early stopping (probe tunes C
on them); ``test`` rows are used for nothing but the reported metrics. Unlike probe's full regime, adapt
does not refit on train + val (val picks the epoch). Every task starts from the same pretrained weights.

Per task, under ``OUT/adapt-runs/<backbone>/<method>/<task>/``: ``state.pt`` (the last finished epoch,
for ``--resume``; removed when the task is done), ``best.pt`` (the best epoch's trained tensors: adapters +
head for PEFT methods), ``row.json`` and ``predictions.parquet`` (a finished task, skipped on ``--resume``).
"""

from __future__ import annotations

import copy
import json
import re
import time
from collections.abc import Callable
from dataclasses import asdict, fields, replace
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from medtransfer.adapt.augment import AugmentSpec
from medtransfer.adapt.config import AdaptConfig
from medtransfer.adapt.data import PixelStore, load_pixels
from medtransfer.adapt.methods import AdaptMethod, get_method
from medtransfer.adapt.model import Classifier, parameter_counts, set_train_mode, trained_state
from medtransfer.adapt.train import (
    STATE_FILE,
    FeatureInputs,
    ImageInputs,
    embed_rows,
    fit,
    predict,
)
from medtransfer.backbones.registry import BackboneSpec, load_backbone
from medtransfer.data.manifest import Manifest, load_manifest
from medtransfer.device import resolve_device
from medtransfer.errors import MedtransferError, first_line
from medtransfer.metrics import compute_metrics
from medtransfer.results import ResultRow, write_results
from medtransfer.splits.schema import SplitsFile, load_splits
from medtransfer.splits.tasks import Task, tasks_for

RUNS_FOLDER = "adapt-runs"
STANDARDIZE_ROWS = 1024
PROBE_C_GRID = tuple(float(c) for c in np.logspace(-4, 3, 8))  # probe's logreg grid


def make_config(config: AdaptConfig | None, overrides: dict) -> AdaptConfig:
    known = {f.name for f in fields(AdaptConfig)}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise MedtransferError(f"unknown adapt option(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
    return replace(config or AdaptConfig(), **{k: v for k, v in overrides.items() if v is not None})


def select_tasks(splits: SplitsFile, regimes, shots, folds, seeds) -> list[Task]:
    tasks = [
        t for t in tasks_for(splits, tuple(regimes))
        if (folds is None or t.fold in folds)
        and (shots is None or t.regime != "fewshot" or t.shots in shots)
        and (seeds is None or t.regime == "full" or t.seed in seeds)
    ]
    if not tasks:
        raise MedtransferError(
            f"no task left after the filters: the splits file has folds {[f.fold for f in splits.folds]}, "
            f"shots {splits.shots}, seeds {splits.seeds}; regimes asked for: {list(regimes)}"
        )
    return tasks


def task_name(task: Task) -> str:
    if task.regime == "full":
        return f"full-fold{task.fold}"
    if task.regime == "fraction":
        return f"fraction{getattr(task, 'fraction', 0.0):g}-seed{task.seed}-fold{task.fold}"
    return f"fewshot{task.shots}-seed{task.seed}-fold{task.fold}"


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name)


def run_adapt(
    manifest: str | Path | Manifest,
    splits: str | Path | SplitsFile,
    backbone: str,
    method: str,
    out: str | Path,
    weights: str = "default",
    regimes: tuple[str, ...] = ("full", "fewshot"),
    shots: tuple[int, ...] | None = None,
    folds: tuple[int, ...] | None = None,
    seeds: tuple[int, ...] | None = None,
    config: AdaptConfig | None = None,
    device: str = "auto",
    resume: bool = False,
    pixel_cache: str | Path | None = None,
    progress: bool = True,
    log: Callable[[str], None] = print,
    **overrides,
) -> pd.DataFrame:
    """Train ``backbone`` with ``method`` on every selected task; write rows under ``out``; return them.

    ``overrides`` are ``AdaptConfig`` fields (epochs=, lr=, rank=, alpha=, batch_size=, ...); ``None`` values
    are ignored so a CLI can pass its options straight through. ``pixel_cache``: extract's pixel-cache Zarr
    (``--pixel-cache``), read instead of decoding the image files when it holds them all.
    """
    splits_file = splits if isinstance(splits, SplitsFile) else load_splits(splits)
    if not isinstance(manifest, Manifest):
        manifest = load_manifest(manifest, label_column=splits_file.label_column)
    splits_file.check_manifest(manifest.fingerprint)
    adapt_method = get_method(method)
    config = make_config(config or AdaptConfig(**adapt_method.config_defaults), overrides)
    torch_device = resolve_device(device)
    tasks = select_tasks(splits_file, regimes, shots, folds, seeds)
    n_classes = len(splits_file.classes)
    label = adapt_method.label(config)

    loaded = load_backbone(backbone, weights)
    spec = loaded.spec
    needed = sorted({i for t in tasks for i in (*t.train, *t.val, *t.test)})
    store = load_pixels(manifest.table, needed, spec.preprocessing, config.num_workers, progress, pixel_cache, log)
    store.to_device_if_small(torch_device)
    log(f"adapt {backbone} ({loaded.weights_source}) with {label}: {len(tasks)} task(s) on {torch_device}; "
        f"images {store.source}")
    run_root = Path(out) / RUNS_FOLDER / _safe(backbone) / _safe(label)

    rows: list[ResultRow] = []
    for number, task in enumerate(tasks):
        task_dir = run_root / task_name(task)
        row, prediction = None, None
        if resume and (task_dir / "row.json").is_file():
            row, prediction = _load_done(task_dir)
            log(f"[{number + 1}/{len(tasks)}] {task_name(task)}: done earlier, kept (--resume)")
        else:
            if not resume and (task_dir / STATE_FILE).is_file():
                (task_dir / STATE_FILE).unlink()
            row, prediction = _run_task(
                loaded.model, spec, adapt_method, label, config, task, splits_file, store, n_classes,
                torch_device, task_dir, resume, progress, log, first=number == 0,
                desc=f"[{number + 1}/{len(tasks)}] {task_name(task)}",
            )
            row.weights = loaded.weights  # as probe writes it: "default", "random" or the path
            row.extra["weights_source"] = loaded.weights_source
            _save_done(task_dir, row, prediction)
        row.splits = splits_file.fingerprint
        rows.append(row)
        write_results(out, [row], prediction)
    return pd.DataFrame([r.as_record() for r in rows])


def _save_done(task_dir: Path, row: ResultRow, prediction: pd.DataFrame | None) -> None:
    task_dir.mkdir(parents=True, exist_ok=True)
    if prediction is not None:
        prediction.to_parquet(task_dir / "predictions.parquet", index=False)
    (task_dir / "row.json").write_text(json.dumps(asdict(row), default=float))
    (task_dir / STATE_FILE).unlink(missing_ok=True)
    (task_dir / "refit" / STATE_FILE).unlink(missing_ok=True)


def _load_done(task_dir: Path) -> tuple[ResultRow, pd.DataFrame | None]:
    row = ResultRow(**json.loads((task_dir / "row.json").read_text()))
    path = task_dir / "predictions.parquet"
    return row, (pd.read_parquet(path) if path.is_file() else None)


def build_model(pristine: torch.nn.Module, spec: BackboneSpec, method: AdaptMethod, config: AdaptConfig,
                n_classes: int, seed: int) -> Classifier:
    """A fresh copy of the pretrained backbone, wrapped by ``method``, with a new head (seeded)."""
    torch.manual_seed(seed)
    backbone = method.apply(copy.deepcopy(pristine), spec, config)
    return Classifier(backbone, spec.embed_dim, n_classes)


def _labels(splits: SplitsFile, ids: list[str]) -> np.ndarray:
    try:
        return np.array([splits.labels[i] for i in ids], dtype=int)
    except KeyError as exc:
        raise MedtransferError(f"splits file lists sample {exc} in a fold but gives no label for it") from exc


def _run_task(pristine, spec: BackboneSpec, method: AdaptMethod, label: str, config: AdaptConfig, task: Task,
              splits: SplitsFile, store: PixelStore, n_classes: int, device: torch.device, task_dir: Path,
              resume: bool, progress: bool, log, first: bool, desc: str):
    row = ResultRow(backbone=spec.name, method=label, regime=task.regime, shots=task.shots, seed=task.seed,
                    fold=task.fold, n_test=len(task.test), n_train=len(task.train))
    _describe(row, task, config)
    y_train, y_val, y_test = (_labels(splits, ids) for ids in (task.train, task.val, task.test))
    if len(np.unique(y_train)) < 2:
        row.status, row.error = "failed", "training rows hold a single class"
        return row, None
    start = time.perf_counter()
    seed = config.seed * 1_000_003 + task.seed * 1009 + task.fold * 101 + task.shots
    channels_last = config.channels_last if config.channels_last is not None else (
        device.type == "cuda" and spec.family == "cnn")
    augment = config.augment or method.default_augment
    augment_spec = AugmentSpec(hflip=config.hflip) if augment == "cxr" else None
    train_rows, val_rows, test_rows = store.index(task.train), store.index(task.val), store.index(task.test)
    eval_batch = config.eval_batch_size or 2 * config.batch_size
    lr = config.lr or method.default_lr
    head_lr = lr if method.backbone_eval else lr * config.head_lr_scale
    fast = method.backbone_eval and augment == "none"  # frozen features: embed once, train the head on them
    features: dict[str, FeatureInputs] = {}

    def prepare(fit_rows, y_fit, refit_of: tuple | None, skip_init: bool):
        """A fresh model (same seed), its head initialised from ``fit_rows``; returns what ``fit`` trains."""
        model = build_model(pristine, spec, method, config, n_classes, seed).to(device)
        if channels_last:
            model.to(memory_format=torch.channels_last)
        generator = torch.Generator().manual_seed(seed)
        images = ImageInputs(store, spec.preprocessing, device, augment_spec, channels_last, generator)
        if fast:
            model.eval()
            if "all" not in features:
                all_rows = torch.cat([train_rows, val_rows, test_rows]).unique()
                features["all"] = FeatureInputs(embed_rows(model, images, all_rows, eval_batch, device, config),
                                                all_rows, len(store.rows))
            model.head.standardize_from(features["all"](fit_rows, False))
            return model, model.head, features["all"], model.head.train, generator
        if method.head_init in ("standardize", "probe") and not skip_init:
            model.eval()
            sample = fit_rows if method.head_init == "probe" else fit_rows[
                torch.randperm(len(fit_rows), generator=torch.Generator().manual_seed(seed))[:STANDARDIZE_ROWS]]
            embeddings = embed_rows(model, images, sample, eval_batch, device, config)
            if method.head_init == "standardize":
                model.head.standardize_from(embeddings)
            else:  # LP-FT: C tuned on train -> val, the head fitted on ``fit_rows``
                tune_train, tune_val = refit_of or (fit_rows, val_rows)
                x_tune = embed_rows(model, images, tune_train, eval_batch, device, config) if refit_of else embeddings
                x_val = embed_rows(model, images, tune_val, eval_batch, device, config)
                _init_head_from_probe(model, x_tune, y_train, x_val, y_val, n_classes,
                                      final=(embeddings, y_fit) if refit_of else None)

        def set_mode() -> None:
            set_train_mode(model, method, config.train_norms)

        return model, model, images, set_mode, generator

    model, module, inputs, set_mode, generator = prepare(
        train_rows, y_train, None, skip_init=resume and (task_dir / STATE_FILE).is_file())
    trainable, total = parameter_counts(model)
    pct = 100.0 * trainable / total
    if first:
        log(f"{spec.name} + {label}: trainable {trainable:,} / total {total:,} parameters ({pct:.4f}%); "
            f"trains {method.trains}")
        if method.is_peft:
            _smoke_forward(model, ImageInputs(store, spec.preprocessing, device, None, channels_last, generator),
                           train_rows[:2], method, spec)
    result = fit(module, inputs, train_rows, y_train, val_rows, y_val, n_classes, config, lr, head_lr, device,
                 set_mode, generator, state_dir=task_dir, resume=resume, progress=progress, desc=desc)
    refit = config.refit if config.refit is not None else method.refit_with_val
    refit_epochs = 0
    if refit and task.refit_with_val and len(val_rows) and result.best_epoch > 0:
        # as probe refits on train + val: the epoch count chosen on val, then train + val from scratch
        refit_epochs = result.best_epoch
        rows = torch.cat([train_rows, val_rows])
        labels = np.concatenate([y_train, y_val])
        refit_dir = task_dir / "refit"
        del model, module, inputs  # free the first model before building the second (FFT on a GPU)
        model, module, inputs, set_mode, generator = prepare(
            rows, labels, (train_rows, val_rows), skip_init=resume and (refit_dir / STATE_FILE).is_file())
        empty = torch.zeros(0, dtype=torch.long)
        refit_result = fit(module, inputs, rows, labels, empty, np.zeros(0, dtype=int), n_classes,
                           replace(config, epochs=refit_epochs), lr, head_lr, device, set_mode, generator,
                           state_dir=refit_dir, resume=resume, progress=progress, desc=f"{desc} refit")
        row.n_train = len(rows)
        result.train_seconds += refit_result.train_seconds
        result.peak_memory_mb = max(result.peak_memory_mb, refit_result.peak_memory_mb)
    task_dir.mkdir(parents=True, exist_ok=True)
    torch.save(trained_state(model, method), task_dir / "best.pt")
    probabilities = predict(module, inputs, test_rows, eval_batch, device, config)
    for name, value in compute_metrics(y_test, probabilities).items():
        setattr(row, name, value)
    if hasattr(row, "threshold") and n_classes == 2:
        row.threshold = 0.5
    if hasattr(row, "mcc_at_05"):
        row.mcc_at_05 = row.mcc
    row.fit_seconds = time.perf_counter() - start
    row.hyperparameters = json.dumps({
        "lr": lr, "head_lr": head_lr, "epochs": config.epochs, "batch_size": config.batch_size,
        "optimizer": config.optimizer, "weight_decay": config.weight_decay, "balance": config.balance,
        "early_stopping": config.early_stopping, "patience": config.patience, "augment": augment,
        **({"rank": config.rank, "alpha": config.lora_alpha, "dropout": config.dropout} if method.uses_rank else {}),
        **({"train_norms": True} if config.train_norms else {}),
    }, sort_keys=True)
    best = result.history[result.best_epoch - 1] if result.best_epoch else {}
    row.extra = {
        "trainable_params": trainable, "total_params": total, "pct_trainable": pct,
        "epochs_run": result.epochs_run, "best_epoch": result.best_epoch,
        "peak_memory_mb": result.peak_memory_mb, "train_seconds": result.train_seconds,
        # both validation figures of the epoch kept, whichever of them chose it
        "best_val_mcc": best.get("val_mcc", float("nan")), "best_val_loss": best.get("val_loss", float("nan")),
        "device": str(device),
        "refit_epochs": refit_epochs,
        # which modules the PEFT method wrapped: the --targets preset and how many modules it resolved to
        "peft_targets": config.targets if method.is_peft else "",
        "n_wrapped_modules": wrapped_modules(model) if method.is_peft else 0,
    }
    prediction = pd.DataFrame({
        "backbone": spec.name, "method": label, "regime": task.regime, "shots": task.shots,
        "seed": task.seed, "fold": task.fold, "fraction": float(getattr(task, "fraction", 0.0)),
        "id": task.test, "label": y_test,
        "probability": probabilities[:, 1] if n_classes == 2 else probabilities.max(axis=1),
    })
    if n_classes > 2:
        for class_index in range(n_classes):
            prediction[f"probability_{class_index}"] = probabilities[:, class_index]
    return row, prediction


def wrapped_modules(model: torch.nn.Module) -> int:
    """Modules a peft method replaced with its adapter layers (``BaseTunerLayer``)."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    return sum(isinstance(module, BaseTunerLayer) for module in model.modules())


def _describe(row: ResultRow, task: Task, config: AdaptConfig) -> None:
    """The columns probe fills that mean something for adapt too (set when the table has them)."""
    described = {
        "fraction": float(getattr(task, "fraction", 0.0)),
        "preprocessing": "standardize",  # the head standardises embeddings with training-row statistics
        "class_weight": "balanced" if config.balance == "weighted-loss" else "none",
        "threshold_rule": "0.5",
    }
    for name, value in described.items():
        if hasattr(row, name):
            setattr(row, name, value)


def _smoke_forward(model, images, rows, method, spec) -> None:
    """peft reports some unsupported shapes only on the first forward: make that a one-line error."""
    model.eval()
    try:
        with torch.no_grad():
            model(images(rows, False))
    except (RuntimeError, ValueError, TypeError) as exc:
        raise MedtransferError(
            f"method {method.name!r} cannot apply to backbone {spec.name!r}: the wrapped model fails: "
            f"{first_line(exc, 200)}"
        ) from exc


def _init_head_from_probe(model: Classifier, x_train: torch.Tensor, y_train: np.ndarray, x_val: torch.Tensor,
                          y_val: np.ndarray, n_classes: int, final: tuple | None = None) -> None:
    """LP-FT's first stage, as probe's logreg does it: standardise on the training rows, L2 logistic regression
    with balanced class weights, C tuned on validation MCC (probe's grid); the result becomes the head."""
    import warnings

    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression

    model.head.standardize_from(x_train)
    x_train_np = ((x_train - model.head.mean) * model.head.scale).cpu().numpy()
    x_val_np = ((x_val - model.head.mean) * model.head.scale).cpu().numpy()
    best, best_score = PROBE_C_GRID[0], -np.inf
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        for c in PROBE_C_GRID if len(y_val) else ():
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
