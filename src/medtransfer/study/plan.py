"""The job graph of a study and what of it is already done.

splits (per task) -> extract (per task x backbone; one writer per task's store at a time) -> probe (per task x
backbone x head) and adapt (per task x backbone x method config x fold/shots/seed). Probe and adapt jobs of a
task wait for every extraction of that task, so nothing reads a store or pixel cache while it is written.
Done-ness comes from the results tables' keys (a finished row is never recomputed) and, for extraction, from a
marker the job leaves once its group holds every image of the task's manifest.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from medtransfer.errors import MedtransferError
from medtransfer.results import BASE_KEY, read_rows
from medtransfer.splits import SplitsFile, SplitSpec, Task, load_splits, make_splits, tasks_for
from medtransfer.study.spec import AdaptConfigSpec, StudySpec, TaskSpec


@dataclass(frozen=True)
class Job:
    """One unit of work for an engine: ``params`` are the keyword arguments of ``jobs.run_job`` (plain values)."""

    job_id: str
    kind: str  # splits, extract, probe or adapt
    task: str
    params: dict
    deps: tuple[str, ...] = ()
    keys: tuple[tuple, ...] = ()  # results keys this job writes (probe, adapt)
    mutex: str = ""  # jobs sharing a mutex never run at the same time (one writer per feature store)
    backbone: str = ""
    work: dict = field(default_factory=dict)  # what the cost model needs: images forward / trained, epochs
    # jobs with the same bundle key may run in one worker process, sharing what they load (``jobs.run_bundle``):
    # adapt jobs of one (task, backbone, method config), probe jobs of one (task, backbone); "" runs alone
    bundle: str = ""


def bundles(jobs: list[Job], size: int) -> list[list[Job]]:
    """``jobs`` in units a worker runs: same-key jobs together, ``size`` at most, in the order given."""
    units: list[list[Job]] = []
    open_units: dict[str, list[Job]] = {}
    for job in jobs:
        unit = open_units.get(job.bundle) if job.bundle else None
        if unit is None or len(unit) >= size:
            unit = []
            units.append(unit)
            if job.bundle:
                open_units[job.bundle] = unit
        unit.append(job)
    return units


@dataclass
class Plan:
    study: StudySpec
    jobs: list[Job]
    done: set[str]
    splits: dict[str, SplitsFile | None]
    estimated: set[str] = field(default_factory=set)  # tasks planned from expected_* (no manifest yet)

    def pending(self) -> list[Job]:
        return [job for job in self.jobs if job.job_id not in self.done]

    def counts(self) -> dict[str, dict[str, int]]:
        out: dict[str, dict[str, int]] = {}
        for job in self.jobs:
            entry = out.setdefault(job.kind, {"total": 0, "done": 0})
            entry["total"] += 1
            entry["done"] += job.job_id in self.done
        return out


def result_key(backbone: str, method: str, task: Task) -> tuple:
    return (backbone, method, task.regime, int(task.shots), int(task.seed), int(task.fold),
            round(float(task.fraction), 9))


def table_keys(results: Path, *, redo_failed: bool = False) -> set[tuple]:
    """Keys of the rows under ``results`` (failed rows left out with ``redo_failed``)."""
    table = read_rows(results, columns=["status"])
    if table is None:
        return set()
    if redo_failed and "status" in table.columns:
        table = table[table["status"] == "ok"]
    return {(str(b), str(m), str(r), int(s), int(sd), int(f), round(float(fr), 9))
            for b, m, r, s, sd, f, fr in table[BASE_KEY].itertuples(index=False)}


def split_spec(task: TaskSpec) -> SplitSpec:
    return SplitSpec(strategy=task.strategy, n_folds=task.folds, val_fraction=task.val_fraction,
                     shots=tuple(task.shots), fewshot_seeds=task.seeds, seed=task.seed,
                     positive=task.positive)


def task_splits(study: StudySpec, task: TaskSpec) -> SplitsFile | None:
    """The task's splits (made in memory, deterministic), or None when its manifest does not exist yet."""
    if task.splits_file is not None:
        return load_splits(task.splits_file) if task.splits_file.is_file() else None
    if not task.manifest.is_file():
        return None
    from medtransfer.data.manifest import load_manifest

    made = make_splits(load_manifest(task.manifest, label_column=task.label_column, check_files=False,
                                     frames=task.frames), split_spec(task))
    written = study.splits_path(task)
    if written.is_file() and load_splits(written).fingerprint != made.fingerprint:
        raise MedtransferError(
            f"{written} was made with other settings or another manifest than tasks.{task.name} declares; "
            "move it away (its results folder belongs to it) or point tasks.{task.name}.splits_file at it"
        )
    return made


