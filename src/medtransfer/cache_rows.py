"""Chunked rows: the storage discipline shared by the feature store and the pixel cache.

A group holds rows keyed by an id (the manifest id in the feature store, the image fingerprint in the pixel
cache), string columns written when rows are appended (id, ``image_sha``, ``image_path``), data arrays chunked
by ``chunk_rows`` rows, and one ``chunk_done`` flag per chunk, written *after* that chunk's data: rows of an
unflagged chunk are never read back, so a crash costs at most the chunks in flight.

Extracting is plan, then run. ``plan_rows(index, images)`` decides, from what the group holds and what is
asked for and without touching storage, which rows to re-point (pending rows left by an interrupted run),
append, keep (the done rows of a partial last chunk that the append reopens), copy (same image content as a
valid row) and compute. ``apply_plan`` writes the row columns inside ``storage_errors``; a ``ChunkFiller``
then collects finished rows and commits each pending chunk in order once all its rows are there.
"""

from __future__ import annotations

import contextlib
import errno
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from medtransfer.cache_store import Group, strings
from medtransfer.errors import MedtransferError

Row = dict[str, np.ndarray]
"""One row's values: data array name -> that row's values."""


@dataclass(frozen=True)
class RowIndex:
    """What a group holds, read once: per row its key, content fingerprint and file; per chunk its flag."""

    keys: np.ndarray
    shas: np.ndarray
    paths: np.ndarray
    done: np.ndarray  # bool, one per chunk
    chunk_rows: int

    @property
    def n(self) -> int:
        return len(self.keys)

    @property
    def valid(self) -> np.ndarray:
        """True for the rows whose chunk is flagged done."""
        if not self.n:
            return np.zeros(0, dtype=bool)
        return np.repeat(np.asarray(self.done, dtype=bool), self.chunk_rows)[: self.n]


@dataclass(frozen=True)
class Images:
    """What is asked for, in manifest order: a key, a content fingerprint and a file per image."""

    keys: list[str]
    shas: list[str]
    paths: list[str]


@dataclass(frozen=True, kw_only=True)
class RowPlan:
    """Everything one run does to a group, decided before anything is written."""

    n_before: int
    chunk_rows: int
    refresh: dict[int, tuple[str, str]]  # pending row -> (sha, path) of the image as it is now
    append: list[tuple[str, str, str]]  # new rows: (key, sha, path)
    keep: list[int]  # done rows of the reopened partial last chunk: read back and written again
    copy: dict[int, int]  # row -> a valid row with the same image content
    compute: list[int]  # rows the model (or the decoder) has to produce
    pending: list[int]  # chunks this run writes, in order
    clashes: list[tuple[str, str]] = field(default_factory=list)  # (key, file) already held for other content

    @property
    def n_after(self) -> int:
        return self.n_before + len(self.append)

    def chunk_range(self, chunk: int) -> range:
        return range(chunk * self.chunk_rows, min((chunk + 1) * self.chunk_rows, self.n_after))


def stale_rows(index: RowIndex, keys: list[str]) -> list[int]:
    """Pending rows of keys not asked for (another manifest's): their files are fingerprinted again before
    planning (they may have changed since), see ``plan_rows(rehashed=...)``."""
    wanted = set(keys)
    return [row for row in np.flatnonzero(~index.valid).tolist() if str(index.keys[row]) not in wanted]


