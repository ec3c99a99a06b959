"""Real SIGKILLs at random moments (issue 10): five each during `extract` (Zarr and HDF5), `probe` and `adapt`,
each followed by a resume, then a last run to the end; the store and the tables then equal an uninterrupted run's,
nothing lost or duplicated.

Each run is the real CLI command in a child forked from this process (torch and medtransfer already imported:
a child starts in milliseconds) and killed with SIGKILL. The moments come from a seeded RNG: even kills a random
delay (spread over the run's duration) after the run's first write; odd kills right after the k-th change of the
output folder (k random), so that they land in the middle of a write (between the files of a Zarr commit, inside
an HDF5 checkpoint, around the results' write-then-rename). The compute is slowed by a sleep (test-only hooks set
in the child), so that a run is long enough to be killed five times yet costs little CPU.
"""

from __future__ import annotations

import dataclasses
import multiprocessing
import os
import random
import signal
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from extract_support import TinyCNN, _spec, make_images, write_manifest
from medtransfer import cache_schema
from medtransfer.backbones import REGISTRY
from medtransfer.cli import app
from medtransfer.results import KEY, PREDICTIONS_FILE, RESULTS_FILE
from medtransfer.testing.backbones import TINY_CNN, register_tiny_backbones
from medtransfer.testing.backbones import TinyCNN as AdaptCNN

register_tiny_backbones()
FORK = multiprocessing.get_context("fork")
KILLS = 5
SLOW_EXTRACT = "tiny-kill-slow"
SLOW_ADAPT = "tiny-kill-slow-cnn"
METRICS = ["mcc", "pr_auc", "roc_auc", "balanced_accuracy", "f1", "sensitivity", "specificity", "brier", "ece",
           "n_train", "n_test", "status", "threshold"]


class SlowCNN(TinyCNN):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        time.sleep(0.02)
        return super().forward(x)


class SlowAdaptCNN(AdaptCNN):
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        time.sleep(0.004)
        return super().forward(images)


@pytest.fixture
def slow_backbones(monkeypatch):
    """Registered here, before the fork, so the children know them; what the commands import lazily (peft alone
    takes seconds) is imported here too, once, so that no child pays for it."""
    import peft  # noqa: F401

    import medtransfer.adapt.run  # noqa: F401
    import medtransfer.extract  # noqa: F401
    import medtransfer.probe.run  # noqa: F401
    from medtransfer.probe.heads import resolve_heads

    resolve_heads(["logreg", "centroid", "knn", "ridge"])
    monkeypatch.setitem(REGISTRY, SLOW_EXTRACT, _spec(SLOW_EXTRACT, lambda pretrained: SlowCNN()))
    monkeypatch.setitem(REGISTRY, SLOW_ADAPT, dataclasses.replace(REGISTRY[TINY_CNN], name=SLOW_ADAPT,
                                                                  build=lambda pretrained: SlowAdaptCNN()))


def _slow_probe_fits() -> None:
    """In the child: every probe fit sleeps a little (the fits themselves take microseconds on tiny features)."""
    from medtransfer.probe import run as probe_run

    real = probe_run._run_head

    def slow(*args, **kwargs):
        for item in real(*args, **kwargs):
            time.sleep(0.01)
            yield item

    probe_run._run_head = slow


def _child(args: list[str], hook: Callable[[], None] | None) -> None:
    torch.set_num_threads(1)
    if hook is not None:
        hook()
    try:
        app(args, standalone_mode=False)
    except BaseException:  # noqa: BLE001  (the exit status tells the parent)
        os._exit(1)
    os._exit(0)


def _signature(folder: Path) -> tuple:
    found = []
    for root, _, files in os.walk(folder):
        for name in files:
            try:
                stat = os.stat(os.path.join(root, name))
            except FileNotFoundError:  # renamed away while listed
                continue
            found.append((root, name, stat.st_size, stat.st_mtime_ns))
    return tuple(sorted(found))


def _wait_for_changes(process, folder: Path, count: int, timeout: float) -> None:
    """Until ``folder`` has changed ``count`` times (polled every millisecond) or the process ended."""
    seen, deadline = _signature(folder), time.monotonic() + timeout
    while count > 0 and process.is_alive() and time.monotonic() < deadline:
        time.sleep(0.001)
        now = _signature(folder)
        if now != seen:
            seen, count = now, count - 1