def check_results_folder(study: StudySpec, task: TaskSpec, splits: SplitsFile) -> None:
    folder = study.results_path(task.name)
    table = read_rows(folder, columns=["splits"])
    if table is None or "splits" not in table:
        return
    held = set(table["splits"].dropna().astype(str)) - {""}
    if held and held != {splits.fingerprint}:
        raise MedtransferError(
            f"tasks.{task.name}: results folder {folder} holds rows of splits {', '.join(sorted(held))}, "
            f"but the study's splits are {splits.fingerprint}: their folds differ; set paths.results elsewhere"
        )


def build_plan(study: StudySpec, *, redo_failed: bool = False) -> Plan:
    """Every job of the study and which are done; refuses splits that disagree with existing results."""
    jobs: list[Job] = []
    done: set[str] = set()
    all_splits: dict[str, SplitsFile | None] = {}
    estimated: set[str] = set()
    for task in study.tasks:
        splits = task_splits(study, task)
        all_splits[task.name] = splits
        if splits is None:
            estimated.add(task.name)
            tasks = _expected_tasks(task)
            classes = task.expected_classes
        else:
            check_results_folder(study, task, splits)
            tasks = None
            classes = len(splits.classes)
        keys_done = table_keys(study.results_path(task.name), redo_failed=redo_failed)
        task_jobs = _task_jobs(study, task, splits, tasks, classes)
        for job in task_jobs:
            if _is_done(study, job, splits, keys_done):
                done.add(job.job_id)
        jobs.extend(task_jobs)
    # an extraction nobody downstream needs any more is done too (its store rows are only read by them)
    for job in jobs:
        if job.kind == "extract" and job.job_id not in done:
            users = [j for j in jobs if job.job_id in j.deps]
            if users and all(u.job_id in done for u in users):
                done.add(job.job_id)
    return Plan(study=study, jobs=jobs, done=done, splits=all_splits, estimated=estimated)


def _expected_tasks(task: TaskSpec) -> list[Task]:
    """Tasks shaped like the real splits (folds from the strategy, sizes from ``expected_images``)."""
    if task.expected_images <= 0:
        raise MedtransferError(f"tasks.{task.name}.manifest not found ({task.manifest}); fill it in, or give "
                               f"tasks.{task.name}.expected_images to plan before the data is there")
    n_folds = {"kfold": task.folds, "loco": max(task.expected_centers, 2), "holdout": 1}[task.strategy]
    test = round(task.expected_images / n_folds) if task.strategy != "holdout" else round(0.2 * task.expected_images)
    train_val = task.expected_images - test
    val = round(train_val * task.val_fraction)
    ids = [f"x{i}" for i in range(task.expected_images)]
    train, val_ids, test_ids = ids[: train_val - val], ids[train_val - val : train_val], ids[train_val:]
    tasks = []
    for fold in range(n_folds):
        tasks.append(Task("full", 0, task.seed, fold, train, val_ids, test_ids, True))
        for n_shots in task.shots:
            for seed in range(task.seeds):
                tasks.append(Task("fewshot", n_shots, seed, fold, train[: n_shots * task.expected_classes], val_ids,
                                  test_ids, False))
    return tasks


def _settings(config: AdaptConfigSpec):
    from medtransfer.adapt.methods import get_method
    from medtransfer.adapt.run import resolve_settings

    method = get_method(config.method)
    return method, resolve_settings(method, options=config.options, overrides=config.config)


def adapt_label(config: AdaptConfigSpec) -> str:
    """The results table's ``method`` value of this config's rows (``lora-r8``), as ``run_adapt`` writes it."""
    method, settings = _settings(config)
    return method.label(settings.options)


def _adapt_selected(config: AdaptConfigSpec, task: Task) -> bool:
    return (task.regime in config.regimes
            and (config.folds is None or task.fold in config.folds)
            and (config.shots is None or task.regime != "fewshot" or task.shots in config.shots)
            and (config.seeds is None or task.regime == "full" or task.seed in config.seeds))


