"""Issue 28.1 / 29.6: adapt's training state on a full disk was torch.save's RuntimeError as a traceback; it is
one line saying the disk is full, no partial file is left, and the last saved state is kept. A real small
filesystem (tmpfs, mounted as root), skipped where it cannot be made."""

from __future__ import annotations

import subprocess

import pytest
import torch

from medtransfer.adapt.train import load_state, save_state
from medtransfer.errors import MedtransferError


@pytest.fixture
def small_disk(tmp_path):
    mount = tmp_path / "small"
    mount.mkdir()
    made = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)], capture_output=True)
    if made.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {made.stderr.decode().strip()[:120]}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def test_a_training_state_that_does_not_fit_is_one_line_and_keeps_the_last(small_disk):
    state_path = small_disk / "state.pt"
    small = {"epoch": 1, "model": {"w": torch.zeros(16)}}
    save_state(state_path, small)
    before = state_path.read_bytes()
    with pytest.raises(MedtransferError) as caught:
        save_state(state_path, {"epoch": 2, "model": {"w": torch.ones(1_000_000)}})  # 4 MB on a 1 MB disk
    message = str(caught.value)
    assert "\n" not in message and "the disk is full" in message and "--resume" in message
    assert sorted(p.name for p in small_disk.iterdir()) == ["state.pt"]  # no temporary left
    assert state_path.read_bytes() == before
    assert torch.load(state_path, weights_only=True)["epoch"] == 1
    assert callable(load_state)
