"""The results folder as a set of part files: a write adds its own part, a read takes the union.

Layout under a results folder (``--out``)::

    parts/<stamp>-<host>-<pid>-<n>.rows.json         the rows of one write (JSON), with its write stamp
    parts/<stamp>-<host>-<pid>-<n>.predictions.parquet  their test predictions (one row per test sample)
    results.parquet, results.csv, predictions.parquet    the union as one file each (``compact``), for people
                                                           and tools that read one table
    .splits                                           the splits fingerprint the folder's rows come from

A write never reads, rewrites or locks what others wrote, so its cost does not grow with the folder: it writes
its predictions part, then its rows part, each beside itself and renamed into place (the rows part is the
commit: predictions without one are a killed write's and are ignored). A reader takes every committed part;
for a key written more than once the newest write stamp wins, and that write's own predictions go with it.
A folder written before parts existed (``results.parquet`` at the top, no ``parts/``) is read as it is, and
becomes the first part at the first new write.
"""

from __future__ import annotations

import itertools
import json
import logging
import math
import os
import time
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np
import pandas as pd

from medtransfer.errors import MedtransferError
from medtransfer.results.files import HOST, TEMPORARY, read_table, unreadable, write_atomically
from medtransfer.results.rows import BASE_KEY, KEY, ResultRow, with_key

PARTS = "parts"
ROWS_SUFFIX = ".rows.json"
PREDICTIONS_SUFFIX = ".predictions.parquet"
RESULTS_FILE = "results.parquet"
PREDICTIONS_FILE = "predictions.parquet"
CSV_FILE = "results.csv"
SPLITS_MARKER = ".splits"
PART_SCHEMA = "medtransfer.results-part/1"
STAMP = "write_stamp"  # nanoseconds since the epoch at the write: the newest row of a key wins
SOURCE = "_part"  # which part a row was read from (its predictions come from the same part)
LOG = logging.getLogger("medtransfer.results")
_sequence = itertools.count()

# Typed columns of the predictions parts, so that every part reads into one schema (a part whose patient
# column is all missing would otherwise be typed null and clash with the others).
_KEY_TYPES = {"backbone": "string", "method": "string", "regime": "string", "shots": "int64", "seed": "int64",
              "fold": "int64", "fraction": "float64", "weights": "string", "embedding": "string",
              "preprocessing": "string", "peft_targets": "string"}
_PREDICTION_TYPES = {"id": "string", "patient": "string", "label": "int64", "predicted": "int64",
                     "probability": "float64"}


def write_results(out: str | Path, rows: list[ResultRow], predictions: pd.DataFrame | None = None) -> Path:
    """Add ``rows`` (and their test predictions) to the results folder ``out``; returns the rows part's path.

    A folder holds the results of one splits file: rows of another are refused, not mixed into its folds. A
    row whose key is already there supersedes the earlier one (the newest write wins when read). Safe under
    concurrent writers, on any file system that renames atomically (NFS included: no lock is taken), and under
    kills: a killed write leaves no committed part."""
    out = Path(out)
    parts = _parts_folder(out)
    new = with_key(pd.DataFrame([r.as_record() for r in rows]))
    _claim_splits(out, new)
    stamp = time.time_ns()
    name = f"{stamp:020d}-{HOST}-{os.getpid()}-{next(_sequence)}"
    prediction_columns: list[str] = []
    if predictions is not None and not predictions.empty:
        typed = _typed_predictions(_with_row_keys(predictions, new))
        prediction_columns = list(typed.columns)
        write_atomically(parts / f"{name}{PREDICTIONS_SUFFIX}", lambda path: typed.to_parquet(path, index=False))
    document = {"schema": PART_SCHEMA, STAMP: stamp, "predictions": prediction_columns,
                "rows": _json_records(new)}
    path = parts / f"{name}{ROWS_SUFFIX}"
    write_atomically(path, lambda temporary: temporary.write_text(json.dumps(document)))
    return path


