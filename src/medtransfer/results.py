"""The results table shared by probe and adapt: one row per (backbone, method, regime, shots, seed, fold).

Written under an output folder as ``results.parquet`` and ``results.csv`` (the same rows), with the per-sample
test predictions in ``predictions.parquet`` so that every metric can be recomputed. Writing merges into what
is there: rows with the same key are replaced, others kept, so several runs can share one folder.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import pandas as pd

from medtransfer.errors import MedtransferError, first_line
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
RESULTS_FILE = "results.parquet"
PREDICTIONS_FILE = "predictions.parquet"
LOG = logging.getLogger("medtransfer.results")


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


def write_results(out: str | Path, rows: list[ResultRow], predictions: pd.DataFrame | None = None) -> Path:
    """Merge ``rows`` (and their predictions) into the tables under ``out``; returns the Parquet path.

    A folder holds the results of one splits file: rows of another are refused, not mixed into its folds.
    Rows (and predictions) with the key of a new row are replaced, and the replacement is logged.
    Safe under concurrent writers and kills: the read-merge-write holds ``out/.results.lock`` (an flock the OS
    releases when a writer dies), and each file is written beside itself then renamed over the old one, so a
    reader or a kill sees the previous table or the new one, never a torn file, and no writer's rows are lost.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    new = _with_key(pd.DataFrame([r.as_record() for r in rows]))
    predictions = _with_row_keys(predictions, new)
    with results_lock(out):
        _remove_stale_temporaries(out)
        # read everything before writing anything: an unreadable table refuses the write and changes nothing
        old = _with_key(read_table(out / RESULTS_FILE))
        earlier = read_table(out / PREDICTIONS_FILE)
        # predictions written before the key grew take the rest of their key from their rows
        earlier = _with_key(_with_row_keys(earlier, old) if old is not None else earlier)
        if old is not None:
            _check_same_splits(out, old, new)
        table, replaced = _merge(old, new)
        if replaced:
            LOG.warning("%s: replaced %d earlier row(s) with the same key by this run's", out, replaced)
        merged = None
        if old is not None or predictions is not None:
            # stale predictions go with their rows, even when the new row (a failed fit) has none
            merged, _ = _merge(earlier, _with_key(predictions) if predictions is not None else None, drop=new)
        # predictions first: a kill between the renames leaves new predictions beside the old table, whose
        # rows the rerun replaces, never a table row whose predictions are missing
        if merged is not None:
            write_atomically(out / PREDICTIONS_FILE, lambda path: merged.to_parquet(path, index=False))
        write_atomically(out / "results.csv", lambda path: table.to_csv(path, index=False))
        write_atomically(out / RESULTS_FILE, lambda path: table.to_parquet(path, index=False))
    return out / RESULTS_FILE


LOCK_FILE = ".results.lock"
_TEMPORARY = ".tmp-"  # prefix of a file being written; renamed over its target once complete


