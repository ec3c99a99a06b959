"""The results table shared by probe and adapt: one row per (backbone, method, regime, shots, seed, fold).

Written under an output folder as ``results.parquet`` and ``results.csv`` (the same rows), with the per-sample
test predictions in ``predictions.parquet`` so that every metric can be recomputed. Writing merges into what
is there: rows with the same key are replaced, others kept, so several runs can share one folder.
"""

from __future__ import annotations

import fcntl
import logging
import os
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import pandas as pd

from medtransfer.errors import MedtransferError, first_line
from medtransfer.metrics import METRICS

KEY = ["backbone", "method", "regime", "shots", "seed", "fold", "fraction"]
# Defaults of key columns added after the first tables were written (older tables lack them).
KEY_DEFAULTS = {"fraction": 0.0}
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
    splits: str = ""  # fingerprint of the splits file the task came from (SplitsFile.fingerprint)
    hyperparameters: str = ""  # JSON of what tuning chose, e.g. {"C": 0.1}
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
    with results_lock(out):
        _remove_stale_temporaries(out)
        # read everything before writing anything: an unreadable table refuses the write and changes nothing
        old = _with_key(_read_table(out / RESULTS_FILE))
        earlier = _with_key(_read_table(out / PREDICTIONS_FILE))
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
            _replace(out / PREDICTIONS_FILE, lambda path: merged.to_parquet(path, index=False))
        _replace(out / "results.csv", lambda path: table.to_csv(path, index=False))
        _replace(out / RESULTS_FILE, lambda path: table.to_parquet(path, index=False))
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


def _replace(path: Path, write: Callable[[Path], None]) -> None:
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


def check_results_folder(out: str | Path) -> None:
    """Refuse a results folder whose earlier tables cannot be read, before any work: probe and adapt merge into
    them. Both are read whole: a damaged page in the middle passes a footer check."""
    out = Path(out)
    for name in (RESULTS_FILE, PREDICTIONS_FILE):
        _read_table(out / name)


def _read_table(path: Path) -> pd.DataFrame | None:
    """A results or predictions table, None when absent; a damaged file is one line naming it."""
    if not path.exists():
        return None
    try:
        return pd.read_parquet(path)
    except Exception as exc:  # noqa: BLE001 - pyarrow raises several types for damaged files
        raise _unreadable(path, exc) from None


def _unreadable(path: Path, exc: BaseException) -> MedtransferError:
    return MedtransferError(
        f"{path} cannot be read ({type(exc).__name__}: {first_line(exc, 120, default='no message')}); move it "
        "away (results.csv beside it may still hold the rows) or write to another --out"
    )


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
        drop_keys = set(map(tuple, drop[KEY].itertuples(index=False)))
        keep = [tuple(k) not in drop_keys for k in old[KEY].itertuples(index=False)]
        kept, replaced = old[keep], len(keep) - sum(keep)
    parts = [part for part in (kept, new) if part is not None and not part.empty]
    if not parts:
        return (kept if kept is not None else new), replaced
    merged = pd.concat(parts, ignore_index=True)
    return merged.sort_values(KEY, kind="stable").reset_index(drop=True), replaced


def _with_key(table: pd.DataFrame | None) -> pd.DataFrame | None:
    if table is None:
        return None
    missing = [k for k in KEY_DEFAULTS if k not in table.columns and not table.empty]
    if missing:
        table = table.assign(**{k: KEY_DEFAULTS[k] for k in missing})
    return table


def read_results(folder: str | Path) -> pd.DataFrame:
    path = Path(folder) / RESULTS_FILE
    if not path.is_file():
        raise MedtransferError(f"no results table in {folder} (expected {RESULTS_FILE}); run probe or adapt first")
    return _read_table(path)
