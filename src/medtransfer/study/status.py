"""What `study plan` and `study status` print, as plain dicts (``--json`` prints them as they are)."""

from __future__ import annotations

from dataclasses import asdict

from medtransfer.study.claims import CLAIMS_FOLDER, current_claims
from medtransfer.study.plan import Plan, build_plan
from medtransfer.study.run import last_failures
from medtransfer.study.spec import StudySpec


def plan_summary(study: StudySpec, *, with_estimate: bool = True, redo_failed: bool = False,
                 device_profile: str | None = None, pack: int = 1, plan: Plan | None = None) -> dict:
    """Jobs per kind (total, done), per task, and the device-hour estimate with its assumptions (cost model:
    no model is built); ``pack``: few-shot runs trained together per model (``adapt --pack``)."""
    plan = plan or build_plan(study, redo_failed=redo_failed)
    by_task: dict[str, dict[str, int]] = {}
    for job in plan.jobs:
        entry = by_task.setdefault(job.task, {"jobs": 0, "done": 0})
        entry["jobs"] += 1
        entry["done"] += job.job_id in plan.done
    summary = {
        "study": study.name, "jobs": len(plan.jobs), "done": len(plan.done), "pending": len(plan.pending()),
        "by_kind": plan.counts(), "by_task": by_task, "planned_from_expected_sizes": sorted(plan.estimated),
    }
    if with_estimate:
        from medtransfer.study.estimate import estimate

        summary["estimate"] = asdict(estimate(plan, profile=device_profile, pack=pack))
    return summary


def status_summary(study: StudySpec) -> dict:
    plan = build_plan(study)  # once: it reads every results folder
    summary = plan_summary(study, with_estimate=False, plan=plan)
    failures = last_failures(study)
    plan_pending = {job.job_id for job in plan.pending()}
    summary["failed"] = {job: reason for job, reason in failures.items() if job in plan_pending}
    # who runs what: the live (and stale, not yet taken over) claims of runners on this study
    summary["running"] = {job: entry for job, entry in current_claims(study.state_path / CLAIMS_FOLDER,
                                                                      study.lease_seconds).items()
                          if job in plan_pending}
    return summary
