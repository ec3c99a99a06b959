"""The study driver: submits ready jobs to an engine, retries failures, records every outcome, shows progress.

The driver holds no state a kill could lose: done-ness is re-read from the results tables on the next run, and
``<results>/.study/log.jsonl`` (one line per finished or failed job attempt, appended) only explains failures.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from medtransfer.errors import MedtransferError
from medtransfer.study.executors import Finished, make_executor
from medtransfer.study.plan import Job, Plan, build_plan
from medtransfer.study.spec import EXECUTORS, StudySpec

LOG_FILE = "log.jsonl"


@dataclass
class RunSummary:
    executor: str
    n_jobs: int
    n_done_before: int
    ran: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)  # job id -> one-line reason (after every retry)
    skipped: dict[str, str] = field(default_factory=dict)  # job id -> the failed job it depends on
    seconds: float = 0.0


def run_study(study: StudySpec, *, executor: str = "local", retries: int | None = None, address: str | None = None,
              slurm_cluster: str | None = None, redo_failed: bool = False,
              console: Console | None = None) -> RunSummary:
    """Run every job of ``study`` not done yet; input problems are raised before anything runs."""
    console = console or Console(stderr=True)
    if executor not in EXECUTORS:
        raise MedtransferError(f"unknown executor {executor!r}; choose one of {', '.join(EXECUTORS)}")
    study.check_manifests()
    plan = build_plan(study, redo_failed=redo_failed)
    retries = study.retries if retries is None else retries
    summary = RunSummary(executor, len(plan.jobs), len(plan.done))
    pending = plan.pending()
    if not pending:
        console.print(f"study {study.name}: all {len(plan.jobs)} jobs are done")
        return summary
    engine = make_executor(executor, study, address=address, cluster=slurm_cluster, log=console.print)
    start = time.perf_counter()
    try:
        _drive(plan, pending, engine, retries, summary, console)
    finally:
        engine.close()
        _export_results(study, console)
        summary.seconds = time.perf_counter() - start
    return summary


def _export_results(study: StudySpec, console: Console) -> None:
    """Each job wrote its rows as a part file; fold every task's parts and refresh its one-file tables."""
    from medtransfer.results import export_tables, has_results

    for task in study.tasks:
        folder = study.results_path(task.name)
        if has_results(folder) and not export_tables(folder):
            console.print(f"{folder}: another process is compacting it; results.csv is refreshed when it ends")


def _drive(plan: Plan, pending: list[Job], engine, retries: int, summary: RunSummary, console: Console) -> None:
    done = set(plan.done)
    waiting = {job.job_id: job for job in pending}
    running: dict[str, Job] = {}
    attempts: dict[str, int] = {}
    log_path = plan.study.state_path / LOG_FILE
    log_path.parent.mkdir(parents=True, exist_ok=True)
    columns = (TextColumn("[bold]study {task.fields[name]}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
               TextColumn("done {task.fields[ok]} · running {task.fields[running]} · failed {task.fields[failed]}"),
               TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn())
    with Progress(*columns, console=console, transient=False) as progress:
        bar = progress.add_task("study", total=len(pending), name=plan.study.name, ok=0, running=0, failed=0)
        while waiting or running:
            busy = {job.mutex for job in running.values() if job.mutex}
            ready = []
            for job in waiting.values():
                if len(running) + len(ready) >= engine.capacity:
                    break
                if all(d in done for d in job.deps) and not (job.mutex and job.mutex in busy):
                    ready.append(job)
                    if job.mutex:
                        busy.add(job.mutex)
            for job in ready:
                running[job.job_id] = waiting.pop(job.job_id)
            engine.submit(ready)
            if not running:  # the rest wait on failed jobs
                for job_id, job in waiting.items():
                    failed = next(d for d in job.deps if d not in done)
                    summary.skipped[job_id] = failed
                break
            progress.update(bar, running=len(running))
            for finished in engine.wait(timeout=0.5):
                job = running.pop(finished.job_id)
                _record(log_path, finished, attempts.get(job.job_id, 0) + 1)
                if not finished.error:
                    done.add(job.job_id)
                    summary.ran.append(job.job_id)
                    progress.update(bar, advance=1, ok=len(summary.ran))
                    continue
                attempts[job.job_id] = attempts.get(job.job_id, 0) + 1
                if attempts[job.job_id] <= retries:
                    console.print(f"retrying {job.job_id} ({attempts[job.job_id]}/{retries}): {finished.error}")
                    waiting[job.job_id] = job
                else:
                    summary.failed[job.job_id] = finished.error
                    progress.update(bar, advance=1 + _blocked(waiting, job.job_id),
                                    failed=len(summary.failed))
            progress.update(bar, running=len(running))


def _blocked(waiting: dict[str, Job], failed: str) -> int:
    """How many waiting jobs can never run now (they depend, directly or not, on ``failed``)."""
    lost, frontier = set(), {failed}
    while frontier:
        frontier = {j for j, job in waiting.items() if j not in lost and frontier & set(job.deps)}
        lost |= frontier
    return len(lost)


def _record(path: Path, finished: Finished, attempt: int) -> None:
    entry = {"job": finished.job_id, "status": "failed" if finished.error else "done", "error": finished.error,
             "attempt": attempt, "time": time.time(), **{k: v for k, v in finished.detail.items() if k != "kind"}}
    with open(path, "a") as handle:
        handle.write(json.dumps(entry) + "\n")


def last_failures(study: StudySpec) -> dict[str, str]:
    """Job id -> reason, for jobs whose last recorded attempt failed (what `study status` lists)."""
    path = study.state_path / LOG_FILE
    last: dict[str, dict] = {}
    if path.is_file():
        for line in path.read_text().splitlines():
            try:
                entry = json.loads(line)
            except json.JSONDecodeError:  # a line cut by a kill
                continue
            last[entry["job"]] = entry
    return {job: entry["error"] for job, entry in last.items() if entry["status"] == "failed"}