def _parts_folder(out: Path) -> Path:
    """``out/parts``, made on the first write; a folder of the older one-table layout becomes its first part."""
    parts = out / PARTS
    if parts.is_dir():
        return parts
    out.mkdir(parents=True, exist_ok=True)
    staging = out / f"{TEMPORARY}{HOST}-{os.getpid()}-{PARTS}"
    staging.mkdir(exist_ok=True)
    legacy = _legacy_union(out)
    if legacy is not None:
        rows, predictions = legacy
        name = f"{0:020d}-{HOST}-{os.getpid()}-legacy"
        columns: list[str] = []
        if predictions is not None and not predictions.empty:
            typed = _typed_predictions(predictions)
            columns = list(typed.columns)
            write_atomically(staging / f"{name}{PREDICTIONS_SUFFIX}", lambda p: typed.to_parquet(p, index=False))
        document = {"schema": PART_SCHEMA, STAMP: 0, "predictions": columns, "rows": _json_records(rows)}
        write_atomically(staging / f"{name}{ROWS_SUFFIX}", lambda p: p.write_text(json.dumps(document)))
    try:
        os.rename(staging, parts)  # atomic: of two first writers, one publishes its parts folder
    except OSError:
        if not parts.is_dir():
            raise
        for leftover in staging.iterdir():
            leftover.unlink()
        staging.rmdir()
    return parts


def _claim_splits(out: Path, new: pd.DataFrame) -> None:
    """The folder's splits fingerprint, set by its first write (``.splits``): rows of another are refused."""
    now = set(new.get("splits", pd.Series(dtype=str)).dropna()) - {""}
    if not now:
        return
    if len(now) > 1:
        raise MedtransferError(f"one write holds rows of several splits files ({', '.join(sorted(now))})")
    marker = out / SPLITS_MARKER
    before = _held_splits(out)
    if before is None:
        try:
            with open(marker, "x") as handle:
                handle.write(next(iter(now)))
            return
        except FileExistsError:
            before = {marker.read_text().strip()}
    _refuse_other_splits(out, before, now)


def _held_splits(out: Path) -> set[str] | None:
    marker = out / SPLITS_MARKER
    if marker.is_file():
        text = marker.read_text().strip()
        if text:
            return {text}
    if not (out / PARTS).is_dir() and (out / RESULTS_FILE).is_file():  # a folder of the one-table layout
        held = read_table(out / RESULTS_FILE, columns=["splits"])
        if held is not None and "splits" in held:
            found = set(held["splits"].dropna().astype(str)) - {""}
            return found or None
    return None


def _refuse_other_splits(out: Path, before: set[str], now: set[str]) -> None:
    if before and now and before != now:
        raise MedtransferError(
            f"results folder {out} holds results of another splits file ({', '.join(sorted(before))}; these rows "
            f"come from {', '.join(sorted(now))}): their folds differ, so write them to another --out"
        )


def _json_records(table: pd.DataFrame) -> list[dict]:
    """Rows as JSON-safe records (numpy scalars to Python, NaN kept: Python's json writes and reads it)."""
    records = table.to_dict(orient="records")
    return [{k: _plain(v) for k, v in record.items()} for record in records]


def _plain(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, float) and math.isnan(value):
        return float("nan")
    return value


def _typed_predictions(predictions: pd.DataFrame) -> pd.DataFrame:
    table = with_key(predictions)
    types = {**_KEY_TYPES, **_PREDICTION_TYPES}
    converted = {}
    for column in table.columns:
        kind = types.get(column, "float64" if column.startswith("probability") else None)
        if kind == "string":
            converted[column] = table[column].map(lambda v: None if _missing(v) else str(v)).astype(object)
        elif kind is not None:
            converted[column] = pd.to_numeric(table[column], errors="coerce").astype(kind if kind == "float64"
                                                                                       else "Int64")
    return table.assign(**converted)


def _missing(value) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _with_row_keys(predictions: pd.DataFrame | None, rows: pd.DataFrame) -> pd.DataFrame | None:
    """Predictions carry the first key's columns; the rest of their row's key is copied from the row."""
    if predictions is None or predictions.empty:
        return predictions
    extra = [k for k in KEY if k not in BASE_KEY and k not in predictions.columns]
    if not extra:
        return predictions
    keys = rows[KEY].drop_duplicates(subset=BASE_KEY, keep="last")
    return predictions.merge(keys, on=BASE_KEY, how="left", validate="many_to_one")


# ---------------------------------------------------------------------------------------------------- reading


