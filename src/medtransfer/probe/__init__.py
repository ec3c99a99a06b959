"""Stage: fit classifiers on cached features over the splits file's folds (full data and few-shot)."""

from medtransfer.probe.heads import HEADS, HeadSpec, get_head, register_head
from medtransfer.probe.run import run_probe, tasks_for

__all__ = ["HEADS", "HeadSpec", "get_head", "register_head", "run_probe", "tasks_for"]