def _run(args: list[str], hook=None) -> float:
    start = time.monotonic()
    process = FORK.Process(target=_child, args=([str(a) for a in args], hook))
    process.start()
    process.join(120)
    assert process.exitcode == 0, f"{args[0]} failed (exit {process.exitcode})"
    return time.monotonic() - start


def _kill_and_resume(args: list[str], watch: Path, seconds: float, seed: int, hook=None) -> list[str]:
    """Five SIGKILLs at seeded random moments, each run resuming the last; then one run to the end.
    Returns how each kill was placed (for the log)."""
    rng = random.Random(seed)
    placed = []
    for kill in range(KILLS):
        watch.mkdir(parents=True, exist_ok=True)
        process = FORK.Process(target=_child, args=([str(a) for a in args], hook))
        process.start()
        if kill % 2:  # right after the k-th change of the output: inside a write
            changes = rng.randint(1, 4)
            _wait_for_changes(process, watch, changes, timeout=seconds)
            how = f"after change {changes}"
        else:  # a random moment of the run, once it has started writing
            _wait_for_changes(process, watch, 1, timeout=seconds)
            delay = rng.uniform(0.0, seconds / (KILLS + 1))
            time.sleep(delay)
            how = f"{delay:.3f} s after the first write"
        alive = process.is_alive()
        if alive:
            os.kill(process.pid, signal.SIGKILL)
        process.join(60)
        assert not alive or process.exitcode == -signal.SIGKILL, f"kill {kill}: exit {process.exitcode}"
        placed.append(how if alive else f"{how}: finished first")
    assert sum("finished first" not in p for p in placed) >= KILLS - 1, placed  # the kills land in the run
    last = _run(args, hook)
    print(f"{args[0]}: uninterrupted {seconds:.2f} s, kills {placed}, last run {last:.2f} s")
    return placed


@pytest.mark.parametrize("fmt", ["zarr", "hdf5"])
def test_extract_survives_five_random_sigkills(tmp_path, fmt, slow_backbones):
    images = make_images(tmp_path / "img", 48, size=24)
    manifest = write_manifest(tmp_path / "m.csv", images)
    name = "features.zarr" if fmt == "zarr" else "features.h5"

    def args(store: Path) -> list:
        return ["extract", manifest, "--backbone", SLOW_EXTRACT, "--weights", "random", "--store", store,
                "--batch-size", "4", "--workers", "0", "--device", "cpu", "--commit-seconds", "0.05"]

    reference = tmp_path / "reference" / name
    seconds = _run(args(reference))
    killed = tmp_path / "killed" / name
    _kill_and_resume(args(killed), killed.parent, seconds, seed=11 if fmt == "zarr" else 12)

    assert cache_schema.verify_store(killed) == []
    key = cache_schema.find_group(reference, SLOW_EXTRACT)
    assert cache_schema.find_group(killed, SLOW_EXTRACT) == key
    want, got = cache_schema.read_features(reference, key), cache_schema.read_features(killed, key)
    assert len(set(got.sample_ids)) == len(got.sample_ids) == 48, "no id lost or duplicated"
    order_want, order_got = np.argsort(want.sample_ids), np.argsort(got.sample_ids)
    assert [want.sample_ids[i] for i in order_want] == [got.sample_ids[i] for i in order_got]
    np.testing.assert_array_equal(got.features[order_got], want.features[order_want])


def _splits(manifest: Path, out: Path) -> Path:
    _run(["splits", manifest, "--folds", "3", "--shots", "2", "--seeds", "2", "--out", out])
    return out


