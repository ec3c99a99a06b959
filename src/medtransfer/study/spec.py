"""The study file (TOML, schema ``medtransfer.study/1``): a whole benchmark grid declared once.

Every key is checked: an unknown key, a wrong type, an unknown backbone, head or adapt method is one
``MedtransferError`` line that names the key (``study.toml: tasks.AFC.folds must be an integer, got '5'``).
Paths are relative to the study file's folder. Layout of what a study writes (one store per task, so that one
task's extraction never writes a store another task's probes are reading)::

    <features>/<task>.zarr   <pixels>/<task>.zarr   <splits>/<task>.json   <results>/<task>/results.parquet
    <results>/.study/        the driver's log of finished and failed jobs, extract markers
"""

from __future__ import annotations

import importlib
import itertools
import re
import sys
from dataclasses import dataclass, field, fields
from pathlib import Path

from medtransfer.errors import MedtransferError

if sys.version_info >= (3, 11):
    import tomllib
else:  # the same parser, before it joined the standard library
    import tomli as tomllib

SCHEMA = "medtransfer.study/1"
EXECUTORS = ("local", "ray", "slurm")
JOB_KINDS = ("splits", "extract", "probe", "adapt")
# Study and task names become file and folder names (<features>/<task>.zarr, <results>/<task>/) and the SLURM job
# name: plain names only, so that no name leaves the study's folders or becomes a line of a generated script.
PLAIN_NAME = re.compile(r"[A-Za-z0-9_.-]+")
# sbatch --partition takes a comma-separated list of partition names (https://slurm.schedmd.com/sbatch.html)
PARTITION = re.compile(r"[A-Za-z0-9_.-]+(,[A-Za-z0-9_.-]+)*")
CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def check_plain_name(value: str, what: str, source: Path) -> str:
    """``value`` if it is a plain name (letters, digits, ``-``, ``_``, ``.``; no ``..``, not only dots), else one
    line saying why."""
    if not PLAIN_NAME.fullmatch(value) or ".." in value or not value.strip("."):
        raise MedtransferError(f"{source.name}: {what} {value!r} is not a plain name: use letters, digits, '-', '_' "
                               "and '.' (no '..', no '/', no spaces or control characters)")
    return value
ADAPT_SELECTORS = ("method", "regimes", "shots", "seeds", "folds")
ADAPT_REGIMES = ("full", "fewshot")


@dataclass(frozen=True)
class TaskSpec:
    """One prediction task: its manifest and how to split it (or an existing splits file)."""

    name: str
    manifest: Path
    label_column: str = "label"
    strategy: str = "kfold"
    folds: int = 5
    shots: tuple[int, ...] = ()
    seeds: int = 5
    val_fraction: float = 0.2
    seed: int = 0
    splits_file: Path | None = None
    frames: str = "refuse"  # multi-frame policy (``medtransfer.data.frames``), the same for splits, extract, adapt
    positive: str | None = None  # binary tasks: the positive class, as `splits --positive` takes it
    # what the data set is expected to hold: lets `study plan` cost a grid before the manifest exists
    expected_images: int = 0
    expected_centers: int = 0
    expected_classes: int = 2


@dataclass(frozen=True)
class AdaptConfigSpec:
    """One point of an adapt grid: a method with fixed settings (e.g. lora with rank 8, 5 epochs).

    ``config``: fields of ``AdaptConfig`` (epochs, lr, batch_size, ...); ``options``: fields of the method's own
    options dataclass (``get_method(method).options``: rank, alpha, ...)."""

    method: str
    config: dict
    options: dict
    regimes: tuple[str, ...] = ADAPT_REGIMES
    shots: tuple[int, ...] | None = None
    seeds: tuple[int, ...] | None = None
    folds: tuple[int, ...] | None = None


@dataclass(frozen=True)
class Resources:
    """What one job asks the engine for (Ray resource requests; SLURM uses the largest per array)."""

    cpus: float = 1.0
    gpus: float = 0.0
    memory_gb: float = 0.0  # 0: no memory request (Ray's ``memory`` resource)


@dataclass(frozen=True)
class SlurmSpec:
    partition: str = ""
    time_minutes: int = 240
    gpus_per_job: int = 1
    cpus_per_job: int = 4
    mem_gb: int = 32
    array_parallelism: int = 64
    # study jobs one array task runs one after the other: many small jobs (probe fits, few-shot PEFT runs) then
    # pay the scheduler's queueing and one Python + torch start-up per bundle instead of per job
    jobs_per_array_task: int = 1


