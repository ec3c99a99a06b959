"""``run_adapt``: train a backbone with one method on every task of the splits file and write result rows.

Tasks are exactly probe's (``splits.tasks.tasks_for``): per fold, the full regime trains on ``train`` and
few-shot regimes on their k-per-class subsets; the fold's ``val`` rows drive early stopping (probe tunes C
on them); ``test`` rows are used for nothing but the reported metrics. Unlike probe's full regime, adapt
does not refit on train + val (val picks the epoch) unless ``refit`` (lp's default: its head is probe's logreg,
refitted as probe refits, ``adapt.probe_head``). Every task starts from the same pretrained weights.

Per task, under ``OUT/adapt-runs/<backbone>/<method>/<task>/``: ``state.pt`` (the last finished epoch,
for ``--resume``; removed when the task is done), ``best.pt`` (the best epoch's trained tensors: adapters +
head for PEFT methods), ``row.json`` and ``predictions.parquet`` (a finished task, skipped on ``--resume`` when
its configuration hash, the row's ``config``, equals this run's; a task finished with other settings is refused
with one line rather than kept). One task's training lives in ``adapt.task``.
"""

from __future__ import annotations

import json
import re
import warnings
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

import pandas as pd

from medtransfer.adapt.config import AdaptConfig
from medtransfer.adapt.data import load_pixels
from medtransfer.adapt.estimate import WARN_SECONDS, hours, run_seconds, seconds_per_image
from medtransfer.adapt.methods import AdaptMethod, get_method
from medtransfer.adapt.options import MethodOptions
from medtransfer.adapt.packed import default_pack, method_refusal
from medtransfer.adapt.task import AdaptJob, TaskRun, run_task, run_tasks_packed
from medtransfer.adapt.train import STATE_FILE, autocast_dtype
from medtransfer.backbones.registry import load_backbone
from medtransfer.data.manifest import Manifest, load_manifest
from medtransfer.device import resolve_device
from medtransfer.errors import MedtransferError
from medtransfer.results import (
    ResultRow,
    check_results_folder,
    config_hash,
    export_tables,
    write_atomically,
    write_results,
)
from medtransfer.splits.schema import SplitsFile, load_splits
from medtransfer.splits.tasks import Task, tasks_for

RUNS_FOLDER = "adapt-runs"


@dataclass(frozen=True)
class TaskSelection:
    """Which of the splits file's tasks to train: regimes, and only these shots / folds / seeds (None: all)."""

    regimes: tuple[str, ...] = ("full", "fewshot")
    shots: tuple[int, ...] | None = None
    folds: tuple[int, ...] | None = None
    seeds: tuple[int, ...] | None = None
    names: tuple[str, ...] | None = None  # only the tasks of these ``task_name``s: a study bundle's exact jobs

    def select(self, splits: SplitsFile) -> list[Task]:
        tasks = [
            t for t in tasks_for(splits, tuple(self.regimes))
            if (self.folds is None or t.fold in self.folds)
            and (self.shots is None or t.regime != "fewshot" or t.shots in self.shots)
            and (self.seeds is None or t.regime == "full" or t.seed in self.seeds)
            and (self.names is None or task_name(t) in self.names)
        ]
        if not tasks:
            raise MedtransferError(
                f"no task left after the filters: the splits file has folds {[f.fold for f in splits.folds]}, "
                f"shots {splits.shots}, seeds {splits.seeds}; regimes asked for: {list(self.regimes)}"
            )
        return tasks


@dataclass(frozen=True)
class RunOptions:
    """How this process runs: the device, ``--resume``, extract's pixel cache, progress bars and the log."""

    device: str = "auto"
    resume: bool = False
    pixel_cache: str | Path | None = None  # extract's pixel-cache Zarr, read instead of decoding the files
    progress: bool = True
    log: Callable[[str], None] = print
    frames: str = "refuse"  # the multi-frame policy the splits file was made with (``medtransfer.data.frames``)
    force_dicom: bool = False  # read DICOM files without the preamble / file meta (``--force-dicom``)
    # train up to this many tasks together as one packed model (``adapt.packed``); None: ``packed.default_pack``
    # (8; fft / lp-ft 1); 1: one by one. Results equal the lone runs' (within floating-point tolerance).
    pack: int | None = None

    def __post_init__(self) -> None:
        if self.pack is not None and self.pack < 1:
            raise MedtransferError(f"--pack must be at least 1, got {self.pack}")


