"""A small study for the study tests: 2 tasks, 2 tiny random backbones, 2 heads, 2 adapt methods, 2 folds
(probe: both; adapt: fold 0, the slow part), few-shot; array tasks of up to 16 jobs for submitit; plus a
plugin that makes one adapt job raise (to test retries and failure isolation)."""

from __future__ import annotations

import contextlib
import os
import signal
import time
from pathlib import Path

import pandas as pd

from medtransfer.data.synthetic import SyntheticSpec, make_synthetic_dataset

TESTS = Path(__file__).resolve().parent
SRC = TESTS.parent / "src"
N_JOBS = 30  # 2 tasks x (splits 1 + extract 2 + probe 4 + adapt 8)
TIMING = {"fit_seconds", "train_seconds", "peak_memory_mb", "weights_source"}


def make_data(root: Path) -> dict[str, Path]:
    return {
        "alpha": make_synthetic_dataset(root / "alpha", SyntheticSpec(n_patients=24, image_size=32, seed=1)),
        "beta": make_synthetic_dataset(root / "beta", SyntheticSpec(n_patients=24, image_size=32, seed=2)),
    }


def study_text(manifests: dict[str, Path], *, extra_plugins: tuple[str, ...] = (), max_parallel: int = 0,
               results: str = "results") -> str:
    plugins = ", ".join(f'"{p}"' for p in ("medtransfer.testing.backbones:register_tiny_backbones", *extra_plugins))
    tasks = "".join(
        f'\n[tasks.{name}]\nmanifest = "{path}"\nstrategy = "kfold"\nfolds = 2\nshots = [2]\nseeds = 1\n'
        for name, path in manifests.items()
    )
    return f'''schema = "medtransfer.study/1"
name = "tiny"
plugins = [{plugins}]

[paths]
results = "{results}"

[backbones]
names = ["test-tiny-cnn", "test-tiny-vit"]

[extract]
weights = "random"
batch_size = 16

[probe]
heads = ["logreg", "knn"]

[run]
retries = 1
device = "cpu"
max_parallel = {max_parallel}

[resources.extract]
cpus = 1
gpus = 0
[resources.probe]
cpus = 1
gpus = 0
[resources.adapt]
cpus = 1
gpus = 0

[slurm]
cpus_per_job = 1
mem_gb = 2
time_minutes = 10
jobs_per_array_task = 16

[[adapt]]
method = "lp"
epochs = 1
batch_size = 16
folds = [0]

[[adapt]]
method = "bitfit"
epochs = 1
batch_size = 16
folds = [0]
{tasks}'''


def write_study(folder: Path, manifests: dict[str, Path], **options) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "study.toml"
    path.write_text(study_text(manifests, **options))
    return path


def engine_environment(monkeypatch) -> None:
    """Engine workers are other processes: they find medtransfer and the test plugins through PYTHONPATH, and
    use one thread each (tiny models on a shared 2-core machine)."""
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(SRC), str(TESTS)]))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")


def results_table(study_dir: Path, results: str = "results") -> pd.DataFrame:
    frames = []
    for table in sorted((study_dir / results).glob("*/results.parquet")):
        frame = pd.read_parquet(table)
        frame["task"] = table.parent.name  # the study's task folder (rows written without --task leave it "")
        frames.append(frame)
    table = pd.concat(frames, ignore_index=True)
    table = table.drop(columns=[c for c in TIMING if c in table.columns])
    return table.sort_values(["task", "backbone", "method", "regime", "shots", "seed", "fold"]).reset_index(drop=True)


def assert_same_table(table: pd.DataFrame, reference: pd.DataFrame) -> None:
    """Row by row: same keys, same metrics (to float noise across processes and thread counts)."""
    pd.testing.assert_frame_equal(table, reference, check_exact=False, rtol=1e-4, atol=1e-6)


def session_processes(session: int) -> list[str]:
    """``pid command`` of every process in the session ``session`` (Linux /proc; field 6 of stat is the sid)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
        except OSError:  # ended meanwhile
            continue
        after_name = stat[stat.rindex(")") + 2:].split()  # state ppid pgrp session ...
        if int(after_name[3]) == session and after_name[0] != "Z":
            found.append(f"{entry.name} {command[:80]}")
    return found


def wait_for_session_end(session: int, *, timeout: float) -> list[str]:
    """Wait until no process of ``session`` is left; returns those still alive after ``timeout``."""
    deadline = time.monotonic() + timeout
    while (left := session_processes(session)) and time.monotonic() < deadline:
        time.sleep(0.5)
    return left


def kill_session(session: int) -> None:
    for line in session_processes(session):
        with contextlib.suppress(ProcessLookupError):
            os.kill(int(line.split()[0]), signal.SIGKILL)


FAIL_ENV = "MEDTRANSFER_TEST_FAIL_JOB"


def install_failing_method() -> None:
    """Plugin: wraps run_adapt so that adapt jobs of the method named in $MEDTRANSFER_TEST_FAIL_JOB raise."""
    import medtransfer.adapt as adapt

    if getattr(adapt.run_adapt, "_failing", False):
        return
    original = adapt.run_adapt

    def run_adapt(manifest, splits, *, backbone, method, **options):
        if os.environ.get(FAIL_ENV) == f"{backbone}/{method}/{options.get('folds')}":
            raise RuntimeError("deliberate failure for the test")
        return original(manifest, splits, backbone=backbone, method=method, **options)

    run_adapt._failing = True
    adapt.run_adapt = run_adapt
