"""Folds and few-shot subsets: made once per manifest, read by probe and adapt alike."""

from medtransfer.splits.make import STRATEGIES, SplitSpec, make_splits
from medtransfer.splits.schema import SCHEMA, Fold, SplitsFile, load_splits, save_splits

__all__ = ["SCHEMA", "STRATEGIES", "Fold", "SplitSpec", "SplitsFile", "load_splits", "make_splits", "save_splits"]
