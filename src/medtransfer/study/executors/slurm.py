"""SLURM job arrays through submitit (https://github.com/facebookincubator/submitit): each wave of ready jobs
is one array (``executor.batch()``), with partition, time, GPUs, CPUs and memory from the study's ``[slurm]``
table. One array task runs the driver's bundles (``run.bundle_size``, never split) packed up to
``slurm.jobs_per_array_task`` study jobs, in turn (``jobs.run_bundle``), each job failing on its own.
``cluster="local"`` runs the same arrays as local subprocesses (submitit's LocalExecutor), for tests."""

from __future__ import annotations

import re
import sys

from medtransfer.errors import MedtransferError, first_line
from medtransfer.study.executors.base import Finished
from medtransfer.study.jobs import run_bundle
from medtransfer.study.plan import Job
from medtransfer.study.spec import StudySpec


def check_script_values(values: dict[str, str]) -> None:
    """Every value that reaches the generated sbatch script is one line without control characters (the study
    file's loader refuses them already; this guards StudySpecs built in code). submitit writes each ``#SBATCH``
    value, the log paths and the folder of its command through ``shlex.quote`` (submitit/slurm/slurm.py
    ``_as_sbatch_flag``, ``_shlex_join``, ``_submitit_command_str``), so quotes, ``$()`` and ``;`` stay text."""
    for what, value in values.items():
        if re.search(r"[\x00-\x1f\x7f]", value):
            raise MedtransferError(f"{what} {value!r} holds a control character (newline, ...): it would become a "
                                   "line of the sbatch script; refused")


class SlurmExecutor:
    name = "slurm"

    def __init__(self, study: StudySpec, *, cluster: str | None = None, log=print) -> None:
        try:
            import submitit
        except ImportError:
            raise MedtransferError("the slurm executor needs submitit: pip install 'medtransfer[slurm]'") from None
        self._submitit = submitit
        folder = study.state_path / "submitit"
        cluster = cluster or "slurm"
        if cluster == "slurm" and submitit.AutoExecutor.which() != "slurm":
            raise MedtransferError("no SLURM here (sbatch not found); --slurm-cluster local runs the same job "
                                   "arrays as local subprocesses, or use --executor ray / local")
        if cluster not in ("slurm", "local"):
            raise MedtransferError(f"--slurm-cluster must be slurm or local, got {cluster!r}")
        slurm = study.slurm
        parameters = {"timeout_min": slurm.time_minutes, "cpus_per_task": slurm.cpus_per_job,
                      "mem_gb": slurm.mem_gb, "slurm_array_parallelism": slurm.array_parallelism,
                      "name": f"medtransfer-{study.name}"}
        if cluster == "slurm":
            parameters["gpus_per_node"] = slurm.gpus_per_job
            if slurm.partition:
                parameters["slurm_partition"] = slurm.partition
        check_script_values({"study name": parameters["name"], "slurm.partition": slurm.partition,
                             "log folder": str(folder), "python": sys.executable})
        self._executor = submitit.AutoExecutor(folder=str(folder / "%j"), cluster=cluster)
        self._executor.update_parameters(**parameters)
        self._per_task = slurm.jobs_per_array_task
        self.capacity = study.max_parallel or slurm.array_parallelism * self._per_task
        log(f"slurm: submitit {self._executor.cluster} executor, up to {self._per_task} job(s) per array task, "
            f"logs under {folder}")
        self._running: dict = {}  # submitit job -> the study job ids it runs

    def submit(self, units: list[list[Job]]) -> None:
        """One array for this wave; each array task runs whole bundles, ``jobs_per_array_task`` jobs at most
        (a bundle larger than that is one task of its own)."""
        if not units:
            return
        tasks: list[list[Job]] = [[]]
        for unit in units:
            if tasks[-1] and len(tasks[-1]) + len(unit) > self._per_task:
                tasks.append([])
            tasks[-1].extend(unit)
        bundles = [[(job.job_id, job.params) for job in task] for task in tasks]
        with self._executor.batch():
            submitted = [(self._executor.submit(run_bundle, bundle), bundle) for bundle in bundles]
        for handle, bundle in submitted:
            self._running[handle] = [job_id for job_id, _ in bundle]

    def wait(self, timeout: float) -> list[Finished]:
        import time

        deadline = time.monotonic() + timeout
        while True:
            ready = [handle for handle in self._running if handle.done()]
            if ready or time.monotonic() >= deadline or not self._running:
                break
            time.sleep(min(0.2, timeout))
        finished = []
        for handle in ready:
            job_ids = self._running.pop(handle)
            try:
                finished.extend(Finished(job_id, error, detail) for job_id, error, detail in handle.result())
            except Exception as exc:  # noqa: BLE001 - the array task itself died (timeout, memory, node lost)
                reason = _reason(exc)
                finished.extend(Finished(job_id, reason, {}) for job_id in job_ids)
        return finished

    def close(self) -> None:
        for handle in list(self._running):
            handle.cancel(check=False)
        self._running.clear()


def _reason(exc: BaseException) -> str:
    """submitit's FailedJobError holds the job's whole traceback: keep its last line, the error itself."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    errors = [line for line in lines if ("Error" in line or "Exception" in line) and ":" in line]
    return (errors[-1] if errors else first_line(exc))[:300]