@dataclass(frozen=True)
class StudySpec:
    path: Path
    name: str
    tasks: tuple[TaskSpec, ...]
    backbones: tuple[str, ...]
    weights: str = "default"
    heads: tuple[str, ...] = ("logreg",)
    probe_regimes: tuple[str, ...] = ("full", "fewshot")
    probe_options: dict = field(default_factory=dict)
    adapt: tuple[AdaptConfigSpec, ...] = ()
    features: Path = Path("features")
    pixels: Path | None = Path("pixels")
    splits: Path = Path("splits")
    results: Path = Path("results")
    store_format: str = "zarr"
    extract_batch_size: int = 32
    precision: str = "auto"
    device: str = "auto"
    plugins: tuple[str, ...] = ()
    retries: int = 1
    max_parallel: int = 0  # 0: the engine's capacity
    # adapt jobs of one (task, backbone, method config), or probe jobs of one (task, backbone), that one worker
    # process runs in turn, loading manifest, splits, weights and pixels (or features) once; 1: one job a process
    bundle_size: int = 16
    # a runner's claim on a job it runs lapses this long after its last heartbeat (renewed every quarter of it);
    # another runner then takes the job over
    lease_seconds: float = 120.0
    resources: dict[str, Resources] = field(default_factory=dict)
    slurm: SlurmSpec = field(default_factory=SlurmSpec)

    def task(self, name: str) -> TaskSpec:
        return next(t for t in self.tasks if t.name == name)

    def store_path(self, task: str) -> Path:
        suffix = ".h5" if self.store_format == "hdf5" else ".zarr"
        return self.features / f"{task}{suffix}"

    def pixel_cache_path(self, task: str) -> Path | None:
        return None if self.pixels is None else self.pixels / f"{task}.zarr"

    def splits_path(self, task: TaskSpec) -> Path:
        return task.splits_file or self.splits / f"{task.name}.json"

    def results_path(self, task: str) -> Path:
        return self.results / task

    @property
    def state_path(self) -> Path:
        return self.results / ".study"

    def check_manifests(self) -> None:
        """Running needs every manifest (planning can cost a grid from ``expected_images`` alone)."""
        for task in self.tasks:
            if not task.manifest.is_file():
                raise MedtransferError(f"{self.path.name}: tasks.{task.name}.manifest not found: {task.manifest}")
            if task.splits_file is not None and not task.splits_file.is_file():
                raise MedtransferError(f"{self.path.name}: tasks.{task.name}.splits_file not found: "
                                       f"{task.splits_file}")


def import_plugins(plugins: tuple[str, ...] | list[str]) -> None:
    """``module`` or ``module:function``: imported (and the function called) before planning and in every job,
    so that backbones, heads or methods registered by the user's own code exist in engine workers too."""
    for plugin in plugins:
        module_name, _, function = plugin.partition(":")
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            raise MedtransferError(f"plugin {plugin!r} cannot be imported: {exc}") from None
        if function:
            hook = getattr(module, function, None)
            if not callable(hook):
                raise MedtransferError(f"plugin {plugin!r}: {module_name} has no function {function}")
            hook()


class _Reader:
    """Typed access to one TOML table with one-line errors naming ``file: dotted.key``."""

    def __init__(self, source: Path, table: object, where: str, known: tuple[str, ...]):
        self.source, self.where = source, where
        if not isinstance(table, dict):
            raise self.error(f"{where or 'the file'} must be a table")
        unknown = sorted(set(table) - set(known))
        if unknown:
            raise self.error(f"unknown key {self.key(unknown[0])} (known: {', '.join(known)})")
        self.table = table

    def key(self, name: str) -> str:
        return f"{self.where}.{name}" if self.where else name

    def error(self, message: str) -> MedtransferError:
        return MedtransferError(f"{self.source.name}: {message}")

    def get(self, name: str, kind: type | tuple[type, ...], default: object = None, *, what: str = ""):
        value = self.table.get(name, default)
        if value is None:
            return None
        if isinstance(value, bool) and bool not in (kind if isinstance(kind, tuple) else (kind,)):
            raise self.error(f"{self.key(name)} must be {what or kind.__name__}, got {value!r}")
        if not isinstance(value, kind):
            if isinstance(value, int) and kind is float:
                return float(value)
            raise self.error(f"{self.key(name)} must be {what or getattr(kind, '__name__', kind)}, got {value!r}")
        if isinstance(value, str):
            self.no_control(name, value)
        return value

    def no_control(self, name: str, value: str) -> None:
        """No study value holds a newline or another control character: values reach paths and job scripts."""
        if CONTROL.search(value):
            raise self.error(f"{self.key(name)} holds a control character (newline, tab, ...): {value!r}; "
                             "study values must be one plain line")

    def ints(self, name: str, default: tuple[int, ...] | None = ()) -> tuple[int, ...] | None:
        value = self.table.get(name, default)
        if value is None:
            return None
        if isinstance(value, int) and not isinstance(value, bool):
            value = [value]
        if not isinstance(value, list | tuple) or not all(isinstance(v, int) and not isinstance(v, bool)
                                                          for v in value):
            raise self.error(f"{self.key(name)} must be a list of integers, got {value!r}")
        return tuple(value)

    def strings(self, name: str, default: tuple[str, ...] = ()) -> tuple[str, ...]:
        value = self.table.get(name, default)
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
            raise self.error(f"{self.key(name)} must be a list of strings, got {value!r}")
        for item in value:
            self.no_control(name, item)
        return tuple(value)

    def path(self, name: str, base: Path, default: str | None) -> Path | None:
        value = self.get(name, str, default)
        if value is None or value == "":
            return None
        return (base / Path(value).expanduser()).resolve()