def task_name(task: Task) -> str:
    if task.regime == "full":
        return f"full-fold{task.fold}"
    if task.regime == "fraction":
        return f"fraction{task.fraction:g}-seed{task.seed}-fold{task.fold}"
    return f"fewshot{task.shots}-seed{task.seed}-fold{task.fold}"


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name)


@dataclass(frozen=True)
class _Settings:
    """``run_adapt``'s keyword overrides, each given to the dataclass that declares it."""

    config: AdaptConfig
    options: MethodOptions
    selection: TaskSelection
    run: RunOptions


def resolve_settings(method: AdaptMethod, *, config: AdaptConfig | None = None,
                     options: MethodOptions | Mapping[str, Any] | None = None,
                     overrides: Mapping[str, Any] | None = None) -> _Settings:
    """Route each override (``None``: not given) to AdaptConfig, the method's options, TaskSelection or
    RunOptions by field name; a name none of them declares is an error that lists the known ones."""
    owners = {"config": AdaptConfig, "options": method.options, "selection": TaskSelection, "run": RunOptions}
    names = {key: {f.name for f in fields(owner)} for key, owner in owners.items()}
    given = {k: v for k, v in (overrides or {}).items() if v is not None}
    unknown = sorted(set(given) - set().union(*names.values()))
    if unknown:
        known = sorted(set().union(*names.values()))
        raise MedtransferError(f"unknown adapt option(s) {', '.join(unknown)} for method {method.name!r}; "
                               f"known: {', '.join(known)}")
    routed = {key: {k: v for k, v in given.items() if k in names[key]} for key in owners}
    base = config or AdaptConfig(**method.config_defaults)
    option_values = asdict(options) if isinstance(options, MethodOptions) else dict(options or {})
    if isinstance(options, MethodOptions):
        method.make_options(options)  # the right type for this method, or a clear error
    return _Settings(
        config=replace(base, **routed["config"]),
        options=method.make_options({**option_values, **routed["options"]}),
        selection=TaskSelection(**routed["selection"]),
        run=RunOptions(**routed["run"]),
    )