def plan_rows(index: RowIndex, images: Images, *, rehashed: dict[int, str] | None = None) -> RowPlan:
    """Which rows to re-point, append, keep, copy and compute so that every image of ``images`` has a valid
    row with its current content; pure (``rehashed``: fresh fingerprints of ``stale_rows``' files).

    An id whose valid row holds other content gets a new row (the last valid row of an id wins); a pending row
    of an id is re-pointed at the image as it is now. Rows only grow.
    """
    valid = index.valid
    stored_shas = [str(s) for s in index.shas]
    latest = {str(key): row for row, key in enumerate(index.keys)}
    by_sha: dict[str, int] = {}
    for row in np.flatnonzero(valid).tolist():
        by_sha.setdefault(stored_shas[row], row)
    clashes: list[tuple[str, str]] = []
    append: list[tuple[str, str, str]] = []
    refresh: dict[int, tuple[str, str]] = {}
    appended: set[str] = set()
    for key, sha, path in zip(images.keys, images.shas, images.paths, strict=True):
        row = latest.get(key)
        if row is None or (valid[row] and stored_shas[row] != sha):
            if row is not None and str(index.paths[row]) != str(path):
                clashes.append((key, str(index.paths[row])))
            if key not in appended:
                appended.add(key)
                append.append((key, sha, path))
        elif not valid[row]:
            refresh[row] = (sha, path)
    for row, sha in (rehashed or {}).items():
        refresh[row] = (sha, str(index.paths[row]))
    refresh = {row: value for row, value in refresh.items() if value[0] != stored_shas[row]}
    shas_after = stored_shas + [sha for _, sha, _ in append]
    for row, (sha, _) in refresh.items():
        shas_after[row] = sha
    n_before, chunk_rows = index.n, index.chunk_rows
    done = [bool(flag) for flag in index.done]
    keep: list[int] = []
    if append:
        if n_before % chunk_rows:  # the partial last chunk is reopened: its done rows are kept
            last = n_before // chunk_rows
            if done[last]:
                keep = list(range(last * chunk_rows, n_before))
            done[last] = False
        done += [False] * (math.ceil((n_before + len(append)) / chunk_rows) - len(done))
    pending = [chunk for chunk, flag in enumerate(done) if not flag]
    plan = RowPlan(n_before=n_before, chunk_rows=chunk_rows, refresh=refresh, append=append, keep=keep, copy={},
                   compute=[], pending=pending, clashes=clashes)
    kept = set(keep)
    for chunk in pending:
        for row in plan.chunk_range(chunk):
            if row in kept:
                continue
            if shas_after[row] in by_sha:
                plan.copy[row] = by_sha[shas_after[row]]
            else:
                plan.compute.append(row)
    return plan


# --------------------------------------------------------------------------------------------- applying
@contextlib.contextmanager
def storage_errors(path: Path | None) -> Iterator[None]:
    """A full disk (or any OS error while writing) -> one clear line naming the store; nothing is flagged done."""
    try:
        yield
    except OSError as exc:
        reason = "the disk is full" if exc.errno == errno.ENOSPC else (exc.strerror or str(exc))
        raise MedtransferError(
            f"cannot write to store {path}: {reason}; finished chunks are kept -- free space (or fix the cause) "
            "and run the same command again to resume"
        ) from exc


def read_index(group: Group, key_array: str) -> RowIndex:
    """The group's rows as a ``RowIndex``; ``key_array`` names the column holding each row's key."""
    return RowIndex(
        keys=strings(group[key_array][:]),
        shas=strings(group["image_sha"][:]),
        paths=strings(group["image_path"][:]),
        done=np.asarray(group["chunk_done"][:], dtype=bool),
        chunk_rows=int(group.attrs["chunk_rows"]),
    )


def read_rows(array, rows: list[int]) -> np.ndarray:
    """Rows (ascending, unique) of a zarr array or h5py dataset."""
    if hasattr(array, "get_orthogonal_selection"):
        return np.asarray(array.get_orthogonal_selection((np.asarray(rows, dtype=np.int64),)))
    return np.asarray(array[rows])


