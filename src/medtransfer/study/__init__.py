"""Studies: a whole benchmark grid declared once (TOML), planned, run on local / Ray / SLURM, resumed, reported.

``load_study`` (spec) -> ``build_plan`` (job graph, what is done) -> ``run_study`` (driver + engine) ->
``medtransfer.report.build_report`` over the study's results folder.
"""

from medtransfer.study.plan import Job, Plan, build_plan
from medtransfer.study.presets import PRESETS, write_preset
from medtransfer.study.run import RunSummary, last_failures, run_study
from medtransfer.study.spec import SCHEMA, StudySpec, load_study

__all__ = ["PRESETS", "SCHEMA", "Job", "Plan", "RunSummary", "StudySpec", "build_plan", "last_failures",
           "load_study", "run_study", "write_preset"]