def _same_tables(reference: Path, killed: Path, *, columns: list[str]) -> None:
    want, got = pd.read_parquet(reference / RESULTS_FILE), pd.read_parquet(killed / RESULTS_FILE)
    assert not got.duplicated(KEY).any(), "no duplicated rows"
    assert len(got) == len(want)
    want, got = want.sort_values(KEY, ignore_index=True), got.sort_values(KEY, ignore_index=True)
    pd.testing.assert_frame_equal(got[KEY + columns], want[KEY + columns])
    assert len(pd.read_csv(killed / "results.csv")) == len(got)
    key = [c for c in KEY if c in pd.read_parquet(reference / PREDICTIONS_FILE).columns] + ["id"]
    want = pd.read_parquet(reference / PREDICTIONS_FILE).sort_values(key, ignore_index=True)
    got = pd.read_parquet(killed / PREDICTIONS_FILE)
    assert not got.duplicated(key).any(), "no duplicated predictions"
    got = got.sort_values(key, ignore_index=True)
    pd.testing.assert_frame_equal(got[key + ["label", "probability"]], want[key + ["label", "probability"]])
    assert not list(killed.glob(".tmp-*")), "a killed writer's temporaries are cleaned up"


def test_probe_survives_five_random_sigkills(tmp_path, small_manifest, slow_backbones):
    splits = _splits(small_manifest, tmp_path / "splits.json")
    _run(["extract", small_manifest, "--backbone", SLOW_EXTRACT, "--weights", "random", "--store",
          tmp_path / "f.zarr", "--batch-size", "16", "--workers", "0", "--device", "cpu"])

    def args(out: Path) -> list:
        return ["probe", "--store", tmp_path / "f.zarr", "--splits", splits, "--backbone", SLOW_EXTRACT,
                "--head", "logreg", "--head", "centroid", "--head", "knn", "--head", "ridge", "--device", "cpu",
                "--out", out, "--task", "t"]

    seconds = _run(args(tmp_path / "reference"), _slow_probe_fits)
    _kill_and_resume(args(tmp_path / "killed"), tmp_path / "killed", seconds, seed=21, hook=_slow_probe_fits)
    _same_tables(tmp_path / "reference", tmp_path / "killed", columns=METRICS + ["hyperparameters", "config"])


def test_adapt_survives_five_random_sigkills(tmp_path, small_manifest, slow_backbones):
    splits = _splits(small_manifest, tmp_path / "splits.json")

    def args(out: Path) -> list:
        return ["adapt", small_manifest, "--splits", splits, "--backbone", SLOW_ADAPT, "--method", "lora",
                "--rank", "2", "--weights", "random", "--epochs", "3", "--patience", "10", "--folds", "0",
                "--shots", "2", "--seeds", "0", "--image-size", "32", "--batch-size", "16", "--device", "cpu",
                "--out", out, "--task", "t", "--resume"]

    seconds = _run(args(tmp_path / "reference"))
    _kill_and_resume(args(tmp_path / "killed"), tmp_path / "killed", seconds, seed=31)
    _same_tables(tmp_path / "reference", tmp_path / "killed",
                 columns=METRICS + ["config", "epochs_run", "best_epoch", "trainable_params"])


def test_a_task_killed_while_marked_done_is_done_whole_or_not_at_all(tmp_path, monkeypatch):
    """adapt's ``row.json`` (a finished task, kept by --resume) appears only by a rename: a kill while it is
    written leaves no torn file for the resume to trip on (before, it was written in place)."""
    from medtransfer.adapt import run as adapt_run
    from medtransfer.results import ResultRow

    row = ResultRow(backbone="b", method="lora-r2", regime="full", shots=0, seed=0, fold=0, mcc=0.5)
    prediction = pd.DataFrame({"id": ["a", "b"], "label": [0, 1], "probability": [0.2, 0.9]})

    def killed(source, target):
        if str(target).endswith("row.json"):
            raise KeyboardInterrupt  # dies with the row written to its temporary, before the rename
        os.rename(source, target)

    monkeypatch.setattr(os, "replace", killed)
    with pytest.raises(KeyboardInterrupt):
        adapt_run._save_done(tmp_path / "task", row, prediction)
    assert not (tmp_path / "task" / "row.json").exists()
    monkeypatch.undo()
    adapt_run._save_done(tmp_path / "task", row, prediction)
    loaded, predicted = adapt_run._load_done(tmp_path / "task")
    assert (loaded.method, loaded.fold, loaded.mcc) == ("lora-r2", 0, 0.5)
    pd.testing.assert_frame_equal(predicted, prediction)