TOP_KEYS = ("schema", "name", "plugins", "paths", "tasks", "backbones", "extract", "probe", "adapt", "run",
            "resources", "slurm")


def load_study(path: str | Path) -> StudySpec:
    """Read and validate a study file; imports its plugins so that their backbones validate."""
    path = Path(path)
    if not path.is_file():
        raise MedtransferError(f"study file not found: {path}")
    try:
        document = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise MedtransferError(f"{path.name} is not valid TOML: {exc}") from None
    base = path.resolve().parent
    top = _Reader(path, document, "", TOP_KEYS)
    schema = top.get("schema", str, None)
    if schema != SCHEMA:
        raise top.error(f"schema must be {SCHEMA!r}, got {schema!r} (write one with `medtransfer study init`)")
    plugins = top.strings("plugins")
    import_plugins(plugins)

    paths = _Reader(path, document.get("paths", {}), "paths", ("features", "pixels", "splits", "results"))
    tasks = _tasks(path, base, document.get("tasks"))
    backbones = _backbones(path, document.get("backbones", {}))
    extract = _Reader(path, document.get("extract", {}), "extract", ("weights", "batch_size", "precision", "format"))
    store_format = extract.get("format", str, "zarr")
    if store_format not in ("zarr", "hdf5"):
        raise extract.error(f"extract.format must be zarr or hdf5, got {store_format!r}")
    precision = extract.get("precision", str, "auto")
    from medtransfer.vocabulary import PRECISIONS

    if precision not in PRECISIONS:
        raise extract.error(f"extract.precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    batch_size = extract.get("batch_size", int, 32)
    if batch_size < 1:
        raise extract.error(f"extract.batch_size must be at least 1, got {batch_size}")
    heads, probe_regimes, probe_options = _probe(path, document.get("probe", {}))
    run = _Reader(path, document.get("run", {}), "run",
                  ("retries", "device", "max_parallel", "bundle_size", "lease_seconds"))
    retries = run.get("retries", int, 1)
    if retries < 0:
        raise run.error(f"run.retries must be 0 or more, got {retries}")
    given = top.get("name", str, None)
    name = check_plain_name(given, "name", path) if given is not None else (
        re.sub(r"[^A-Za-z0-9_.-]+", "-", path.stem).strip(".") or "study")  # the file's stem, made plain
    bundle_size = run.get("bundle_size", int, 16)
    if bundle_size < 1:
        raise run.error(f"run.bundle_size must be at least 1, got {bundle_size}")
    lease_seconds = run.get("lease_seconds", float, 120.0)
    if lease_seconds < 1:
        raise run.error(f"run.lease_seconds must be at least 1, got {lease_seconds}")
    return StudySpec(
        path=path.resolve(), name=name, tasks=tasks, backbones=backbones,
        weights=extract.get("weights", str, "default"), heads=heads, probe_regimes=probe_regimes,
        probe_options=probe_options, adapt=_adapt(path, document.get("adapt", [])),
        features=paths.path("features", base, "features"), pixels=paths.path("pixels", base, "pixels"),
        splits=paths.path("splits", base, "splits"), results=paths.path("results", base, "results"),
        store_format=store_format, extract_batch_size=batch_size, precision=precision,
        device=run.get("device", str, "auto"), plugins=plugins, retries=retries,
        max_parallel=run.get("max_parallel", int, 0), bundle_size=bundle_size, lease_seconds=lease_seconds,
        resources=_resources(path, document.get("resources", {})),
        slurm=_slurm(path, document.get("slurm", {})),
    )


TASK_KEYS = ("manifest", "label_column", "strategy", "folds", "shots", "seeds", "val_fraction", "seed",
             "splits_file", "frames", "expected_images", "expected_centers", "expected_classes", "positive")


def _tasks(source: Path, base: Path, table: object) -> tuple[TaskSpec, ...]:
    from medtransfer.data.frames import FRAME_POLICIES
    from medtransfer.splits import STRATEGIES

    if not isinstance(table, dict) or not table:
        raise MedtransferError(f"{source.name}: tasks must hold at least one [tasks.NAME] table")
    tasks = []
    for name, body in table.items():
        check_plain_name(name, "task name", source)
        reader = _Reader(source, body, f"tasks.{name}", TASK_KEYS)
        manifest = reader.path("manifest", base, None)
        if manifest is None:
            raise reader.error(f"tasks.{name}.manifest is required")
        strategy = reader.get("strategy", str, "kfold")
        if strategy not in STRATEGIES:
            raise reader.error(f"tasks.{name}.strategy must be one of {', '.join(STRATEGIES)}, got {strategy!r}")
        folds = reader.get("folds", int, 5)
        if strategy == "kfold" and folds < 2:
            raise reader.error(f"tasks.{name}.folds must be at least 2, got {folds}")
        shots = reader.ints("shots")
        if any(n < 1 for n in shots):
            raise reader.error(f"tasks.{name}.shots must be positive, got {list(shots)}")
        seeds = reader.get("seeds", int, 5)
        if shots and seeds < 1:
            raise reader.error(f"tasks.{name}.seeds must be at least 1, got {seeds}")
        val_fraction = reader.get("val_fraction", float, 0.2)
        if not 0 < val_fraction < 1:
            raise reader.error(f"tasks.{name}.val_fraction must be between 0 and 1, got {val_fraction}")
        frames = reader.get("frames", str, "refuse")
        if frames not in FRAME_POLICIES:
            raise reader.error(f"tasks.{name}.frames must be one of {', '.join(FRAME_POLICIES)}, got {frames!r}")
        tasks.append(TaskSpec(
            name=name, manifest=manifest, label_column=reader.get("label_column", str, "label"), strategy=strategy,
            folds=folds, shots=shots, seeds=seeds, val_fraction=val_fraction, seed=reader.get("seed", int, 0),
            splits_file=reader.path("splits_file", base, None), frames=frames,
            positive=_text(reader.get("positive", (str, int), None, what="a class label (text or integer)")),
            expected_images=reader.get("expected_images", int, 0),
            expected_centers=reader.get("expected_centers", int, 0),
            expected_classes=reader.get("expected_classes", int, 2),
        ))
    return tuple(tasks)


def _text(value: object) -> str | None:
    """A label written as 1 or "1" in TOML names the same class (manifest labels are read as text)."""
    return None if value is None else str(value)


def _backbones(source: Path, table: object) -> tuple[str, ...]:
    from medtransfer.backbones import get_spec
    from medtransfer.extract import expand_backbones

    reader = _Reader(source, table, "backbones", ("names",))
    names = reader.strings("names", ("seed",))
    if not names:
        raise reader.error("backbones.names is empty")
    expanded = tuple(expand_backbones(list(names)))
    for name in expanded:
        try:
            get_spec(name)
        except MedtransferError as exc:
            raise reader.error(f"backbones.names: {exc}") from None
    return expanded


PROBE_OPTIONS = {"class_weight": str, "preprocess": str, "threshold": str, "tune": str, "inner_folds": int}


def _probe(source: Path, table: object) -> tuple[tuple[str, ...], tuple[str, ...], dict]:
    from medtransfer.probe.heads import resolve_heads
    from medtransfer.vocabulary import REGIMES

    reader = _Reader(source, table, "probe", ("heads", "regimes", *PROBE_OPTIONS))
    heads = reader.strings("heads", ("logreg",))
    try:
        heads = tuple(h.name for h in resolve_heads(list(heads))) if heads else ()
    except MedtransferError as exc:
        raise reader.error(f"probe.heads: {exc}") from None
    regimes = reader.strings("regimes", ("full", "fewshot"))
    bad = [r for r in regimes if r not in REGIMES]
    if bad:
        raise reader.error(f"probe.regimes: unknown regime {bad[0]!r} (known: {', '.join(REGIMES)})")
    options = {name: reader.get(name, kind) for name, kind in PROBE_OPTIONS.items() if name in reader.table}
    return heads, regimes, options


def _adapt(source: Path, entries: object) -> tuple[AdaptConfigSpec, ...]:
    """Each ``[[adapt]]`` table: a method, selectors, and settings whose list values span a grid (``rank = [4, 8,
    16]``: three configs). A setting is a field of ``AdaptConfig`` or of the method's options dataclass."""
    from medtransfer.adapt.config import AdaptConfig
    from medtransfer.adapt.methods import get_method
    from medtransfer.adapt.run import resolve_settings

    if isinstance(entries, dict):
        entries = [entries]
    if not isinstance(entries, list):
        raise MedtransferError(f"{source.name}: adapt must be a list of [[adapt]] tables")
    config_names = tuple(f.name for f in fields(AdaptConfig))
    configs: list[AdaptConfigSpec] = []
    for number, entry in enumerate(entries):
        where = f"adapt[{number}]"
        if not isinstance(entry, dict):
            raise MedtransferError(f"{source.name}: {where} must be a table")
        method_name = _Reader(source, entry, where, tuple(entry)).get("method", str, None)
        if method_name is None:
            raise MedtransferError(f"{source.name}: {where}.method is required")
        try:
            method = get_method(method_name)
        except MedtransferError as exc:
            raise MedtransferError(f"{source.name}: {where}.method: {exc}") from None
        option_names = method.options.names()
        reader = _Reader(source, entry, where, (*ADAPT_SELECTORS, *config_names, *option_names))
        regimes = reader.strings("regimes", ADAPT_REGIMES)
        bad = [r for r in regimes if r not in ADAPT_REGIMES]
        if bad:
            raise reader.error(f"{where}.regimes: adapt runs {' and '.join(ADAPT_REGIMES)}, not {bad[0]!r}")
        grid = {name: value if isinstance(value, list) else [value]
                for name, value in entry.items() if name in config_names or name in option_names}
        for values in itertools.product(*grid.values()):
            chosen = dict(zip(grid, values, strict=True))
            config = {k: v for k, v in chosen.items() if k in config_names}
            options = {k: v for k, v in chosen.items() if k in option_names}
            try:
                resolve_settings(method, options=options, overrides=config)
            except (MedtransferError, TypeError) as exc:
                raise reader.error(f"{where}: {exc}") from None
            configs.append(AdaptConfigSpec(method=method.name, config=config, options=options, regimes=regimes,
                                           shots=reader.ints("shots", None), seeds=reader.ints("seeds", None),
                                           folds=reader.ints("folds", None)))
    return tuple(configs)


def _resources(source: Path, table: object) -> dict[str, Resources]:
    reader = _Reader(source, table, "resources", ("extract", "probe", "adapt", "splits"))
    defaults = {"splits": Resources(1, 0), "extract": Resources(2, 1), "probe": Resources(1, 0),
                "adapt": Resources(2, 1)}
    out = {}
    for kind, default in defaults.items():
        inner = _Reader(source, reader.table.get(kind, {}), f"resources.{kind}", ("cpus", "gpus", "memory_gb"))
        cpus, gpus = inner.get("cpus", float, default.cpus), inner.get("gpus", float, default.gpus)
        memory_gb = inner.get("memory_gb", float, 0.0)
        if cpus <= 0 or gpus < 0 or memory_gb < 0:
            raise inner.error(f"resources.{kind}: cpus must be positive, gpus and memory_gb 0 or more, got {cpus}, "
                              f"{gpus}, {memory_gb}")
        out[kind] = Resources(cpus, gpus, memory_gb)
    return out


def _slurm(source: Path, table: object) -> SlurmSpec:
    reader = _Reader(source, table, "slurm", tuple(f.name for f in fields(SlurmSpec)))
    values = {f.name: reader.get(f.name, type(f.default), f.default) for f in fields(SlurmSpec)}
    for name in ("time_minutes", "gpus_per_job", "cpus_per_job", "mem_gb", "array_parallelism",
                 "jobs_per_array_task"):
        if values[name] < (0 if name == "gpus_per_job" else 1):
            raise reader.error(f"slurm.{name} must be at least {0 if name == 'gpus_per_job' else 1}, "
                               f"got {values[name]}")
    if values["partition"] and not PARTITION.fullmatch(values["partition"]):
        raise reader.error(f"slurm.partition {values['partition']!r} is not a partition name (or a comma-separated "
                           "list of them): letters, digits, '-', '_', '.'")
    return SlurmSpec(**values)
