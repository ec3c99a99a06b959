"""Ray tasks with resource requests: ``num_cpus`` / ``num_gpus`` / ``memory`` per job kind from the study file
(fractional GPUs pack several small PEFT runs on one large GPU); one Ray task runs one bundle. ``address`` joins
an existing cluster; otherwise a local one is started on this machine
(https://docs.ray.io/en/latest/ray-core/api/doc/ray.init.html).

A request larger than the whole cluster would never be scheduled (Ray queues such a task for good and says so
only in ``raylet.out``), so requests are capped to the cluster's totals with one message each; a bundle that
still has not started after ``UNSCHEDULED_WARN_SECONDS`` while the cluster sits idle is reported.
"""

from __future__ import annotations

import os
import time

from medtransfer.errors import MedtransferError, failure_reason
from medtransfer.study.executors.base import Finished
from medtransfer.study.jobs import run_bundle
from medtransfer.study.plan import Job
from medtransfer.study.spec import Resources, StudySpec

UNSCHEDULED_WARN_SECONDS = 60.0
GIB = 1024**3


def _run_in_worker(items: list[tuple[str, dict]], threads: int) -> list[tuple[str, str, dict]]:
    import torch

    torch.set_num_threads(max(1, threads))  # a worker owns the CPUs it asked for, not the whole machine
    return run_bundle(items)


def capped_requests(resources: dict[str, Resources], cluster: dict[str, float], log) -> dict[str, dict]:
    """Ray options per job kind, each request at most what the whole cluster has (with one line per cap)."""
    total_cpus, total_gpus = float(cluster.get("CPU", 1)), float(cluster.get("GPU", 0))
    total_memory_gb = float(cluster.get("memory", 0)) / GIB
    if not total_gpus and any(r.gpus for r in resources.values()):
        log("ray: the cluster has no GPUs; GPU requests of resources.* are dropped, jobs run on CPUs")
    out = {}
    for kind, wanted in resources.items():
        cpus = min(wanted.cpus, total_cpus)
        if cpus < wanted.cpus:
            log(f"ray: resources.{kind}.cpus = {wanted.cpus:g} but the cluster has {total_cpus:g} CPUs: "
                f"asking for {cpus:g}")
        options = {"num_cpus": cpus, "num_gpus": min(wanted.gpus, total_gpus) if total_gpus else 0}
        if wanted.memory_gb:
            memory_gb = min(wanted.memory_gb, total_memory_gb) if total_memory_gb else wanted.memory_gb
            if memory_gb < wanted.memory_gb:
                log(f"ray: resources.{kind}.memory_gb = {wanted.memory_gb:g} but the cluster has "
                    f"{total_memory_gb:.1f} GiB: asking for {memory_gb:.1f}")
            options["memory"] = int(memory_gb * GIB)
        out[kind] = options
    return out


class RayExecutor:
    name = "ray"

    def __init__(self, study: StudySpec, *, address: str | None = None, log=print) -> None:
        try:
            import ray
        except ImportError:
            raise MedtransferError("the ray executor needs Ray: pip install 'medtransfer[ray]'") from None
        self._ray = ray
        self._log = log
        self._owns_session = not ray.is_initialized()  # a session the caller opened is the caller's to close
        if self._owns_session:
            # "local" starts a new instance here rather than joining whichever cluster $RAY_ADDRESS or the last
            # `ray start` names (ray 2.60 ray/_private/services.py canonicalize_bootstrap_address: "local" -> None,
            # "start a local Ray instance"; https://docs.ray.io/en/latest/ray-core/starting-ray.html)
            options = {"address": address} if address else {"address": "local", "num_cpus": os.cpu_count() or 1}
            # workers inherit this process's environment (PYTHONPATH for plugins) on a local cluster
            ray.init(**options, include_dashboard=False, log_to_driver=False, configure_logging=False)
        cluster = ray.cluster_resources()
        self._requests = capped_requests(study.resources, cluster, log)
        cpus = float(cluster.get("CPU", 1))
        smallest = min(request["num_cpus"] for request in self._requests.values())
        self.capacity = study.max_parallel or max(1, int(cpus // smallest))
        self._remote = ray.remote(_run_in_worker)
        self._running: dict = {}  # ref -> (job ids, submitted at)
        self._last_finish = time.monotonic()
        self._warned = False

    def submit(self, units: list[list[Job]]) -> None:
        for unit in units:
            # a bundle is one kind; retries are the driver's, so that every failure is recorded
            options = {**self._requests[unit[0].kind], "max_retries": 0}
            items = [(job.job_id, job.params) for job in unit]
            ref = self._remote.options(**options).remote(items, max(1, int(options["num_cpus"])))
            self._running[ref] = [job.job_id for job in unit]

    def wait(self, timeout: float) -> list[Finished]:
        if not self._running:
            return []
        ready, _ = self._ray.wait(list(self._running), num_returns=len(self._running), timeout=timeout)
        finished = []
        for ref in ready:
            job_ids = self._running.pop(ref)
            try:
                finished.extend(Finished(job_id, error, detail) for job_id, error, detail in self._ray.get(ref))
            except self._ray.exceptions.RayTaskError as exc:
                cause = exc.cause if getattr(exc, "cause", None) is not None else exc
                finished.extend(Finished(job_id, failure_reason(cause), {}) for job_id in job_ids)
            except Exception as exc:  # noqa: BLE001 - a worker that died: its jobs failed, the study goes on
                finished.extend(Finished(job_id, failure_reason(exc), {}) for job_id in job_ids)
        if finished:
            self._last_finish = time.monotonic()
        else:
            self._warn_if_unscheduled()
        return finished

    def _warn_if_unscheduled(self) -> None:
        """Nothing finished for a while and the cluster uses none of its CPUs: the queued bundles cannot start."""
        if self._warned or time.monotonic() - self._last_finish < UNSCHEDULED_WARN_SECONDS:
            return
        total, free = self._ray.cluster_resources(), self._ray.available_resources()
        if free.get("CPU", 0) >= total.get("CPU", 0) > 0:
            self._warned = True
            self._log(f"ray: {len(self._running)} bundle(s) have waited {UNSCHEDULED_WARN_SECONDS:.0f} s with the "
                      f"cluster idle ({total.get('CPU', 0):g} CPUs, {total.get('GPU', 0):g} GPUs free): their "
                      "resource requests cannot be met; see Ray's raylet.out, or lower resources.* in the study file")

    def close(self) -> None:
        for ref in list(self._running):
            self._ray.cancel(ref, force=True)
        self._running.clear()
        if self._owns_session:
            self._ray.shutdown()
