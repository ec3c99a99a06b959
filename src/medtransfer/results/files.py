"""Writing a file so that a reader or a kill sees the old file or the new one, never a torn one."""

from __future__ import annotations

import errno
import os
import socket
from collections.abc import Callable
from pathlib import Path

import pandas as pd

from medtransfer.errors import MedtransferError, failure_reason

TEMPORARY = ".tmp-"  # prefix of a file being written; renamed over its target once complete
DISK_FULL = (errno.ENOSPC, errno.EDQUOT)
HOST = "".join(c for c in socket.gethostname() if c.isalnum()) or "host"  # no "-": names split on it


def temporary_name(path: Path) -> Path:
    """Beside ``path``, named after this host and process so that a cleaner can tell a dead writer's leftovers."""
    return path.with_name(f"{TEMPORARY}{HOST}-{os.getpid()}-{path.name}")


def write_atomically(path: Path, write: Callable[[Path], None]) -> None:
    """Write ``path`` through a temporary beside it, flushed to disk, then renamed over it (atomic on POSIX).

    A full disk is one line naming the file, and leaves nothing behind (the temporary is removed)."""
    temporary = temporary_name(path)
    try:
        write(temporary)
        with open(temporary, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except OSError as exc:
        if exc.errno in DISK_FULL:
            raise MedtransferError(f"the disk is full: could not write {path} (nothing of it was kept); free "
                                   "space and run again: finished results are kept") from None
        raise
    finally:
        temporary.unlink(missing_ok=True)


def leftover_of_dead_writer(path: Path) -> bool:
    """A temporary whose writer (on this host) is no longer running."""
    name = path.name
    if not name.startswith(TEMPORARY):
        return False
    host, _, rest = name[len(TEMPORARY):].partition("-")
    pid_text = rest.split("-", 1)[0]
    if host != HOST or not pid_text.isdigit():
        return False
    return not _running(int(pid_text))


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def read_table(path: Path, columns: list[str] | None = None) -> pd.DataFrame | None:
    """A Parquet table, None when absent; a damaged file is one line naming it.

    Read through one open handle: pyarrow opens a path more than once (footer, then pages), and a writer's
    rename between the two would pair the old footer with the new file's pages (a torn read). The handle keeps
    the file it opened, old or new, whole."""
    if not path.exists():
        return None
    try:
        with open(path, "rb") as handle:
            if columns is not None:
                import pyarrow.parquet as pq

                present = set(pq.read_schema(handle).names)
                columns = [c for c in columns if c in present]
                handle.seek(0)
            return pd.read_parquet(handle, columns=columns)
    except Exception as exc:  # noqa: BLE001 - pyarrow raises several types for damaged files
        raise unreadable(path, exc) from None


def unreadable(path: Path, exc: BaseException) -> MedtransferError:
    return MedtransferError(
        f"{path} cannot be read ({failure_reason(exc, 120)}); move it "
        "away or write to another --out"
    )
