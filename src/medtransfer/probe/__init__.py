"""Stage: fit classifiers on cached features over the splits file's folds (full data, few-shot, fractions).

Names load on first use, so that the CLI can read the head registry (``probe.heads``) for its ``--help`` without
importing the feature store and the solver."""

from __future__ import annotations

import importlib

_WHERE = {
    "HEADS": "heads", "HeadSpec": "heads", "get_head": "heads", "register_head": "heads", "resolve_heads": "heads",
    "HeadFit": "context", "ProbeContext": "context", "ProbeOptions": "options", "run_probe": "run",
    "fit_tasks": "fitting",
}
__all__ = [*_WHERE, "tasks_for"]


def __getattr__(name: str):
    if name == "tasks_for":
        from medtransfer.splits.tasks import tasks_for

        return tasks_for
    if name in _WHERE:
        return getattr(importlib.import_module(f"medtransfer.probe.{_WHERE[name]}"), name)
    raise AttributeError(f"module 'medtransfer.probe' has no attribute {name!r}")
