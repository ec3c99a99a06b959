"""The results table shared by probe and adapt: one row per (backbone, method, regime, shots, seed, fold).

Written under an output folder as ``results.parquet`` and ``results.csv`` (the same rows), with the per-sample
test predictions in ``predictions.parquet`` so that every metric can be recomputed. Writing merges into what
is there: rows with the same key are replaced, others kept, so several runs can share one folder.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

import pandas as pd

from medtransfer.errors import MedtransferError

KEY = ["backbone", "method", "regime", "shots", "seed", "fold", "fraction"]
# Defaults of key columns added after the first tables were written (older tables lack them).
KEY_DEFAULTS = {"fraction": 0.0}
RESULTS_FILE = "results.parquet"
PREDICTIONS_FILE = "predictions.parquet"


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
    hyperparameters: str = ""  # JSON of what tuning chose, e.g. {"C": 0.1}
    extra: dict = field(default_factory=dict)  # stage-specific columns (e.g. adapt's trainable_params)

    def as_record(self) -> dict:
        record = asdict(self)
        record.update(record.pop("extra"))
        return record


def write_results(out: str | Path, rows: list[ResultRow], predictions: pd.DataFrame | None = None) -> Path:
    """Merge ``rows`` (and their predictions) into the tables under ``out``; returns the Parquet path."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    table = _merge(out / RESULTS_FILE, pd.DataFrame([r.as_record() for r in rows]))
    table.to_parquet(out / RESULTS_FILE, index=False)
    table.to_csv(out / "results.csv", index=False)
    if predictions is not None and not predictions.empty:
        _merge(out / PREDICTIONS_FILE, predictions).to_parquet(out / PREDICTIONS_FILE, index=False)
    return out / RESULTS_FILE


def _merge(path: Path, new: pd.DataFrame) -> pd.DataFrame:
    new = _with_key(new)
    if not path.exists() or new.empty:
        return new.sort_values(KEY, kind="stable").reset_index(drop=True) if not new.empty else new
    old = _with_key(pd.read_parquet(path))
    new_keys = set(map(tuple, new[KEY].itertuples(index=False)))
    keep = [tuple(k) not in new_keys for k in old[KEY].itertuples(index=False)]
    merged = pd.concat([old[keep], new], ignore_index=True)
    return merged.sort_values(KEY, kind="stable").reset_index(drop=True)


def _with_key(table: pd.DataFrame) -> pd.DataFrame:
    missing = [k for k in KEY_DEFAULTS if k not in table.columns and not table.empty]
    if missing:
        table = table.assign(**{k: KEY_DEFAULTS[k] for k in missing})
    return table


def read_results(folder: str | Path) -> pd.DataFrame:
    path = Path(folder) / RESULTS_FILE
    if not path.is_file():
        raise MedtransferError(f"no results table in {folder} (expected {RESULTS_FILE}); run probe or adapt first")
    return pd.read_parquet(path)
