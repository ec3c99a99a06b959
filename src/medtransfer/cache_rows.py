"""Chunked rows: the storage discipline shared by the feature store and the pixel cache.

A group holds rows keyed by an id (the manifest id in the feature store, the image fingerprint in the pixel
cache), string columns written when rows are appended (id, ``image_sha``, ``image_path``), data arrays chunked
by ``chunk_rows`` rows, and one ``chunk_done`` flag per chunk, written *after* that chunk's data: rows of an
unflagged chunk are never read back, so a crash costs at most the chunks in flight.

Extracting is plan, then run. ``plan_rows(index, images)`` decides, from what the group holds and what is
asked for and without touching storage, which rows to re-point (pending rows left by an interrupted run),
append, keep (the done rows of a partial last chunk that the append reopens), copy (same image content as a
valid row) and compute. ``apply_plan`` re-points pending rows and reads the reusable rows back; new rows are
appended only when their data is committed (``commit_chunk``), so an image that cannot be decoded, or a kill,
never leaves rows without data in a chunk that was done. A ``ChunkFiller`` collects finished rows and commits
each pending chunk in order once all its rows are there, and the appended tail also every ``commit_rows`` rows
or ``commit_seconds`` seconds (the work a kill can lose).

Crash safety of the append: data arrays and the fingerprint/path columns grow first, the chunk flags next and
the key column last; ``repair`` (run whenever a writer opens a group) trims every array back to the key
column's length and drops trailing rows that no done chunk covers (they hold no data), so a kill at any write
leaves a group that the next run finishes.
"""

from __future__ import annotations

import contextlib
import errno
import math
import time
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
    files: list[str] = field(default_factory=list)  # the file of every row after the plan (held rows, then new)
    shas: list[str] = field(default_factory=list)  # the content fingerprint of every row after the plan

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
    files = [str(p) for p in index.paths] + [path for _, _, path in append]
    for row, (_, path) in refresh.items():
        files[row] = str(path)
    plan = RowPlan(n_before=n_before, chunk_rows=chunk_rows, refresh=refresh, append=append, keep=keep, copy={},
                   compute=[], pending=pending, clashes=clashes, files=files, shas=shas_after)
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
    """Write the plan's re-pointed rows (``attrs`` set when rows will be appended); returns the rows whose data
    is ready without computing (kept and copied), read before anything changes. New rows are appended by
    ``commit_chunk`` with their data."""
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
        if plan.append and attrs:
            group.update_attrs(attrs)
            group.flush()
    return ready


