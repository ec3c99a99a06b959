"""One small interface over the two store formats (a Zarr folder, an HDF5 file) and the writer lock.

``cache_schema`` defines what a feature store holds; this module only hides how Zarr and h5py differ (string
arrays, JSON attributes, resizable datasets) and keeps two processes from writing one store at once.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import socket
import time
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from medtransfer.errors import MedtransferError

HDF5_SUFFIXES = {".h5", ".hdf5", ".hdf"}


def strings(values) -> np.ndarray:
    """A string array read back from zarr (numpy StringDType) or h5py, as a plain ``<U`` array."""
    values = np.asarray(values)
    return np.asarray(values.tolist(), dtype=str) if values.size else np.zeros(0, dtype=str)


def store_format(path: str | Path, fmt: str | None = None) -> str:
    """"zarr" or "hdf5": explicit ``fmt`` wins, else a ``.h5``/``.hdf5`` suffix means HDF5."""
    if fmt not in (None, "auto", "zarr", "hdf5"):
        raise MedtransferError(f"unknown store format {fmt!r}; use zarr or hdf5")
    if fmt in ("zarr", "hdf5"):
        return fmt
    path = Path(path)
    if path.suffix.lower() in HDF5_SUFFIXES or (path.is_file() and _is_hdf5(path)):
        return "hdf5"
    return "zarr"


def _is_hdf5(path: Path) -> bool:
    with path.open("rb") as handle:
        return handle.read(8) == b"\x89HDF\r\n\x1a\n"


class _H5Strings:
    """An h5py string dataset that reads back as ``str``."""

    def __init__(self, dataset):
        self._ds = dataset

    shape = property(lambda self: self._ds.shape)
    dtype = property(lambda self: np.dtype(str))

    def __getitem__(self, item):
        return strings(self._ds.asstr()[item])

    def __setitem__(self, item, value):
        self._ds[item] = np.asarray(value, dtype=object)

    def resize(self, shape):
        self._ds.resize(shape)


class Group:
    """One group of a store, the same for Zarr and HDF5: arrays by name, JSON-able attributes.

    ``owner``: the ``Store`` it belongs to; the handle is then looked up through it on every use (an HDF5
    store reopens its working copy after each checkpoint)."""

    def __init__(self, handle, fmt: str, key: str, store_path: Path | None = None, owner: Store | None = None):
        self._handle = handle
        self.fmt = fmt
        self.key = key
        self.store_path = store_path
        self.owner = owner

    @property
    def _h(self):
        return self.owner._root[self.key] if self.owner is not None else self._handle

    @property
    def attrs(self) -> dict:
        if self.fmt == "zarr":
            return dict(self._h.attrs)
        return {k: json.loads(v) for k, v in self._h.attrs.items()}

    def update_attrs(self, values: dict) -> None:
        if self.fmt == "zarr":
            self._h.attrs.update(values)
        else:
            for k, v in values.items():
                self._h.attrs[k] = json.dumps(v)

    def __contains__(self, name: str) -> bool:
        return name in self._h

    def array_names(self) -> list[str]:
        if self.fmt == "zarr":
            return sorted(self._h.array_keys())
        return sorted(self._h)

    def __getitem__(self, name: str):
        array = self._h[name]
        if self.fmt == "hdf5" and array.dtype.kind == "O":
            return _H5Strings(array)
        return array

    def create_array(self, name: str, shape: tuple, chunks: tuple, dtype) -> object:
        if self.fmt == "zarr":
            fill = "" if dtype is str else (False if dtype == "bool" else 0)
            return self._h.create_array(name, shape=shape, chunks=chunks, dtype=dtype, fill_value=fill)
        import h5py

        h5_dtype = h5py.string_dtype() if dtype is str else dtype
        maxshape = (None, *shape[1:])
        self._h.create_dataset(name, shape=shape, maxshape=maxshape, chunks=chunks, dtype=h5_dtype)
        return self[name]

    def nbytes_stored(self) -> int:
        if self.fmt == "zarr":
            return sum(int(self._h[name].nbytes_stored()) for name in self._h.array_keys())
        return sum(int(self._h[name].id.get_storage_size()) for name in self._h)

    def flush(self) -> None:
        if self.fmt == "hdf5":
            self._h.file.flush()

    def checkpoint(self) -> None:
        """After a commit: make it durable where the format needs a step for that (HDF5's working copy)."""
        if self.owner is not None:
            self.owner.checkpoint()


class Store:
    """An open feature store (Zarr folder or HDF5 file) whose schema has been checked.

    HDF5 is not safe against a kill while it is written in place (a torn write leaves e.g. "bad heap index" and
    an unreadable file; https://docs.hdfgroup.org/hdf5/develop/_s_w_m_r_t_n.html: only SWMR appends are
    crash-tolerant). So a writable HDF5 store works on a copy, ``<store>.writing``, that replaces the store
    (``os.replace``, atomic) at checkpoints and on close: a kill leaves the store as of the last checkpoint. A
    checkpoint copies the file back, so it is taken only when at least 20x the last copy time has passed (the
    copying costs at most ~5% of a run).
    """

    def __init__(self, path: Path, fmt: str, root, writable: bool, *, work_path: Path | None = None,
                 reopen=None):
        self.path = path
        self.fmt = fmt
        self._root = root
        self.writable = writable
        self._work = work_path
        self._reopen = reopen
        self._copy_seconds = 0.0
        self._last_checkpoint = time.monotonic()

    def checkpoint(self, force: bool = False) -> None:
        if self._work is None:
            return
        if not force and time.monotonic() - self._last_checkpoint < 20 * self._copy_seconds:
            return
        self._root.close()
        _publish(self._work, self.path)
        start = time.monotonic()
        shutil.copy2(self.path, self._work)
        self._copy_seconds = time.monotonic() - start
        self._last_checkpoint = time.monotonic()
        self._root = self._reopen(self._work)

    def group_names(self) -> list[str]:
        if self.fmt == "zarr":
            with warnings.catch_warnings():  # zarr warns of a folder without zarr.json; ``orphan_folders`` names it
                warnings.simplefilter("ignore")
                return sorted(k for k in self._root.group_keys() if not k.startswith("_"))
        return sorted(k for k in self._root if not k.startswith("_"))

    def orphan_folders(self) -> list[str]:
        """Group folders of a Zarr store whose ``zarr.json`` is gone: zarr no longer sees them as groups."""
        if self.fmt != "zarr":
            return []
        listed = set(self.group_names())
        return sorted(p.name for p in self.path.iterdir()
                      if p.is_dir() and not p.name.startswith(("_", ".")) and p.name not in listed)

    def delete_orphan(self, name: str) -> None:
        shutil.rmtree(self.path / name)

    def __contains__(self, key: str) -> bool:
        return key in self._root

    def __getitem__(self, key: str) -> Group:
        if key not in self._root:
            held = ", ".join(self.group_names()) or "no groups"
            raise MedtransferError(f"group {key!r} is not in store {self.path} (it holds: {held})")
        return Group(self._root[key], self.fmt, key, self.path, owner=self)

    def delete_group(self, key: str) -> None:
        del self._root[key]

    def create_group(self, key: str) -> Group:
        if self.fmt == "zarr" and (self.path / key).exists():  # zarr would fail half-way and leave a bad zarr.json
            raise MedtransferError(
                f"store {self.path}: group {key} has a folder but no zarr.json (its metadata was deleted); run "
                f"`medtransfer cache verify {self.path} --repair` to drop it, then extract again"
            )
        self._root.create_group(key)
        return Group(None, self.fmt, key, self.path, owner=self)

    @property
    def attrs(self) -> dict:
        return Group(self._root, self.fmt, "/").attrs

    def close(self) -> None:
        if self.fmt == "hdf5":
            self._root.close()
            if self._work is not None:  # closed cleanly (also after an error): the copy is whole, publish it
                _publish(self._work, self.path)
                self._work = None

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _publish(work: Path, path: Path) -> None:
    """Atomically replace ``path`` by ``work`` (fsynced first, so the rename never exposes a torn file)."""
    with open(work, "rb") as handle:
        os.fsync(handle.fileno())
    os.replace(work, path)
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


def hdf5_work_path(path: Path) -> Path:
    """The working copy a writer of HDF5 store ``path`` writes to (left behind by a kill: discarded)."""
    return path.with_name(path.name + ".writing")


@contextlib.contextmanager
def writer_lock(path: str | Path) -> Iterator[Path]:
    """Hold ``<store>.lock`` (an flock, released by the OS even if the process dies; the pid inside says who).

    A second writer stops at once with a clear error instead of interleaving writes.
    """
    lock_path = Path(str(Path(path)).rstrip("/") + ".lock")
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    handle = open(lock_path, "a+")  # noqa: SIM115  (held for the whole block)
    try:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            raise MedtransferError(
                f"store {path} is being written by {holder} (lock {lock_path}); wait for it to finish, "
                "then run again: finished rows are reused"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()} on {socket.gethostname()}")
        handle.flush()
        yield lock_path
    finally:
        with contextlib.suppress(OSError):
            handle.seek(0)
            handle.truncate()
        handle.close()