def apply_plan(group: Group, plan: RowPlan, *, key_array: str, data_arrays: list[str],
               attrs: dict | None = None) -> dict[int, Row]:
    """Write the plan's row columns (re-pointed rows, appended rows, cleared flags; ``attrs`` set on append);
    returns the rows whose data is ready without computing (kept and copied), read before anything changes."""
    with storage_errors(group.store_path):
        for row, (sha, path) in sorted(plan.refresh.items()):
            group["image_sha"][row] = sha
            group["image_path"][row] = path
        copied = sorted(plan.copy)
        ready: dict[int, Row] = {}
        for rows, sources in ((plan.keep, plan.keep), (copied, [plan.copy[row] for row in copied])):
            if rows:
                unique = sorted(set(sources))
                values = {name: read_rows(group[name], unique) for name in data_arrays}
                position = {source: k for k, source in enumerate(unique)}
                ready.update({row: {name: values[name][position[source]] for name in data_arrays}
                              for row, source in zip(rows, sources, strict=True)})
        append_rows(group, plan.append, key_array=key_array, data_arrays=data_arrays, attrs=attrs)
    return ready


def append_rows(group: Group, rows: list[tuple[str, str, str]], *, key_array: str, data_arrays: list[str],
                attrs: dict | None = None) -> range:
    """Append rows ((key, sha, path); no data yet) and their not-done chunk flags; returns the new rows.

    When the last chunk is partly filled its flag is cleared first: that chunk is rewritten with its old rows
    and the new ones, so a crash here costs at most that one chunk.
    """
    chunk_rows = int(group.attrs["chunk_rows"])
    n_old = group[key_array].shape[0]
    n_new = n_old + len(rows)
    if not rows:
        return range(n_old, n_old)
    flags = group["chunk_done"]
    if n_old % chunk_rows:
        flags[n_old // chunk_rows] = False
    columns = (key_array, "image_sha", "image_path")
    for name in (*columns, *data_arrays):
        array = group[name]
        array.resize((n_new, *array.shape[1:]))
    for position, name in enumerate(columns):
        group[name][n_old:n_new] = np.asarray([row[position] for row in rows], dtype=str)
    n_chunks_old = flags.shape[0]
    flags.resize((math.ceil(n_new / chunk_rows),))
    if flags.shape[0] > n_chunks_old:
        flags[n_chunks_old:] = np.zeros(flags.shape[0] - n_chunks_old, dtype=bool)
    group.update_attrs({"n": n_new, **(attrs or {})})
    group.flush()
    return range(n_old, n_new)


def store_rows(group: Group, name: str, start: int, values: np.ndarray) -> None:
    group[name][start : start + len(values)] = values


def commit_chunk(group: Group, chunk: int, arrays: dict[str, np.ndarray],
                 write: Callable[[Group, str, int, np.ndarray], None] = store_rows) -> None:
    """Write one chunk's rows of every data array, then flag it done (the flag is the commit)."""
    start = chunk * int(group.attrs["chunk_rows"])
    with storage_errors(group.store_path):
        for name, values in arrays.items():
            write(group, name, start, values)
        group.flush()
        group["chunk_done"][chunk] = True
        group.flush()


class ChunkFiller:
    """Collects finished rows; commits each pending chunk (in order) as soon as all its rows are there."""

    def __init__(self, plan: RowPlan, ready: dict[int, Row], commit: Callable[[int, dict[str, np.ndarray]], None]):
        self.plan = plan
        self.ready = dict(ready)
        self.queue = list(plan.pending)
        self.commit = commit

    def add(self, row: int, values: Row) -> None:
        self.ready[row] = values

    def flush(self) -> None:
        while self.queue:
            chunk = self.queue[0]
            rows = self.plan.chunk_range(chunk)
            if any(r not in self.ready for r in rows):
                return
            names = self.ready[rows[0]].keys()
            self.commit(chunk, {name: np.stack([self.ready[r][name] for r in rows]) for name in names})
            for r in rows:
                del self.ready[r]
            self.queue.pop(0)

    def finish(self, what: str) -> None:
        """Every chunk of the plan must be committed by now."""
        self.flush()
        if self.queue:
            raise MedtransferError(f"internal error: chunks {self.queue[:3]} of {what} were left unwritten")