def run_adapt(
    manifest: str | Path | Manifest,
    splits: str | Path | SplitsFile,
    *,
    backbone: str,
    method: str,
    out: str | Path,
    weights: str = "default",
    config: AdaptConfig | None = None,
    options: MethodOptions | Mapping[str, Any] | None = None,
    **overrides: Any,
) -> pd.DataFrame:
    """Train ``backbone`` with ``method`` on every selected task; write rows under ``out``; return them.

    ``options``: the method's own options (a dict, or its options dataclass: ``get_method(m).options``).
    ``overrides`` are fields of ``AdaptConfig`` (epochs=, lr=, batch_size=, ...), of the method's options (rank=,
    alpha=, block_size=, ...), of ``TaskSelection`` (regimes=, shots=, folds=, seeds=) or of ``RunOptions``
    (device=, resume=, pixel_cache=, progress=, log=, frames=, pack=); ``None`` values are ignored so a CLI can pass its
    options straight through. ``task=NAME`` names the prediction task on every row.
    """
    splits_file = splits if isinstance(splits, SplitsFile) else load_splits(splits)
    adapt_method = get_method(method)
    task_label = str(overrides.pop("task", "") or "")
    # each task's row is a part file; ``export=False`` (a study's jobs) leaves folding them to the study
    export = bool(overrides.pop("export", True))
    settings = resolve_settings(adapt_method, config=config, options=options, overrides=overrides)
    run = settings.run
    if not isinstance(manifest, Manifest):
        manifest = load_manifest(manifest, label_column=splits_file.label_column, frames=run.frames)
    splits_file.check_manifest(manifest.fingerprint)
    # wrong or unreadable --out: stops before any training
    check_results_folder(out, splits_file.fingerprint, predictions=export)
    torch_device = resolve_device(run.device)
    autocast_dtype(settings.config.precision, torch_device)  # fp16 off CUDA: refused before any work
    tasks = settings.selection.select(splits_file)

    loaded = load_backbone(backbone, weights)
    configuration = run_configuration(backbone, loaded.weights, adapt_method, settings, frames=run.frames)
    if run.resume:  # a task finished with other settings is refused before any training
        run_root = Path(out) / RUNS_FOLDER / _safe(backbone) / _safe(adapt_method.label(settings.options))
        _check_finished_configuration(run_root, [task_name(t) for t in tasks], configuration)
    spec = loaded.spec
    if settings.config.image_size:
        spec = replace(spec, preprocessing=replace(spec.preprocessing, input_size=settings.config.image_size))
    if torch_device.type == "cpu":
        _warn_if_long(loaded.model, spec, tasks, settings, n_classes=len(splits_file.classes),
                      embeds_once=adapt_method.backbone_eval and (settings.config.augment or
                                                                  adapt_method.default_augment) == "none")
    needed = sorted({i for t in tasks for i in (*t.train, *t.val, *t.test)})
    store = load_pixels(manifest.table, needed, spec.preprocessing, num_workers=settings.config.num_workers,
                        progress=run.progress, pixel_cache=run.pixel_cache, log=run.log,
                        force_dicom=run.force_dicom)
    store.to_device_if_small(torch_device)
    job = AdaptJob(pristine=loaded.model, spec=spec, method=adapt_method, options=settings.options,
                   config=settings.config, splits=splits_file, store=store, device=torch_device,
                   weights=loaded.weights, weights_source=loaded.weights_source)
    run.log(f"adapt {backbone} ({loaded.weights_source}) with {job.label}: {len(tasks)} task(s) on {torch_device}; "
            f"images {store.source}; configuration {configuration}")
    run_root = Path(out) / RUNS_FOLDER / _safe(backbone) / _safe(job.label)
    fixed = {"task": task_label, "config": configuration,
             "preprocessing": "standardize" if not settings.config.image_size
             else f"standardize+{settings.config.image_size}px"}

    pack = run.pack if run.pack is not None else default_pack(torch_device, adapt_method)
    refusal = method_refusal(adapt_method, settings.options, settings.config) if pack > 1 else None
    if refusal:
        run.log(f"--pack {pack}: {job.label} runs one task at a time: {refusal}")
        pack = 1
    rows: dict[int, ResultRow] = {}
    todo: list[int] = []
    for number, task in enumerate(tasks):
        task_dir = run_root / task_name(task)
        if run.resume and (task_dir / "row.json").is_file():
            row, prediction = _load_done(task_dir)
            rows[number] = replace(row, splits=splits_file.fingerprint)
            run.log(f"[{number + 1}/{len(tasks)}] {task_name(task)}: done earlier with this configuration, kept "
                    "(--resume)")
            write_results(out, [rows[number]], prediction)
        else:
            todo.append(number)
    for group in pack_groups([tasks[n] for n in todo], pack):
        numbers = [todo[g] for g in group]
        task_runs = []
        for number in numbers:
            task_dir = run_root / task_name(tasks[number])
            if not run.resume:
                (task_dir / STATE_FILE).unlink(missing_ok=True)
            task_runs.append(TaskRun(task_dir, resume=run.resume, progress=run.progress, log=run.log,
                                     first=number == todo[0], desc=f"[{number + 1}/{len(tasks)}] "
                                     f"{task_name(tasks[number])}"))
        if len(numbers) == 1:
            outcomes = [run_task(job, tasks[numbers[0]], task_runs[0])]
        else:
            run.log(f"packed: {', '.join(task_name(tasks[n]) for n in numbers)} train as one model")
            outcomes = run_tasks_packed(job, [tasks[n] for n in numbers], task_runs)
        for number, task_run, (row, prediction) in zip(numbers, task_runs, outcomes, strict=True):
            row = replace(row, **fixed)
            _save_done(task_run.folder, row, prediction)
            rows[number] = row
            write_results(out, [row], prediction)
    if export:
        export_tables(out)
    return pd.DataFrame([rows[n].as_record() for n in range(len(tasks))])


