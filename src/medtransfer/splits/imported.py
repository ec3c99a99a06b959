"""A splits file from an official or earlier split written in a column (of the manifest or of a side table).

Two forms: ``fold_column`` (each distinct value is one fold's test part; the rest is its training part) and
``split_column`` with train / val / test values (one fold). Where no val rows are given, val is carved from
train grouped by patient, as for made splits. The same rules as ``make_splits`` then hold, checked rather than
constructed: every manifest id has a value, no patient sits in two roles of one fold, and few-shot subsets and
label fractions are drawn from each fold's train part by the same code.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from medtransfer.data.manifest import Manifest
from medtransfer.errors import MedtransferError
from medtransfer.splits.make import SplitSpec, _carve_val, _fewshot, _fractions, assemble, with_positive
from medtransfer.splits.schema import Fold, SplitsFile


@dataclass(frozen=True)
class ImportSpec:
    """Where the split is written. Exactly one of ``fold_column`` and ``split_column``."""

    fold_column: str | None = None
    split_column: str | None = None
    train_values: tuple[str, ...] = ("train",)
    val_values: tuple[str, ...] = ("val", "valid", "validation")
    test_values: tuple[str, ...] = ("test",)
    ignore_values: tuple[str, ...] = field(default_factory=tuple)  # rows with these values are in no part


def import_splits(manifest: Manifest, spec: ImportSpec, sampling: SplitSpec,
                  table: pd.DataFrame | None = None, *, id_column: str = "id") -> SplitsFile:
    """Build a splits file from ``spec``'s column; ``sampling`` gives val_fraction, shots, seeds and fractions.

    ``table`` (optional) holds the column with an ``id_column`` naming manifest ids; by default the manifest's
    own file is read, so any extra column of it can carry the split.
    """
    if (spec.fold_column is None) == (spec.split_column is None):
        raise MedtransferError("give exactly one of --column (a fold per value) and --train-val-test (one fold)")
    column = spec.fold_column or spec.split_column
    manifest = with_positive(manifest, sampling.positive)
    values = _column_values(manifest, column, table, id_column)
    ids = manifest.table["id"].to_numpy()
    labels = manifest.table["label_index"].to_numpy()
    patients = manifest.table["patient"].astype(str).to_numpy()
    assigned = values[~values.isin(spec.ignore_values)]
    used = ~manifest.table["id"].map(values).isin(spec.ignore_values).to_numpy()

    folds: list[Fold] = []
    if spec.fold_column:
        fold_values = sorted(assigned.unique(), key=_natural)
        if len(fold_values) < 2:
            raise MedtransferError(f"column {column!r} has {len(fold_values)} distinct value(s); folds need two")
        for fold_index, value in enumerate(fold_values):
            is_test = (manifest.table["id"].map(values) == value).to_numpy()
            test = np.flatnonzero(is_test & used)
            train_val = np.flatnonzero(~is_test & used)
            _refuse_leaks({"train": train_val, "test": test}, patients, ids, fold_index)
            train, val = _carve_val(train_val, labels, patients, sampling.val_fraction, sampling.seed + fold_index)
            folds.append(Fold(fold=fold_index, train=sorted(ids[train]), val=sorted(ids[val]),
                              test=sorted(ids[test]), held_out_center=None))
    else:
        part = manifest.table["id"].map(values).str.lower()
        known = {v.lower() for v in (*spec.train_values, *spec.val_values, *spec.test_values, *spec.ignore_values)}
        strange = sorted(set(part) - known)
        if strange:
            raise MedtransferError(
                f"column {column!r} has value(s) {', '.join(map(repr, strange[:5]))} that are none of train "
                f"{list(spec.train_values)}, val {list(spec.val_values)}, test {list(spec.test_values)}; "
                "name them with --train / --val / --test"
            )
        index = {name: np.flatnonzero(part.isin({v.lower() for v in vals}).to_numpy())
                 for name, vals in (("train", spec.train_values), ("val", spec.val_values),
                                    ("test", spec.test_values))}
        if not len(index["train"]) or not len(index["test"]):
            raise MedtransferError(f"column {column!r} needs train and test rows; it has "
                                   + ", ".join(f"{k}: {len(v)}" for k, v in index.items()))
        _refuse_leaks(index, patients, ids, 0)
        train, val = index["train"], index["val"]
        if not len(val):
            train, val = _carve_val(train, labels, patients, sampling.val_fraction, sampling.seed)
        folds.append(Fold(fold=0, train=sorted(ids[train]), val=sorted(ids[val]), test=sorted(ids[index["test"]])))
    for fold in folds:
        fold.train, fold.val, fold.test = ([str(i) for i in part] for part in (fold.train, fold.val, fold.test))
        fold.fewshot = _fewshot(fold, manifest, sampling, fold.fold)
        fold.fractions = _fractions(fold, manifest, sampling, fold.fold)
    params = {key: value for key, value in sampling.params().items() if key not in {"n_folds", "test_fraction"}}
    params["imported_from"] = column
    params["form"] = "folds" if spec.fold_column else "train-val-test"
    return assemble(manifest, strategy="imported", params=params, folds=folds)


def _column_values(manifest: Manifest, column: str, table: pd.DataFrame | None, id_column: str) -> pd.Series:
    """id -> value (text) for every manifest id; ids without a value are refused, named."""
    if table is None:
        from medtransfer.data.manifest import _read_table

        raw = _read_table(manifest.path)
        if column not in raw.columns:
            raise MedtransferError(f"manifest {manifest.path.name} has no column {column!r}; it has: "
                                   f"{', '.join(map(str, raw.columns))}")
        values = pd.Series(raw[column].astype(str).str.strip().to_numpy(), index=manifest.table["id"].to_numpy())
    else:
        for needed in (id_column, column):
            if needed not in table.columns:
                raise MedtransferError(f"the split table has no column {needed!r}; it has: "
                                       f"{', '.join(map(str, table.columns))}")
        keyed = table.assign(**{id_column: table[id_column].astype(str).str.strip()})
        duplicated = keyed[id_column][keyed[id_column].duplicated()]
        if len(duplicated):
            raise MedtransferError(f"the split table names id(s) {', '.join(duplicated.unique()[:5])} twice")
        values = keyed.set_index(id_column)[column].astype(str).str.strip()
        values = values.reindex(manifest.table["id"].to_numpy())
    missing = values.index[values.isna() | values.isin(["", "nan", "None"])].tolist()
    if missing:
        raise MedtransferError(
            f"{len(missing)} manifest id(s) have no value in {column!r}: {', '.join(map(str, missing[:10]))}"
            + (" ..." if len(missing) > 10 else "")
        )
    return values


def _refuse_leaks(parts: dict[str, np.ndarray], patients: np.ndarray, ids: np.ndarray, fold_index: int) -> None:
    """A patient in two roles of one fold lets the model see the test patient: refused, with the patient named."""
    roles: dict[str, set[str]] = {}
    for name, index in parts.items():
        for patient in set(patients[index]):
            roles.setdefault(patient, set()).add(name)
    leaking = sorted(p for p, r in roles.items() if len(r) > 1)
    if leaking:
        where = "; ".join(f"{p} in {' and '.join(sorted(roles[p]))}" for p in leaking[:5])
        raise MedtransferError(
            f"fold {fold_index}: {len(leaking)} patient(s) in more than one part ({where}"
            + (" ..." if len(leaking) > 5 else "") + "); a patient's images must stay in one part"
        )


def _natural(value: str) -> tuple[int, float | str]:
    try:
        return (0, float(value))
    except ValueError:
        return (1, value)
