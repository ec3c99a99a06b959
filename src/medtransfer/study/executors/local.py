"""In-process, one bundle at a time: the reference every other engine is compared with."""

from __future__ import annotations

from medtransfer.study.executors.base import Finished
from medtransfer.study.jobs import run_bundle
from medtransfer.study.plan import Job


class LocalExecutor:
    name = "local"
    capacity = 1  # bundles in flight

    def __init__(self) -> None:
        self._queue: list[list[Job]] = []

    def submit(self, units: list[list[Job]]) -> None:
        self._queue.extend(units)

    def wait(self, timeout: float) -> list[Finished]:
        if not self._queue:
            return []
        unit = self._queue.pop(0)
        return [Finished(job_id, error, detail)
                for job_id, error, detail in run_bundle([(job.job_id, job.params) for job in unit])]

    def close(self) -> None:
        self._queue.clear()