def pack_groups(tasks: list[Task], pack: int) -> list[list[int]]:
    """Indices of ``tasks`` in packs of up to ``pack``: tasks of one regime with equally many training rows (the
    few-shot seeds of a shot count and fold; folds of equal size), which share one step count and schedule; in
    the tasks' order otherwise."""
    groups: dict[tuple, list[int]] = {}
    for index, task in enumerate(tasks):
        groups.setdefault((task.regime, len(task.train), task.refit_with_val), []).append(index)
    packs = [members[i:i + pack] for members in groups.values() for i in range(0, len(members), pack)]
    return sorted(packs, key=lambda members: members[0])


def run_configuration(backbone: str, weights: str, method: AdaptMethod, settings: _Settings, *, frames: str) -> str:
    """Hash of everything that shapes a task's result: backbone, weights, method and its options, the training
    config (less the decode workers, which change nothing but speed) and the multi-frame policy."""
    config = {k: v for k, v in asdict(settings.config).items() if k != "num_workers"}
    return config_hash({"backbone": backbone, "weights": weights, "method": method.name,
                        "options": asdict(settings.options), "config": config, "frames": frames})


def _check_finished_configuration(run_root: Path, names: list[str], configuration: str) -> None:
    """``--resume`` keeps a finished task only when it was made with this configuration; one with other settings
    (``--epochs 1 --lr 1e-5`` then ``--epochs 3 --lr 1e-3 --resume``) is refused before any training, never
    silently kept."""
    for name in names:
        path = run_root / name / "row.json"
        if not path.is_file():
            continue
        made_with = json.loads(path.read_text()).get("config", "")
        if made_with != configuration:
            raise MedtransferError(
                f"--resume: task {name} in {run_root} finished with another configuration ({made_with or 'unrecorded'}"
                f", this run's is {configuration}): the settings differ, so its result is not this run's; rerun "
                "without --resume to train it again (its row is replaced), or give another --out"
            )


def _warn_if_long(model, spec, tasks: list[Task], settings: _Settings, *, n_classes: int,
                  embeds_once: bool = False) -> None:
    """A CPU run that will take hours says so (with a measured estimate) before it starts, and what shortens it.
    ``embeds_once``: a frozen backbone without augmentation (lp) passes each image through it once, not per epoch
    (counted as one epoch, an upper bound: forward only)."""
    per_image = seconds_per_image(model, spec.preprocessing.input_size, n_classes=n_classes)
    epochs = 1 if embeds_once else settings.config.epochs
    total = run_seconds(tasks, epochs=epochs, per_image=per_image)
    if total >= WARN_SECONDS:
        warnings.warn(
            f"this CPU run will take about {hours(total)} ({len(tasks)} task(s), up to {epochs} "
            f"epoch(s), {spec.preprocessing.input_size} px, {per_image * 1000:.0f} ms per image); for a quick run "
            "use --image-size 64, --epochs 2, --folds 0, --regime full, or a GPU (--device cuda)",
            UserWarning, stacklevel=3)


def _save_done(task_dir: Path, row: ResultRow, prediction: pd.DataFrame | None) -> None:
    """Predictions, then ``row.json`` (what marks the task done), each by write-then-rename: a kill at any moment
    leaves the task done whole or not done, never a torn file that ``--resume`` would trip on."""
    task_dir.mkdir(parents=True, exist_ok=True)
    if prediction is not None:
        write_atomically(task_dir / "predictions.parquet", lambda path: prediction.to_parquet(path, index=False))
    text = json.dumps(asdict(row), default=float)
    write_atomically(task_dir / "row.json", lambda path: path.write_text(text))
    (task_dir / STATE_FILE).unlink(missing_ok=True)
    (task_dir / "refit" / STATE_FILE).unlink(missing_ok=True)


def _load_done(task_dir: Path) -> tuple[ResultRow, pd.DataFrame | None]:
    row = ResultRow(**json.loads((task_dir / "row.json").read_text()))
    path = task_dir / "predictions.parquet"
    return row, (pd.read_parquet(path) if path.is_file() else None)
