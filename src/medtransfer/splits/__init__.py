"""Folds and few-shot subsets: made once per manifest, read by probe and adapt alike."""

from medtransfer.splits.make import STRATEGIES, SplitSpec, make_splits, positive_warning, with_positive
from medtransfer.splits.schema import SCHEMA, Fold, SplitsFile, load_splits, save_splits
from medtransfer.splits.tasks import Task, tasks_for

__all__ = [
    "SCHEMA", "STRATEGIES", "Fold", "SplitSpec", "SplitsFile", "Task", "load_splits", "make_splits", "positive_warning",
    "save_splits",
    "tasks_for", "with_positive",
]
