"""The study driver: submits ready jobs to an engine, retries failures, records every outcome, shows progress.

The driver holds no state a kill could lose: done-ness is re-read from the results tables on the next run, and
``<results>/.study/log.jsonl`` (one line per finished or failed job attempt, appended) only explains failures.
"""

from __future__ import annotations

import itertools
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from medtransfer.errors import MedtransferError
from medtransfer.study.claims import CLAIMS_FOLDER, Claims
from medtransfer.study.executors import Finished, make_executor
from medtransfer.study.plan import Job, Plan, build_plan, bundles
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
    elsewhere: list[str] = field(default_factory=list)  # jobs another runner of this study finished meanwhile
    seconds: float = 0.0


def run_study(study: StudySpec, *, executor: str = "local", retries: int | None = None, address: str | None = None,
              slurm_cluster: str | None = None, redo_failed: bool = False,
              console: Console | None = None) -> RunSummary:
    """Run every job of ``study`` not done yet; input problems are raised before anything runs.

    Several runners may work on one study at once (two shells, a local and a Ray runner, two cluster
    allocations): each claims a job before it runs it (``study.claims``), skips jobs another live runner holds,
    waits for them when its own jobs depend on them, and takes over claims whose runner stopped beating."""
    console = console or Console(stderr=True)
    if executor not in EXECUTORS:
        raise MedtransferError(f"unknown executor {executor!r}; choose one of {', '.join(EXECUTORS)}")
    study.check_manifests()
    log_path = study.state_path / LOG_FILE
    log_offset = log_path.stat().st_size if log_path.is_file() else 0  # before the plan: nothing finished is missed
    plan = build_plan(study, redo_failed=redo_failed)
    retries = study.retries if retries is None else retries
    summary = RunSummary(executor, len(plan.jobs), len(plan.done))
    pending = plan.pending()
    if not pending:
        console.print(f"study {study.name}: all {len(plan.jobs)} jobs are done")
        return summary
    engine = make_executor(executor, study, address=address, cluster=slurm_cluster, log=console.print)
    claims = Claims(study.state_path / CLAIMS_FOLDER, lease_seconds=study.lease_seconds)
    claims.start()
    start = time.perf_counter()
    try:
        _drive(plan, pending, engine, retries, summary, console, claims, log_offset)
    finally:
        engine.close()
        claims.stop()
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


