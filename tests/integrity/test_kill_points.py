"""Kill before every storage write (Zarr and HDF5, a fresh and an appending store): after a rerun the store
is complete and equals an uninterrupted run; none is left broken.

The kill is injected in-process: every storage write of zarr and h5py (array writes and resizes, attribute
writes, array and group creation, HDF5 flushes and the atomic publish of the HDF5 working copy) counts, and the
k-th raises ``Killed`` (a BaseException nothing in medtransfer catches) *before* it writes. For Zarr that
leaves the folder exactly as a SIGKILL would. For HDF5 a killed process never closes and publishes its
working copy, so after the kill publishing is switched off: the store file is as the kill left it.
"""

from __future__ import annotations

import contextlib
import shutil

import h5py
import numpy as np
import pytest
import zarr
from zarr.core.attributes import Attributes

from extract_support import TINY, extract_kwargs, make_images, write_manifest
from medtransfer import cache_schema, cache_store
from medtransfer.extract import extract_features

KWARGS = extract_kwargs(chunk_rows=4, commit_rows=3)  # several chunks, partial commits of the appended tail


class Killed(BaseException):
    pass


ZARR_WRITES = [(zarr.Array, "__setitem__"), (zarr.Array, "resize"), (Attributes, "update"),
               (Attributes, "__setitem__"), (zarr.Group, "create_array"), (zarr.Group, "create_group"),
               (zarr.Group, "__delitem__")]
HDF5_WRITES = [(h5py.Dataset, "__setitem__"), (h5py.Dataset, "resize"), (h5py.AttributeManager, "__setitem__"),
               (h5py.Group, "create_dataset"), (h5py.Group, "create_group"), (h5py.Group, "__delitem__"),
               (h5py.File, "flush")]


class KillSwitch:
    """Counts storage writes; raises ``Killed`` before write number ``kill_at`` (None: never)."""

    def __init__(self, monkeypatch, fmt: str, kill_at: int | None):
        self.count, self.kill_at, self.killed = 0, kill_at, False
        for owner, name in ZARR_WRITES if fmt == "zarr" else HDF5_WRITES:
            monkeypatch.setattr(owner, name, self._wrap(getattr(owner, name)))
        real_publish = cache_store._publish

        def publish(work, path):
            if self.killed:
                return  # a killed process publishes nothing
            self._tick()
            real_publish(work, path)

        monkeypatch.setattr(cache_store, "_publish", publish)

    def _tick(self) -> None:
        if self.killed:
            return
        self.count += 1
        if self.kill_at is not None and self.count == self.kill_at:
            self.killed = True
            raise Killed

    def _wrap(self, real):
        def write(*args, **kwargs):
            self._tick()
            return real(*args, **kwargs)

        return write


@pytest.fixture(autouse=True)
def _tiny(tiny_backbones):
    return tiny_backbones


def _rows(store, key):
    features = cache_schema.read_features(store, key)
    order = np.argsort(features.sample_ids)
    return [features.sample_ids[i] for i in order], features.features[order]


@pytest.mark.parametrize("fmt", ["zarr", "hdf5"])
@pytest.mark.parametrize("appending", [False, True], ids=["fresh", "appending"])
def test_a_kill_before_any_write_then_a_rerun_equals_an_uninterrupted_run(tmp_path, monkeypatch, fmt, appending):
    images = make_images(tmp_path / "img", 7, size=16)
    first = write_manifest(tmp_path / "first.csv", images[:3])
    full = write_manifest(tmp_path / "full.csv", images)
    suffix = ".zarr" if fmt == "zarr" else ".h5"
    reference = tmp_path / f"reference{suffix}"
    key = extract_features(full, TINY, reference, **KWARGS).group_key
    expected = _rows(reference, key)

    base = tmp_path / f"base{suffix}"
    if appending:
        extract_features(first, TINY, base, **KWARGS)

    def prepared(name):
        store = tmp_path / f"{name}{suffix}"
        if appending:
            (shutil.copytree if fmt == "zarr" else shutil.copy)(base, store)
        return store

    with monkeypatch.context() as patch:
        counter = KillSwitch(patch, fmt, None)
        extract_features(full, TINY, prepared("count"), **KWARGS)
    n_writes = counter.count
    print(f"{fmt} {'appending' if appending else 'fresh'}: {n_writes} write points")
    assert n_writes > 10
    for kill_at in range(1, n_writes + 1):
        store = prepared(f"kill{kill_at}")
        with monkeypatch.context() as patch:
            KillSwitch(patch, fmt, kill_at)
            with contextlib.suppress(Killed):
                extract_features(full, TINY, store, **KWARGS)
        extract_features(full, TINY, store, **KWARGS)
        assert cache_schema.verify_store(store) == [], f"kill before write {kill_at} of {n_writes}"
        ids, features = _rows(store, key)
        assert ids == expected[0], f"kill before write {kill_at}"
        np.testing.assert_array_equal(features, expected[1], err_msg=f"kill before write {kill_at}")
