"""One results row and its key: what a probe fit or an adapt run measured, and under which settings."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields

import pandas as pd

from medtransfer.metrics import METRICS

# What a row measured: the task within the folds, and what was trained on which features. Weights, embedding,
# preprocessing and PEFT target preset are part of it, so probing ``--weights random`` and then a checkpoint into
# one folder keeps both rows rather than replacing one with the other.
KEY = ["backbone", "method", "regime", "shots", "seed", "fold", "fraction", "weights", "embedding", "preprocessing",
       "peft_targets"]
# Defaults of key columns added after the first tables were written (older tables lack them).
KEY_DEFAULTS = {"fraction": 0.0, "weights": "", "embedding": "", "preprocessing": "", "peft_targets": ""}
# The columns of the first key: predictions written before the key grew carry only these.
BASE_KEY = KEY[:7]


@dataclass
class ResultRow:
    backbone: str
    method: str
    regime: str  # "full", "fewshot" or "fraction"
    shots: int  # 0 for the full and fraction regimes
    seed: int
    fold: int
    mcc: float = float("nan")
    pr_auc: float = float("nan")
    roc_auc: float = float("nan")
    balanced_accuracy: float = float("nan")
    f1: float = float("nan")
    sensitivity: float = float("nan")
    specificity: float = float("nan")
    brier: float = float("nan")
    ece: float = float("nan")
    fraction: float = 0.0  # share of the fold's train rows (fraction regime); 0.0 otherwise
    embedding: str = ""  # feature variant probed ("" = the store's default ``features`` array)
    preprocessing: str = ""  # e.g. "standardize", "l2+standardize", "standardize+pca64"
    class_weight: str = ""  # "balanced" or "none"
    threshold: float = float("nan")  # decision threshold on P(class 1) (binary); NaN for argmax (multi-class)
    threshold_rule: str = ""  # "0.5" or "val-mcc" (chosen on the fold's validation rows, never on test)
    mcc_at_05: float = float("nan")  # MCC at threshold 0.5, recorded whatever the rule
    n_train: int = 0
    n_test: int = 0
    fit_seconds: float = 0.0
    status: str = "ok"  # "ok" or "failed"; a failed row says why in ``error``
    error: str = ""
    weights: str = ""
    peft_targets: str = ""  # the PEFT target-module preset adapt wrapped ("" for probes and non-PEFT methods)
    task: str = ""  # the prediction task's name (--task); the report falls back to the results folder's name
    config: str = ""  # hash of every setting that shapes the row (config_hash): a rerun skips a row only if equal
    degenerate: bool = False  # the test predictions are one class for every sample (MCC 0): the fit learnt nothing
    splits: str = ""  # fingerprint of the splits file the task came from (SplitsFile.fingerprint)
    hyperparameters: str = ""  # JSON of what tuning chose, e.g. {"C": 0.1}
    positive: str = ""  # the positive class of a binary task (splits file's classes[1]); "" for multi-class
    repeat: int = 0  # repeated CV (``splits --repeats``): the outer split's redraw the fold belongs to
    trained_on: str = "train"  # "train" or "train+val" (a refit): the report pairs only rows trained alike
    tuning: str = "val"  # where hyperparameters were chosen: "val" (fold's val rows) or "cv" (inner CV on train)
    unit: str = "image"  # what the metrics count: "image", or "patient" (mean probability of a patient's images)
    extra: dict = field(default_factory=dict)  # stage-specific columns (e.g. adapt's trainable_params)

    @classmethod
    def create(cls, *, metrics: Mapping[str, float] | None = None, extra: Mapping[str, object] | None = None,
               **columns: object) -> ResultRow:
        """The one way to build a row: ``metrics`` must be names in ``metrics.METRICS`` and ``columns`` fields of
        the row, so a misspelt or new name is an error here rather than a column silently missing."""
        metrics = dict(metrics or {})
        unknown_metrics = sorted(set(metrics) - set(METRICS))
        if unknown_metrics:
            raise ValueError(f"not metrics of medtransfer.metrics.METRICS: {unknown_metrics}")
        names = {f.name for f in fields(cls)} - {"extra"}
        unknown_columns = sorted(set(columns) - names)
        if unknown_columns:
            raise ValueError(f"not columns of ResultRow: {unknown_columns}; stage-specific columns go in extra")
        clash = sorted(set(extra or {}) & names)
        if clash:
            raise ValueError(f"extra repeats ResultRow columns: {clash}")
        return cls(**columns, **metrics, extra=dict(extra or {}))

    def as_record(self) -> dict:
        record = asdict(self)
        record.update(record.pop("extra"))
        return record


def config_hash(settings: Mapping[str, object]) -> str:
    """A short, stable hash of a run's settings (JSON with sorted keys): equal settings, equal hash."""
    text = json.dumps(dict(settings), sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def with_key(table: pd.DataFrame | None) -> pd.DataFrame | None:
    """``table`` with every key column: those added after the first tables were written take their default."""
    if table is None:
        return None
    if table.empty:
        return table
    missing = [k for k in KEY_DEFAULTS if k not in table.columns]
    if missing:
        table = table.assign(**{k: KEY_DEFAULTS[k] for k in missing})
    # rows of stages that leave a key column out (probe rows beside adapt's peft_targets) get its default
    return table.fillna({k: v for k, v in KEY_DEFAULTS.items()})
