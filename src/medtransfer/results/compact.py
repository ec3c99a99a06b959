"""``medtransfer results compact``: fold a folder's parts into one, and refresh its one-file tables.

Safe while jobs write: only the parts committed when compaction starts are folded (a part written meanwhile
stays, and wins where it is newer, since every row keeps its own write stamp), the folded part is committed
before any part it replaces is removed, and a kill at any point leaves a folder that reads the same (a row
present in the folded part and in a not-yet-removed part is the same row, read once).
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

from medtransfer.errors import MedtransferError
from medtransfer.results import store
from medtransfer.results.files import HOST, leftover_of_dead_writer, write_atomically

LOG = logging.getLogger("medtransfer.results")
LOCK = ".compact.lock"
STALE_SECONDS = 6 * 3600  # a lock of another host's compaction older than this is taken over
ORPHAN_SECONDS = 3600  # predictions without their rows part, from a writer not known to be alive


class CompactionBusy(MedtransferError):
    """Another process is compacting the folder."""


@dataclass
class Compacted:
    folder: str
    parts_before: int
    parts_after: int
    rows: int
    superseded: int  # rows replaced by a newer write of the same key
    predictions: int
    removed_leftovers: int
    seconds: float


def compact_results(out: str | Path, *, export: bool = True) -> Compacted:
    """Fold the committed parts of ``out`` into one part; ``export``: also write results.parquet, results.csv
    and predictions.parquet at the top of ``out`` (the union as one file each, for people and other tools)."""
    start = time.perf_counter()
    out = Path(out)
    if not store.has_results(out):
        raise MedtransferError(f"no results in {out}: nothing to compact")
    store._parts_folder(out)  # a folder of the one-table layout becomes a parts folder first
    with _compaction_lock(out):
        folded = store.committed_parts(out)
        rows, predictions = store._read_union(out, None, with_predictions=True, part_paths=folded,
                                               keep_stamps=True)
        n_read = sum(len(json.loads(p.read_text())["rows"]) for p in folded) if folded else 0
        parts = out / store.PARTS
        if rows is not None and len(folded) > 1:
            stamp = int(rows[store.STAMP].max())
            name = f"{stamp:020d}-{HOST}-{os.getpid()}-compact"
            columns: list[str] = []
            if predictions is not None and not predictions.empty:
                typed = store._typed_predictions(predictions)
                columns = list(typed.columns)
                write_atomically(parts / f"{name}{store.PREDICTIONS_SUFFIX}",
                                 lambda path: typed.to_parquet(path, index=False))
            document = {"schema": store.PART_SCHEMA, store.STAMP: stamp, "predictions": columns,
                        "rows": store._json_records(rows)}
            target = parts / f"{name}{store.ROWS_SUFFIX}"
            write_atomically(target, lambda path: path.write_text(json.dumps(document)))
            for path in folded:  # the folded part is committed: the parts it replaces can go
                if path != target:
                    path.unlink(missing_ok=True)
                    (parts / (path.name[: -len(store.ROWS_SUFFIX)] + store.PREDICTIONS_SUFFIX)).unlink(
                        missing_ok=True)
        removed = _remove_leftovers(out)
        if export and rows is not None:
            _export(out)
    kept = store.committed_parts(out)
    return Compacted(folder=str(out), parts_before=len(folded), parts_after=len(kept),
                     rows=0 if rows is None else len(rows), superseded=n_read - (0 if rows is None else len(rows)),
                     predictions=0 if predictions is None else len(predictions), removed_leftovers=removed,
                     seconds=time.perf_counter() - start)


def export_tables(out: str | Path) -> bool:
    """End of a probe or adapt call: fold its parts and refresh the one-file tables; False (and nothing done) when
    another process is compacting the folder, whose export then includes these rows."""
    try:
        compact_results(out)
    except CompactionBusy as exc:
        LOG.info("%s", exc)
        return False
    return True


def _export(out: Path) -> None:
    """The folder's current union as results.parquet, results.csv and predictions.parquet."""
    rows, predictions = store.read_union(out)
    if predictions is not None:
        write_atomically(out / store.PREDICTIONS_FILE, lambda path: predictions.to_parquet(path, index=False))
    write_atomically(out / store.CSV_FILE, lambda path: rows.to_csv(path, index=False))
    write_atomically(out / store.RESULTS_FILE, lambda path: rows.to_parquet(path, index=False))


def _remove_leftovers(out: Path) -> int:
    """Temporaries of writers that died, and predictions parts whose rows part never came."""
    parts = out / store.PARTS
    removed = 0
    now = time.time()
    committed = {p.name[: -len(store.ROWS_SUFFIX)] for p in store.committed_parts(out)}
    for path in list(parts.iterdir()) + list(out.iterdir()):
        if leftover_of_dead_writer(path):
            if path.is_dir():
                for inner in path.iterdir():
                    inner.unlink(missing_ok=True)
                path.rmdir()
            else:
                path.unlink(missing_ok=True)
            removed += 1
        elif path.name.endswith(store.PREDICTIONS_SUFFIX) and path.parent == parts:
            name = path.name[: -len(store.PREDICTIONS_SUFFIX)]
            if name not in committed and _writer_gone(name, path, now):
                path.unlink(missing_ok=True)
                removed += 1
    return removed


def _writer_gone(name: str, path: Path, now: float) -> bool:
    _, host, pid, *_ = (name.split("-") + ["", "", ""])[:4]
    if host == HOST and pid.isdigit():
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            return False
        return False
    return now - path.stat().st_mtime > ORPHAN_SECONDS


class _compaction_lock:
    """One compaction at a time per folder: an exclusively created lock file (no flock: NFS), naming its owner;
    a lock whose owner died (this host) or that is older than ``STALE_SECONDS`` (another host) is taken over."""

    def __init__(self, out: Path) -> None:
        self.path = out / LOCK

    def __enter__(self) -> None:
        for _ in range(2):
            try:
                with open(self.path, "x") as handle:
                    handle.write(json.dumps({"host": HOST, "pid": os.getpid(), "since": time.time()}))
                return
            except FileExistsError:
                if not self._stale():
                    raise CompactionBusy(f"another compaction of {self.path.parent} is running "
                                           f"({self.path.read_text().strip()}); wait for it") from None
                self.path.unlink(missing_ok=True)
        raise MedtransferError(f"could not take {self.path}")

    def _stale(self) -> bool:
        try:
            owner = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return True
        if owner.get("host") == HOST:
            try:
                os.kill(int(owner.get("pid", 0)), 0)
            except ProcessLookupError:
                return True
            except (PermissionError, ValueError):
                return False
            return False
        return time.time() - float(owner.get("since", 0)) > STALE_SECONDS

    def __exit__(self, *exc) -> None:
        self.path.unlink(missing_ok=True)