def _drive(plan: Plan, pending: list[Job], engine, retries: int, summary: RunSummary, console: Console,
           claims: Claims, log_offset: int) -> None:
    done = set(plan.done)
    waiting = {job.job_id: job for job in pending}
    running: dict[str, Job] = {}
    unit_left: dict[int, int] = {}  # bundle number -> its jobs not finished yet
    unit_of: dict[str, int] = {}
    attempts: dict[str, int] = {}
    log_path = plan.study.state_path / LOG_FILE
    log_path.parent.mkdir(parents=True, exist_ok=True)
    others = _OtherRunners(log_path, log_offset)
    numbers = itertools.count()
    poll = min(2.0, plan.study.lease_seconds / 4)
    columns = (TextColumn("[bold]study {task.fields[name]}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
               TextColumn("done {task.fields[ok]} · running {task.fields[running]} · elsewhere {task.fields[elsewhere]}"
                          " · failed {task.fields[failed]}"),
               TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn())
    with Progress(*columns, console=console, transient=False) as progress:
        bar = progress.add_task("study", total=len(pending), name=plan.study.name, ok=0, running=0, failed=0,
                                elsewhere=0)
        while waiting or running:
            _take_others(others.finished(claims.runner), waiting, done, summary, progress, bar)
            busy = {job.mutex for job in running.values() if job.mutex}
            ready = _claim_ready(waiting, done, busy, claims, engine.capacity - len(unit_left),
                                 plan.study.bundle_size)
            # a job another runner finished just before we claimed it: its log line is there (written before
            # its claim was released), so it is dropped here rather than run twice
            late = dict(others.finished(claims.runner))
            for job in [job for job in ready if job.job_id in late]:
                ready.remove(job)
                claims.release(job.job_id)
            _take_others(list(late.items()), waiting, done, summary, progress, bar)
            units = bundles(ready, plan.study.bundle_size)
            for unit in units:
                number = next(numbers)
                unit_left[number] = len(unit)
                for job in unit:
                    running[job.job_id] = waiting.pop(job.job_id)
                    unit_of[job.job_id] = number
            engine.submit(units)
            if not running:
                if _waits_on_others(waiting, claims) or any(all(d in done for d in job.deps)
                                                            for job in waiting.values()):
                    time.sleep(poll)  # another runner holds what is left (or what it needs): wait for its log
                    continue
                for job_id, job in waiting.items():  # the rest wait on failed jobs
                    failed = next(d for d in job.deps if d not in done)
                    summary.skipped[job_id] = failed
                break
            progress.update(bar, running=len(running))
            for finished in engine.wait(timeout=0.5):
                job = running.pop(finished.job_id)
                number = unit_of.pop(job.job_id)
                unit_left[number] -= 1
                if not unit_left[number]:
                    del unit_left[number]
                attempt = attempts.get(job.job_id, 0) + 1
                final = not finished.error or attempt > retries
                _record(log_path, finished, attempt, runner=claims.runner, final=final)
                if not finished.error:
                    claims.release(job.job_id)
                    done.add(job.job_id)
                    summary.ran.append(job.job_id)
                    progress.update(bar, advance=1, ok=len(summary.ran))
                    continue
                attempts[job.job_id] = attempt
                if attempt <= retries:
                    console.print(f"retrying {job.job_id} ({attempt}/{retries}): {finished.error}")
                    waiting[job.job_id] = job
                else:
                    claims.release(job.job_id)
                    summary.failed[job.job_id] = finished.error
                    progress.update(bar, advance=1 + _blocked(waiting, job.job_id),
                                    failed=len(summary.failed))
            progress.update(bar, running=len(running))


def _take_others(finished: list[tuple[str, str]], waiting: dict[str, Job], done: set[str], summary: RunSummary,
                 progress: Progress, bar) -> None:
    """Jobs other runners finished (done, or failed for good) leave our queue."""
    for job_id, error in finished:
        if job_id not in waiting:
            continue
        waiting.pop(job_id)
        if error:
            summary.failed[job_id] = error
        else:
            done.add(job_id)
            summary.elsewhere.append(job_id)
        progress.update(bar, advance=1, elsewhere=len(summary.elsewhere))


def _claim_ready(waiting: dict[str, Job], done: set[str], busy: set[str], claims: Claims, slots: int,
                 bundle_size: int) -> list[Job]:
    """Waiting jobs whose dependencies are done, claimed for this runner, filling at most ``slots`` bundles."""
    ready: list[Job] = []
    open_bundles: dict[str, int] = {}  # bundle key -> jobs in its last unit
    units = 0
    for job in waiting.values():
        joins = bool(job.bundle) and 0 < open_bundles.get(job.bundle, 0) < bundle_size
        if not joins and units >= slots:
            if units >= slots and not open_bundles:
                break
            continue
        if not all(d in done for d in job.deps) or (job.mutex and job.mutex in busy):
            continue
        if not claims.claim(job.job_id):
            continue  # another live runner holds it
        ready.append(job)
        if job.mutex:
            busy.add(job.mutex)
        if joins:
            open_bundles[job.bundle] += 1
        else:
            units += 1
            if job.bundle:
                open_bundles[job.bundle] = 1
    return ready


def _waits_on_others(waiting: dict[str, Job], claims: Claims) -> bool:
    """Is some waiting job held by another live runner? (Dependencies still to run are waiting jobs too.)"""
    if not waiting:
        return False
    return any(claims.holder(job_id) not in ("", claims.runner) for job_id in waiting)


class _OtherRunners:
    """Reads the log lines other runners append, to learn which jobs they finished (done or failed for good)."""

    def __init__(self, path: Path, offset: int) -> None:
        self._path = path
        self._offset = offset

    def finished(self, runner: str) -> list[tuple[str, str]]:
        if not self._path.is_file():
            return []
        with open(self._path) as handle:
            handle.seek(self._offset)
            text = handle.read()
        complete = text[: text.rfind("\n") + 1]  # a line being written is read next time
        self._offset += len(complete.encode())
        out = []
        for line in complete.splitlines():
            try:
                entry = json.loads(line)
            except json.JSONDecodeError:
                continue
            if entry.get("runner") != runner and (entry["status"] == "done" or entry.get("final")):
                out.append((entry["job"], entry["error"] if entry["status"] == "failed" else ""))
        return out


def _blocked(waiting: dict[str, Job], failed: str) -> int:
    """How many waiting jobs can never run now (they depend, directly or not, on ``failed``)."""
    lost, frontier = set(), {failed}
    while frontier:
        frontier = {j for j, job in waiting.items() if j not in lost and frontier & set(job.deps)}
        lost |= frontier
    return len(lost)


def _record(path: Path, finished: Finished, attempt: int, *, runner: str = "", final: bool = True) -> None:
    """One line per attempt; ``final``: no retry follows (other runners then count the job finished)."""
    entry = {"job": finished.job_id, "status": "failed" if finished.error else "done", "error": finished.error,
             "attempt": attempt, "final": final, "runner": runner, "time": time.time(),
             **{k: v for k, v in finished.detail.items() if k != "kind"}}
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
