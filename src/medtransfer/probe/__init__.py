"""Stage: fit classifiers on cached features over the splits file's folds (full data, few-shot, fractions)."""

from medtransfer.probe.heads import HEADS, HeadSpec, get_head, register_head, resolve_heads
from medtransfer.probe.run import run_probe
from medtransfer.splits.tasks import tasks_for

__all__ = ["HEADS", "HeadSpec", "get_head", "register_head", "resolve_heads", "run_probe", "tasks_for"]
