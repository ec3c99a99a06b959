"""Ray tasks with resource requests: ``num_cpus`` / ``num_gpus`` per job kind from the study file (fractional
GPUs pack several small PEFT runs on one large GPU). ``address`` joins an existing cluster; otherwise a local
one is started on this machine (https://docs.ray.io/en/latest/ray-core/api/doc/ray.init.html)."""

from __future__ import annotations

import os

from medtransfer.errors import MedtransferError
from medtransfer.study.executors import Finished, failure_reason
from medtransfer.study.jobs import run_job
from medtransfer.study.plan import Job
from medtransfer.study.spec import StudySpec


def _run_in_worker(params: dict, threads: int) -> dict:
    import torch

    torch.set_num_threads(max(1, threads))  # a worker owns the CPUs it asked for, not the whole machine
    return run_job(params)


class RayExecutor:
    name = "ray"

    def __init__(self, study: StudySpec, *, address: str | None = None, log=print) -> None:
        try:
            import ray
        except ImportError:
            raise MedtransferError("the ray executor needs Ray: pip install 'medtransfer[ray]'") from None
        self._ray = ray
        self._owns_session = not ray.is_initialized()  # a session the caller opened is the caller's to close
        if self._owns_session:
            # "local" starts a new instance here rather than joining whichever cluster $RAY_ADDRESS or the last
            # `ray start` names (ray 2.60 ray/_private/services.py canonicalize_bootstrap_address: "local" -> None,
            # "start a local Ray instance"; https://docs.ray.io/en/latest/ray-core/starting-ray.html)
            options = {"address": address} if address else {"address": "local", "num_cpus": os.cpu_count() or 1}
            # workers inherit this process's environment (PYTHONPATH for plugins) on a local cluster
            ray.init(**options, include_dashboard=False, log_to_driver=False, configure_logging=False)
        cluster = ray.cluster_resources()
        self._has_gpus = cluster.get("GPU", 0) > 0
        if not self._has_gpus and any(r.gpus for r in study.resources.values()):
            log("ray: the cluster has no GPUs; GPU requests of resources.* are dropped, jobs run on CPUs")
        self._resources = study.resources
        cpus = int(cluster.get("CPU", 1))
        smallest = min(r.cpus for r in study.resources.values())
        self.capacity = study.max_parallel or max(1, int(cpus // smallest))
        self._remote = ray.remote(_run_in_worker)
        self._running: dict = {}

    def submit(self, jobs: list[Job]) -> None:
        for job in jobs:
            resources = self._resources[job.kind]
            options = {"num_cpus": resources.cpus, "num_gpus": resources.gpus if self._has_gpus else 0,
                       "max_retries": 0}  # retries are the driver's, so that every failure is recorded
            ref = self._remote.options(**options).remote(job.params, int(resources.cpus))
            self._running[ref] = job.job_id

    def wait(self, timeout: float) -> list[Finished]:
        if not self._running:
            return []
        ready, _ = self._ray.wait(list(self._running), num_returns=len(self._running), timeout=timeout)
        finished = []
        for ref in ready:
            job_id = self._running.pop(ref)
            try:
                finished.append(Finished(job_id, "", self._ray.get(ref)))
            except self._ray.exceptions.RayTaskError as exc:
                cause = exc.cause if getattr(exc, "cause", None) is not None else exc
                finished.append(Finished(job_id, failure_reason(cause), {}))
            except Exception as exc:  # noqa: BLE001 - a worker that died: the job failed, the study goes on
                finished.append(Finished(job_id, failure_reason(exc), {}))
        return finished

    def close(self) -> None:
        for ref in list(self._running):
            self._ray.cancel(ref, force=True)
        self._running.clear()
        if self._owns_session:
            self._ray.shutdown()
