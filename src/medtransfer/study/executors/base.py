"""What every engine offers the driver (``study.run``), and what it hands back per job."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from medtransfer.study.plan import Job


@dataclass
class Finished:
    job_id: str
    error: str  # "" on success: the failure's one-line reason otherwise
    detail: dict


class Executor(Protocol):
    name: str
    capacity: int  # bundles (``plan.bundles``) in flight at most

    def submit(self, units: list[list[Job]]) -> None: ...

    def wait(self, timeout: float) -> list[Finished]: ...

    def close(self) -> None: ...