def append_rows(group: Group, rows: list[tuple[str, str, str]], *, key_array: str, data_arrays: list[str],
                attrs: dict | None = None) -> range:
    """Append rows ((key, sha, path); no data yet) and their not-done chunk flags; returns the new rows.

    When the last chunk is partly filled its flag is cleared first: that chunk is rewritten with its old rows
    and the new ones, so a crash here costs at most that one chunk. The key column grows last (see ``repair``).
    """
    chunk_rows = int(group.attrs["chunk_rows"])
    n_old = group[key_array].shape[0]
    n_new = n_old + len(rows)
    if not rows:
        return range(n_old, n_old)
    flags = group["chunk_done"]
    if n_old % chunk_rows and flags.shape[0] > n_old // chunk_rows:
        flags[n_old // chunk_rows] = False
        group.flush()
    columns = [name for name in (key_array, "image_sha", "image_path") if name != key_array]
    for name in data_arrays:
        array = group[name]
        array.resize((n_new, *array.shape[1:]))
    for name in columns:
        group[name].resize((n_new,))
        group[name][n_old:n_new] = np.asarray([_column(row, name, key_array) for row in rows], dtype=str)
    n_chunks_old = flags.shape[0]
    flags.resize((math.ceil(n_new / chunk_rows),))
    if flags.shape[0] > n_chunks_old:
        flags[n_chunks_old:] = np.zeros(flags.shape[0] - n_chunks_old, dtype=bool)
    group.flush()
    group[key_array].resize((n_new,))
    group[key_array][n_old:n_new] = np.asarray([row[0] for row in rows], dtype=str)
    group.update_attrs({"n": n_new, **(attrs or {})})
    group.flush()
    return range(n_old, n_new)


def _column(row: tuple[str, str, str], name: str, key_array: str) -> str:
    return row[{key_array: 0, "image_sha": 1, "image_path": 2}[name]]


def repair(group: Group, *, key_array: str, data_arrays: list[str]) -> list[str]:
    """Make a group that a kill interrupted consistent again; returns what was done (empty: nothing).

    Every array is trimmed to the rows the key column holds (it grows last) and to the shortest array, rows
    whose key was never written are dropped, and so are trailing rows that no done chunk covers: they hold no
    data (the next run appends them again with their data). Rows in done chunks are never touched.
    """
    chunk_rows = int(group.attrs["chunk_rows"])
    names = [key_array, "image_sha", "image_path", *data_arrays]
    lengths = {name: int(group[name].shape[0]) for name in names}
    n = min(lengths.values())
    keys = strings(group[key_array][:n]) if n else np.zeros(0, dtype=str)
    while n and not keys[n - 1]:
        n -= 1
    done = np.asarray(group["chunk_done"][:], dtype=bool)
    done_upto = min(n, (int(np.flatnonzero(done).max()) + 1) * chunk_rows) if done.any() else 0
    n_chunks = math.ceil(done_upto / chunk_rows)
    actions = []
    if any(length != done_upto for length in lengths.values()) or done.shape[0] != n_chunks:
        actions.append(f"trimmed to {done_upto} rows (was {', '.join(f'{k} {v}' for k, v in lengths.items())}, "
                       f"{done.shape[0]} chunk flags)")
        for name in names:
            array = group[name]
            if array.shape[0] != done_upto:
                array.resize((done_upto, *array.shape[1:]))
        group["chunk_done"].resize((n_chunks,))
        group.update_attrs({"n": done_upto})
        group.flush()
    return actions


def store_rows(group: Group, name: str, start: int, values: np.ndarray) -> None:
    group[name][start : start + len(values)] = values


def commit_chunk(group: Group, chunk: int, arrays: dict[str, np.ndarray],
                 write: Callable[[Group, str, int, np.ndarray], None] = store_rows, *,
                 plan: RowPlan | None = None, key_array: str = "sample_id") -> None:
    """Write one chunk's rows (all of them, or the first ones of the appended tail) of every data array, then
    flag it done (the flag is the commit). Rows of ``plan.append`` that the chunk reaches are appended first."""
    chunk_rows = int(group.attrs["chunk_rows"])
    start = chunk * chunk_rows
    stop = start + len(next(iter(arrays.values())))
    with storage_errors(group.store_path):
        n = group[key_array].shape[0]
        if stop > n:
            if plan is None:
                raise MedtransferError(f"internal error: chunk {chunk} reaches past the {n} rows of {group.key}")
            new = plan.append[n - plan.n_before: stop - plan.n_before]
            append_rows(group, new, key_array=key_array, data_arrays=list(arrays))
        for name, values in arrays.items():
            write(group, name, start, values)
        group.flush()
        group["chunk_done"][chunk] = True
        group.flush()
        group.checkpoint()


class ChunkFiller:
    """Collects finished rows; commits each pending chunk (in order) as soon as all its rows are there, and the
    ready head of a chunk that appends rows once ``commit_rows`` rows or ``commit_seconds`` have gone by since
    the last commit (bounding what a kill loses when a run is one big chunk)."""

    def __init__(self, plan: RowPlan, ready: dict[int, Row], commit: Callable[[int, dict[str, np.ndarray]], None],
                 *, commit_rows: int | None = None, commit_seconds: float | None = None):
        self.plan = plan
        self.ready = dict(ready)
        self.queue = list(plan.pending)
        self.commit = commit
        self.commit_rows = commit_rows
        self.commit_seconds = commit_seconds
        self.n_stored = plan.n_before  # rows in the group (appended ones included)
        self.since_commit = 0
        self.last_commit = time.monotonic()

    def add(self, row: int, values: Row) -> None:
        self.ready[row] = values
        self.since_commit += 1

    def _due(self) -> bool:
        return bool((self.commit_rows and self.since_commit >= self.commit_rows)
                    or (self.commit_seconds is not None and time.monotonic() - self.last_commit >= self.commit_seconds))

    def _commit(self, chunk: int, rows: range) -> None:
        names = self.ready[rows[0]].keys()
        self.commit(chunk, {name: np.stack([self.ready[r][name] for r in rows]) for name in names})
        self.n_stored = max(self.n_stored, rows.stop)
        self.since_commit = 0
        self.last_commit = time.monotonic()

    def flush(self) -> None:
        while self.queue:
            chunk = self.queue[0]
            rows = self.plan.chunk_range(chunk)
            if all(r in self.ready for r in rows):
                self._commit(chunk, rows)
                for r in rows:
                    del self.ready[r]
                self.queue.pop(0)
                continue
            head = rows.start
            while head < rows.stop and head in self.ready:
                head += 1
            if head > self.n_stored and self._due():  # a partial commit: all held rows plus new ones
                self._commit(chunk, range(rows.start, head))  # rows stay in memory: the chunk is rewritten
            return

    def finish(self, what: str) -> None:
        """Every chunk of the plan must be committed by now."""
        self.flush()
        if self.queue:
            raise MedtransferError(f"internal error: chunks {self.queue[:3]} of {what} were left unwritten")