@dataclass(frozen=True)
class _Part:
    name: str
    stamp: int
    prediction_columns: tuple[str, ...]
    n_rows: int


def read_rows(out: str | Path, columns: list[str] | None = None) -> pd.DataFrame | None:
    """Every row of the folder (newest per key), or None when it holds none; ``columns``: only those (and the key).

    Every reader of a results folder goes through here (and ``read_predictions``): probe's and adapt's
    skip-finished logic, `study plan` / `study status`, `summary` and the report."""
    rows, _ = _read_union(Path(out), columns, with_predictions=False)
    return rows


def read_predictions(out: str | Path) -> pd.DataFrame | None:
    """The test predictions of the folder's current rows (those of a superseded write are left out)."""
    _, predictions = _read_union(Path(out), None, with_predictions=True)
    return predictions


def read_union(out: str | Path, columns: list[str] | None = None) -> tuple[pd.DataFrame | None,
                                                                               pd.DataFrame | None]:
    """Rows and predictions in one pass over the parts."""
    return _read_union(Path(out), columns, with_predictions=True)


def has_results(out: str | Path) -> bool:
    out = Path(out)
    return (out / PARTS).is_dir() or (out / RESULTS_FILE).is_file()


def committed_parts(out: Path) -> list[Path]:
    """The rows parts of ``out`` (each one a committed write), oldest first."""
    return sorted(p for p in (out / PARTS).glob(f"*{ROWS_SUFFIX}") if not p.name.startswith("."))


def _read_union(out: Path, columns: list[str] | None, *, with_predictions: bool,
                part_paths: list[Path] | None = None, keep_stamps: bool = False):
    parts_folder = out / PARTS
    if not parts_folder.is_dir():
        legacy = _legacy_union(out, columns, with_predictions=with_predictions)
        return legacy if legacy is not None else (None, None)
    parts, frames = [], []
    for path in committed_parts(out) if part_paths is None else part_paths:
        loaded = _load_part(path)
        if loaded is None:
            continue
        part, frame = loaded
        parts.append(part)
        frames.append(frame)
    if not frames:
        return None, None
    rows = _in_column_order(pd.concat(frames, ignore_index=True))
    rows = _check_key_columns(with_key(rows), parts_folder)
    rows = rows.sort_values([STAMP, SOURCE], kind="stable")
    winners = rows.drop_duplicates(subset=KEY, keep="last")
    predictions = _predictions_of(parts_folder, parts, rows, winners) if with_predictions else None
    winners = winners.sort_values(KEY, kind="stable").reset_index(drop=True)
    if columns is not None:
        winners = winners[[c for c in dict.fromkeys([*KEY, *columns]) if c in winners.columns]]
    winners = winners.drop(columns=[SOURCE], errors="ignore")
    return (winners if keep_stamps else winners.drop(columns=[STAMP], errors="ignore")), predictions


ROW_COLUMNS = tuple(f.name for f in fields(ResultRow) if f.name != "extra")


def _in_column_order(rows: pd.DataFrame) -> pd.DataFrame:
    """``ResultRow``'s columns in its order, then the stages' own columns by name: the same table whichever part
    was written first (a resumed study writes its parts in another order than an uninterrupted one)."""
    own = [c for c in ROW_COLUMNS if c in rows.columns]
    return rows[[*own, *sorted(set(rows.columns) - set(own))]]


def _load_part(path: Path) -> tuple[_Part, pd.DataFrame] | None:
    try:
        document = json.loads(path.read_text())
        if document.get("schema") != PART_SCHEMA:
            raise ValueError(f"schema {document.get('schema')!r}")
        records = document["rows"]
    except FileNotFoundError:  # folded into another part by a compaction meanwhile (read there)
        return None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        # a committed part is never torn (it is renamed into place whole): this one was damaged afterwards
        raise unreadable(path, exc) from None
    name = path.name[: -len(ROWS_SUFFIX)]
    part = _Part(name, int(document[STAMP]), tuple(document.get("predictions") or ()), len(records))
    frame = pd.DataFrame.from_records(records)
    if STAMP not in frame.columns:
        frame[STAMP] = part.stamp
    else:  # a compacted part keeps each row's own stamp
        frame[STAMP] = frame[STAMP].fillna(part.stamp).astype("int64")
    frame[SOURCE] = name
    return part, frame