@contextmanager
def results_lock(out: str | Path) -> Iterator[None]:
    """Hold ``out/.results.lock`` exclusively, waiting for other writers (processes or threads)."""
    lock_path = Path(out) / LOCK_FILE
    with open(lock_path, "a+") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def write_atomically(path: Path, write: Callable[[Path], None]) -> None:
    """Write ``path`` through a temporary beside it, flushed to disk, then renamed over it (atomic on POSIX)."""
    temporary = path.with_name(f"{_TEMPORARY}{os.getpid()}-{path.name}")
    try:
        write(temporary)
        with open(temporary, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


def _remove_stale_temporaries(out: Path) -> None:
    """Temporaries of a writer killed mid-write (under the lock, nobody else is writing one)."""
    for stale in out.glob(f"{_TEMPORARY}*"):
        stale.unlink(missing_ok=True)


def read_table(path: Path, columns: list[str] | None = None) -> pd.DataFrame | None:
    """A results or predictions table, None when absent; a damaged file is one line naming it.

    Read through one open handle: pyarrow opens a path more than once (footer, then pages), and a writer's
    rename between the two would pair the old footer with the new file's pages (a torn read). The handle keeps
    the file it opened, old or new, whole."""
    if not path.exists():
        return None
    try:
        with open(path, "rb") as handle:
            return pd.read_parquet(handle, columns=columns)
    except Exception as exc:  # noqa: BLE001 - pyarrow raises several types for damaged files
        raise _unreadable(path, exc) from None


def _unreadable(path: Path, exc: BaseException) -> MedtransferError:
    return MedtransferError(
        f"{path} cannot be read ({type(exc).__name__}: {first_line(exc, 120, default='no message')}); move it "
        "away (results.csv beside it may still hold the rows) or write to another --out"
    )


def config_hash(settings: Mapping[str, object]) -> str:
    """A short, stable hash of a run's settings (JSON with sorted keys): equal settings, equal hash."""
    text = json.dumps(dict(settings), sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def check_results_folder(out: str | Path, splits_fingerprint: str | None = None) -> pd.DataFrame | None:
    """The rows already in ``out`` (None when there are none), called before any fit so that a wrong ``--out``
    stops at once rather than after hours of work: both tables are read whole (a damaged page in the middle passes
    a footer check; a damaged file is one line naming it), and the rows must come from the same splits file."""
    out = Path(out)
    old = _with_key(read_table(out / RESULTS_FILE))
    read_table(out / PREDICTIONS_FILE)
    if old is not None and splits_fingerprint is not None:
        _check_same_splits(out, old, pd.DataFrame({"splits": [splits_fingerprint]}))
    return old


def _with_row_keys(predictions: pd.DataFrame | None, rows: pd.DataFrame) -> pd.DataFrame | None:
    """Predictions carry the first key's columns; the rest of their row's key is copied from the row."""
    if predictions is None or predictions.empty:
        return predictions
    extra = [k for k in KEY if k not in BASE_KEY and k not in predictions.columns]
    if not extra:
        return predictions
    keys = rows[KEY].drop_duplicates(subset=BASE_KEY, keep="last")
    return predictions.merge(keys, on=BASE_KEY, how="left", validate="many_to_one")


def _check_same_splits(out: Path, old: pd.DataFrame, new: pd.DataFrame) -> None:
    before = set(old.get("splits", pd.Series(dtype=str)).dropna()) - {""}
    now = set(new.get("splits", pd.Series(dtype=str)).dropna()) - {""}
    if before and now and before != now:
        raise MedtransferError(
            f"results folder {out} holds results of another splits file ({', '.join(sorted(before))}; these rows "
            f"come from {', '.join(sorted(now))}): their folds differ, so write them to another --out"
        )


def _merge(old: pd.DataFrame | None, new: pd.DataFrame | None, drop: pd.DataFrame | None = None):
    """``old`` without the rows whose key is in ``drop`` (default ``new``), plus ``new``; and how many went."""
    drop = new if drop is None else drop
    if old is None or old.empty or drop is None or drop.empty:
        kept, replaced = old, 0
    else:
        # vectorised key match (predictions hold a row per test sample: hundreds of thousands of keys);
        # object levels so that a column read back from parquet matches the same values built in memory
        drop_keys = pd.MultiIndex.from_frame(drop[KEY].drop_duplicates().astype(object))
        keep = ~pd.MultiIndex.from_frame(old[KEY].astype(object)).isin(drop_keys)
        kept, replaced = old[keep], int((~keep).sum())
    parts = [part for part in (kept, new) if part is not None and not part.empty]
    if not parts:
        return (kept if kept is not None else new), replaced
    merged = pd.concat(parts, ignore_index=True)
    return merged.sort_values(KEY, kind="stable").reset_index(drop=True), replaced


def _with_key(table: pd.DataFrame | None) -> pd.DataFrame | None:
    if table is None:
        return None
    if table.empty:
        return table
    missing = [k for k in KEY_DEFAULTS if k not in table.columns]
    if missing:
        table = table.assign(**{k: KEY_DEFAULTS[k] for k in missing})
    # rows of stages that leave a key column out (probe rows beside adapt's peft_targets) get its default
    return table.fillna({k: v for k, v in KEY_DEFAULTS.items()})


def read_results(folder: str | Path) -> pd.DataFrame:
    path = Path(folder) / RESULTS_FILE
    if not path.is_file():
        raise MedtransferError(f"no results table in {folder} (expected {RESULTS_FILE}); run probe or adapt first")
    return read_table(path)
