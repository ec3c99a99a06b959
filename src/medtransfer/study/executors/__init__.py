"""Engines that run study jobs: ``local`` (in-process, sequential, the reference), ``ray`` and ``slurm``
(submitit). Each offers ``capacity``, ``submit(bundles)`` and ``wait(timeout)`` (one ``Finished`` per job);
the driver (``study.run``) owns the order, the retries and the bookkeeping, so every engine runs the same job
functions the same way."""

from __future__ import annotations

from medtransfer.errors import MedtransferError
from medtransfer.study.executors.base import Executor, Finished
from medtransfer.study.spec import EXECUTORS, StudySpec

__all__ = ["Executor", "Finished", "make_executor"]


def make_executor(name: str, study: StudySpec, *, address: str | None = None, cluster: str | None = None,
                  log=print) -> Executor:
    """``address``: an existing Ray cluster (``ray://…`` or ``host:port``). ``cluster``: submitit's cluster
    (``slurm``, or ``local`` to run the same job arrays in local subprocesses)."""
    if name == "local":
        from medtransfer.study.executors.local import LocalExecutor

        return LocalExecutor()
    if name == "ray":
        from medtransfer.study.executors.ray import RayExecutor

        return RayExecutor(study, address=address, log=log)
    if name == "slurm":
        from medtransfer.study.executors.slurm import SlurmExecutor

        return SlurmExecutor(study, cluster=cluster, log=log)
    raise MedtransferError(f"unknown executor {name!r}; choose one of {', '.join(EXECUTORS)}")
