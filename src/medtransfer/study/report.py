"""``study report``: the report over a study's results, told what the study planned.

A study may leave runs out on purpose (adapt on ``folds = [0]`` or ``seeds = [0]`` only, as the benchmark
preset does); the report must not list those as missing, so it gets the plan's result keys per task.
"""

from __future__ import annotations

from pathlib import Path

from medtransfer.study.plan import build_plan
from medtransfer.study.spec import StudySpec


def expected_keys(study: StudySpec) -> dict[str, set[tuple]]:
    """Per task, the results keys (``plan.result_key``) that the study's probe and adapt jobs write."""
    expected: dict[str, set[tuple]] = {task.name: set() for task in study.tasks}
    for job in build_plan(study).jobs:
        expected[job.task].update(job.keys)
    return expected


def study_report(study: StudySpec, out: str | Path) -> Path:
    """The HTML report over every task of ``study`` (``out/index.html``); only planned runs count as missing."""
    from medtransfer.report import build_report

    return build_report([study.results], out, expected=expected_keys(study))
