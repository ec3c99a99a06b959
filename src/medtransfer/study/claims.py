"""Leases on study jobs, so that two `study run` processes (or two cluster allocations) never run one job twice.

A claim is ``<results>/.study/claims/<job>.json`` holding the runner's id, host and pid; its mtime is the
heartbeat, renewed by the runner every quarter lease. It is made by writing a private file and hard-linking it
into place (``os.link`` fails when the name exists: atomic on local disks and NFS, unlike ``O_EXCL`` on old NFS
clients or ``flock``). A claim whose heartbeat is older than the lease is stale (its runner was killed or lost
its node): another runner takes it over by renaming it away (only one rename of a name succeeds) and claiming
afresh. Claims are released when a job is finished (done, or failed after its retries).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import socket
import threading
import time
import uuid
from pathlib import Path

CLAIMS_FOLDER = "claims"


def new_runner_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


def claim_file(folder: Path, job_id: str) -> Path:
    """A readable, collision-free file name for a job id (ids hold ``/`` and may hold ``:``)."""
    readable = re.sub(r"[^A-Za-z0-9_.-]+", "_", job_id)[-80:]
    return folder / f"{readable}-{hashlib.sha1(job_id.encode()).hexdigest()[:10]}.json"


def read_claim(path: Path) -> dict | None:
    """The claim's content with its heartbeat (``beat``: mtime), or None when there is none (or it is torn)."""
    try:
        beat = path.stat().st_mtime
        entry = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return {**entry, "beat": beat}


class Claims:
    """The claims one runner holds, with a heartbeat thread (``start``) renewing them."""

    def __init__(self, folder: Path, *, lease_seconds: float, runner: str | None = None) -> None:
        self.folder = folder
        self.lease_seconds = lease_seconds
        self.runner = runner or new_runner_id()
        self.held: dict[str, Path] = {}
        self.lost: list[str] = []  # claims another runner took over from us (we were too slow to beat)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        folder.mkdir(parents=True, exist_ok=True)

    def claim(self, job_id: str) -> bool:
        """Take ``job_id`` unless a live claim of another runner holds it (a stale one is taken over)."""
        path = claim_file(self.folder, job_id)
        with self._lock:
            if job_id in self.held:
                return True
            if self._link(path, job_id):
                self.held[job_id] = path
                return True
            entry = read_claim(path)
            if entry is not None and time.time() - entry["beat"] <= self.lease_seconds:
                return False
            if entry is None and path.exists():  # unreadable for a moment: let its maker finish
                return False
            aside = path.with_name(f".stale-{self.runner.replace(':', '_')}-{path.name}")
            try:
                path.rename(aside)  # only one runner's rename of this name succeeds
            except FileNotFoundError:
                return False
            taken = read_claim(aside)
            if taken is not None and entry is not None and taken.get("runner") != entry.get("runner"):
                # someone re-claimed it between our read and our rename: give it back
                with contextlib.suppress(FileExistsError):
                    os.link(aside, path)
                aside.unlink(missing_ok=True)
                return False
            aside.unlink(missing_ok=True)
            if self._link(path, job_id):
                self.held[job_id] = path
                return True
            return False

    def _link(self, path: Path, job_id: str) -> bool:
        private = path.with_name(f".new-{uuid.uuid4().hex}-{path.name}")
        private.write_text(json.dumps({"job": job_id, "runner": self.runner, "host": socket.gethostname(),
                                       "pid": os.getpid(), "claimed": time.time()}))
        try:
            os.link(private, path)
            return True
        except FileExistsError:
            return False
        finally:
            private.unlink(missing_ok=True)

    def release(self, job_id: str) -> None:
        with self._lock:
            path = self.held.pop(job_id, None)
            if path is not None and (read_claim(path) or {}).get("runner") == self.runner:
                path.unlink(missing_ok=True)

    def release_all(self) -> None:
        for job_id in list(self.held):
            self.release(job_id)

    def beat(self) -> None:
        """Renew every held claim; one another runner has taken over is dropped and recorded in ``lost``."""
        now = time.time()
        with self._lock:
            for job_id, path in list(self.held.items()):
                if (read_claim(path) or {}).get("runner") != self.runner:
                    self.held.pop(job_id)
                    self.lost.append(job_id)
                    continue
                with contextlib.suppress(FileNotFoundError):
                    os.utime(path, (now, now))

    def start(self) -> None:
        def loop() -> None:
            while not self._stop.wait(self.lease_seconds / 4):
                self.beat()

        self._thread = threading.Thread(target=loop, name="study-claims-heartbeat", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.release_all()

    def holder(self, job_id: str) -> str:
        """The runner holding a live claim on ``job_id`` ("" for none, ours included in the answer)."""
        entry = read_claim(claim_file(self.folder, job_id))
        if entry is None or time.time() - entry["beat"] > self.lease_seconds:
            return ""
        return str(entry.get("runner", ""))


def current_claims(folder: Path, lease_seconds: float) -> dict[str, dict]:
    """Job id -> {runner, host, pid, seconds since its heartbeat, stale}: what `study status` shows."""
    out: dict[str, dict] = {}
    if not folder.is_dir():
        return out
    now = time.time()
    for path in sorted(folder.glob("*.json")):
        if path.name.startswith("."):
            continue
        entry = read_claim(path)
        if entry is None:
            continue
        age = now - entry["beat"]
        out[str(entry["job"])] = {"runner": entry.get("runner", ""), "host": entry.get("host", ""),
                                  "pid": entry.get("pid", 0), "heartbeat_age_s": round(age, 1),
                                  "stale": age > lease_seconds}
    return out