def _task_jobs(study: StudySpec, task: TaskSpec, splits: SplitsFile | None, tasks: list[Task] | None,
               classes: int) -> list[Job]:
    from medtransfer.adapt.run import task_name

    name = task.name
    common = {"plugins": list(study.plugins), "device": study.device}
    splits_path = str(study.splits_path(task))
    manifest, store = str(task.manifest), str(study.store_path(name))
    pixel_cache = study.pixel_cache_path(name)
    out = str(study.results_path(name))
    n_images = splits.n_samples if splits is not None else task.expected_images
    jobs: list[Job] = []
    split_id = f"splits/{name}"
    if task.splits_file is None:
        jobs.append(Job(split_id, "splits", name, {
            **common, "kind": "splits", "manifest": manifest, "label_column": task.label_column,
            "split_spec": split_spec(task).__dict__ | {"shots": list(task.shots)}, "splits_path": splits_path,
            "fingerprint": splits.fingerprint if splits is not None else "", "frames": task.frames,
        }))
    extract_ids = []
    for backbone in study.backbones:
        extract_id = f"extract/{name}/{backbone}"
        extract_ids.append(extract_id)
        jobs.append(Job(extract_id, "extract", name, {
            **common, "kind": "extract", "manifest": manifest, "label_column": task.label_column, "backbone": backbone,
            "store": store, "weights": study.weights, "batch_size": study.extract_batch_size,
            "precision": study.precision, "pixel_cache": str(pixel_cache) if pixel_cache else None,
            "store_format": study.store_format, "marker": str(_marker(study, name, backbone)),
            "frames": task.frames,
        }, deps=(split_id,) if task.splits_file is None else (), mutex=f"store/{name}", backbone=backbone,
            work={"forward": n_images}))
    deps = tuple(extract_ids)
    probe_tasks = tasks if tasks is not None else tasks_for(splits, study.probe_regimes)
    probe_tasks = [t for t in probe_tasks if t.regime in study.probe_regimes]
    for backbone in study.backbones:
        for head in study.heads:
            jobs.append(Job(f"probe/{name}/{backbone}/{head}", "probe", name, {
                **common, "kind": "probe", "store": store, "splits_path": splits_path, "backbone": backbone,
                "head": head, "out": out, "weights": study.weights, "regimes": list(study.probe_regimes),
                "options": dict(study.probe_options),
            }, deps=deps, keys=tuple(result_key(backbone, head, t) for t in probe_tasks), backbone=backbone,
                work={"fits": len(probe_tasks)}, bundle=f"probe/{name}/{backbone}"))
    adapt_tasks = tasks if tasks is not None else tasks_for(splits, ("full", "fewshot"))
    for config in study.adapt:
        label = adapt_label(config)
        for backbone in study.backbones:
            for t in adapt_tasks:
                if not _adapt_selected(config, t):
                    continue
                jobs.append(Job(f"adapt/{name}/{backbone}/{label}/{task_name(t)}", "adapt", name, {
                    **common, "kind": "adapt", "manifest": manifest, "splits_path": splits_path,
                    "backbone": backbone, "method": config.method, "config": dict(config.config),
                    "options": dict(config.options), "out": out, "weights": study.weights, "regime": t.regime,
                    "fold": t.fold, "shots": t.shots, "seed": t.seed, "task_name": task_name(t), "frames": task.frames,
                    "pixel_cache": str(pixel_cache) if pixel_cache else None,
                }, deps=deps, keys=(result_key(backbone, label, t),), backbone=backbone,
                    work={"method": config.method, "train": len(t.train), "val": len(t.val), "test": len(t.test),
                          "epochs": _epochs(config)}, bundle=f"adapt/{name}/{backbone}/{label}"))
    return jobs


def _epochs(config: AdaptConfigSpec) -> int:
    return _settings(config)[1].config.epochs


def _marker(study: StudySpec, task: str, backbone: str) -> Path:
    return study.state_path / "extracted" / f"{task}__{backbone.replace('/', '_').replace(':', '_')}.json"


def _is_done(study: StudySpec, job: Job, splits: SplitsFile | None, keys_done: set[tuple]) -> bool:
    if job.kind == "splits":
        path = Path(job.params["splits_path"])
        return splits is not None and path.is_file() and load_splits(path).fingerprint == splits.fingerprint
    if job.kind == "extract":
        marker = Path(job.params["marker"])
        if splits is None or not marker.is_file() or not Path(job.params["store"]).exists():
            return False
        return json.loads(marker.read_text()).get("manifest") == splits.manifest_fingerprint
    return bool(job.keys) and all(key in keys_done for key in job.keys)