def _check_key_columns(rows: pd.DataFrame, where: Path) -> pd.DataFrame:
    missing = [k for k in BASE_KEY if k not in rows.columns]
    if missing:
        raise MedtransferError(f"results in {where} lack the key column(s) {', '.join(missing)}: not a medtransfer "
                               "results table (move it away or write to another --out)")
    return rows


def _predictions_of(parts_folder: Path, parts: list[_Part], rows: pd.DataFrame,
                    winners: pd.DataFrame) -> pd.DataFrame | None:
    """Each winning row's predictions, from the part that wrote it; a part none of whose rows were superseded is
    read whole (the common case: one read per schema group, no key matching)."""
    import pyarrow.dataset as ds

    won = winners.groupby(SOURCE).size()
    whole: dict[tuple[str, ...], list[str]] = {}
    partial: list[_Part] = []
    for part in parts:
        if not part.prediction_columns or part.name not in won.index:
            continue
        if won[part.name] == part.n_rows:
            whole.setdefault(part.prediction_columns, []).append(
                str(parts_folder / f"{part.name}{PREDICTIONS_SUFFIX}"))
        else:
            partial.append(part)
    frames = []
    for files in whole.values():
        present = [f for f in files if os.path.exists(f)]
        if present:
            try:
                schema = ds.dataset(present[0], format="parquet").schema
                frames.append(ds.dataset(present, format="parquet", schema=schema).to_table().to_pandas())
            except Exception as exc:  # noqa: BLE001 - pyarrow raises several types for damaged files
                raise unreadable(parts_folder, exc) from None
    for part in partial:
        path = parts_folder / f"{part.name}{PREDICTIONS_SUFFIX}"
        table = read_table(path)
        if table is None:
            continue
        keep = winners.loc[winners[SOURCE] == part.name, KEY].astype(object)
        mask = pd.MultiIndex.from_frame(with_key(table)[KEY].astype(object)).isin(pd.MultiIndex.from_frame(keep))
        frames.append(table[mask])
    if not frames:
        return None
    return pd.concat(frames, ignore_index=True)


def _legacy_union(out: Path, columns: list[str] | None = None, *, with_predictions: bool = True):
    """The one-table layout (results.parquet, predictions.parquet at the top of ``out``), or None."""
    wanted = None if columns is None else list(dict.fromkeys([*KEY, *columns]))
    rows = read_table(out / RESULTS_FILE, wanted)
    if rows is None:
        return None
    rows = _check_key_columns(with_key(rows), out / RESULTS_FILE)
    rows = rows.drop(columns=[STAMP], errors="ignore")
    predictions = None
    if with_predictions:
        predictions = read_table(out / PREDICTIONS_FILE)
        if predictions is not None and not predictions.empty:
            # predictions written before the key grew take the rest of their key from their rows
            predictions = with_key(_with_row_keys(predictions, rows))
    return rows, predictions


def check_results_folder(out: str | Path, splits_fingerprint: str | None = None, *,
                         predictions: bool = True) -> pd.DataFrame | None:
    """The rows already in ``out`` (None when there are none), called before any fit so that a wrong ``--out``
    stops at once rather than after hours of work: a damaged part is one line naming it, and the rows must come
    from the same splits file. ``predictions``: read them too (whole), so that damage there also stops the call
    before it writes anything; a study's jobs leave that to the study's own reads (it costs the whole folder)."""
    out = Path(out)
    rows = read_union(out)[0] if predictions else read_rows(out)
    if splits_fingerprint is not None:
        held = _held_splits(out)
        if held is None and rows is not None and "splits" in rows:
            held = set(rows["splits"].dropna().astype(str)) - {""}
        _refuse_other_splits(out, held or set(), {splits_fingerprint})
    return rows


def read_results(folder: str | Path) -> pd.DataFrame:
    """The rows of a results folder; one line when it holds none."""
    rows = read_rows(folder)
    if rows is None:
        raise MedtransferError(f"no results in {folder} (expected {PARTS}/ or {RESULTS_FILE}); run probe or "
                               "adapt first")
    return rows
