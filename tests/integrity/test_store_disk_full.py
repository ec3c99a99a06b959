"""Issue 29.6: a fresh Zarr store on a full disk read "not a readable zarr feature store: [Errno 28]"; now one line
says the disk is full. A real small filesystem (tmpfs as root), skipped where it cannot be made."""

from __future__ import annotations

import subprocess

import pytest

from medtransfer import cache_schema
from medtransfer.errors import MedtransferError


@pytest.fixture
def small_disk(tmp_path):
    mount = tmp_path / "small"
    mount.mkdir()
    made = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mount)], capture_output=True)
    if made.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {made.stderr.decode().strip()[:120]}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def _fill(folder, leave: int = 0):
    """Fill the filesystem up to ``leave`` bytes."""
    import shutil

    free = shutil.disk_usage(folder).free
    with open(folder / "filler", "wb") as handle:
        try:
            handle.write(b"\0" * max(0, free - leave))
            handle.flush()
        except OSError:
            pass


def test_a_fresh_zarr_store_on_a_full_disk_is_one_line(small_disk):
    _fill(small_disk)
    with pytest.raises(MedtransferError, match="the disk is full") as caught, \
            cache_schema.open_store(small_disk / "f.zarr", "a") as store:
        cache_schema.create_group(store, "g", {"features": 4}, {"backbone": "b"}, chunk_rows=4)
    assert "\n" not in str(caught.value) and "not a readable" not in str(caught.value)
