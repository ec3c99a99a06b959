"""In-process, one job at a time: the reference every other engine is compared with."""

from __future__ import annotations

from medtransfer.study.executors import Finished, failure_reason
from medtransfer.study.jobs import run_job
from medtransfer.study.plan import Job


class LocalExecutor:
    name = "local"
    capacity = 1

    def __init__(self) -> None:
        self._queue: list[Job] = []

    def submit(self, jobs: list[Job]) -> None:
        self._queue.extend(jobs)

    def wait(self, timeout: float) -> list[Finished]:
        if not self._queue:
            return []
        job = self._queue.pop(0)
        try:
            return [Finished(job.job_id, "", run_job(job.params))]
        except Exception as exc:  # noqa: BLE001 - a failing job is recorded and retried, the study goes on
            return [Finished(job.job_id, failure_reason(exc), {})]

    def close(self) -> None:
        self._queue.clear()
