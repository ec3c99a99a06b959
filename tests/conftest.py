"""Shared fixtures: a small synthetic data set with a learnable label, patients and centers."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from tqdm import tqdm
from typer.testing import CliRunner

from medtransfer.data.synthetic import SyntheticSpec, make_synthetic_dataset

# tqdm's default write lock includes a process-shared semaphore, inherited by the children the kill tests fork
# (tests/integrity/test_random_kills.py): a child SIGKILLed while drawing a bar leaves it taken for good, and
# the next bar in this process waits forever. A thread lock is copied into each child instead of shared.
tqdm.set_lock(threading.RLock())


@pytest.fixture(scope="session")
def small_manifest(tmp_path_factory) -> Path:
    """About 85 images (8- and 16-bit PNG, 64 px) from 60 patients at 3 centers."""
    return make_synthetic_dataset(tmp_path_factory.mktemp("data"), SyntheticSpec(n_patients=60, image_size=64))


@pytest.fixture()
def cli():
    """Invoke the CLI in-process; returns the Result (exit_code, stdout, stderr)."""
    from medtransfer.cli import app

    runner = CliRunner()

    def invoke(*args: str):
        return runner.invoke(app, [str(a) for a in args], catch_exceptions=False)

    return invoke
