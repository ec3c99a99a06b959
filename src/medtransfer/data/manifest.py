"""The manifest: the one table that says which images exist, their labels, patients and centers.

Columns: ``image`` (path, relative to the manifest's folder or absolute) and a label column (``label`` by
default); optional ``patient`` (group id; default one patient per row), ``center`` and ``id`` (default: the
image path as written). Everything downstream refers to samples by ``id``.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from medtransfer.errors import MedtransferError

REQUIRED_COLUMNS = ("image",)


@dataclass(frozen=True)
class Manifest:
    """A validated manifest: ``table`` has columns id, image (absolute), label, patient, center."""

    path: Path
    table: pd.DataFrame
    label_column: str
    classes: tuple[str, ...]

    @property
    def ids(self) -> list[str]:
        return self.table["id"].tolist()

    @property
    def labels(self) -> list[int]:
        """Class indices into ``classes`` (sorted class names; for binary tasks the second is positive)."""
        return self.table["label_index"].tolist()

    @property
    def fingerprint(self) -> str:
        return manifest_fingerprint(self.table, self.label_column)

    def __len__(self) -> int:
        return len(self.table)


def manifest_fingerprint(table: pd.DataFrame, label_column: str) -> str:
    """Hash of what defines a study (ids, labels, patients, centers), not of where the files happen to lie."""
    digest = hashlib.sha256()
    digest.update(f"label_column={label_column}\n".encode())
    for row in table[["id", "label", "patient", "center"]].itertuples(index=False):
        digest.update("\x1f".join(map(str, row)).encode() + b"\n")
    return digest.hexdigest()[:16]


def _read_table(path: Path) -> pd.DataFrame:
    if not path.exists():
        raise MedtransferError(f"manifest not found: {path}")
    suffix = path.suffix.lower()
    try:
        if suffix in {".parquet", ".pq"}:
            return pd.read_parquet(path)
        if suffix in {".csv", ".txt"}:
            return pd.read_csv(path, dtype=str, keep_default_na=False)
        if suffix == ".tsv":
            return pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False)
    except Exception as exc:  # pandas raises many types; the user needs the file name and the reason
        raise MedtransferError(f"cannot read manifest {path}: {exc}") from exc
    raise MedtransferError(f"manifest {path}: unsupported format {suffix!r}; use .csv or .parquet")


def load_manifest(
    path: str | Path,
    label_column: str = "label",
    check_files: bool = True,
    min_classes: int = 2,
) -> Manifest:
    """Read and validate a manifest; every problem is reported with the row it was found in."""
    path = Path(path).resolve()
    raw = _read_table(path)
    missing = [c for c in (*REQUIRED_COLUMNS, label_column) if c not in raw.columns]
    if missing:
        raise MedtransferError(
            f"manifest {path.name} lacks column(s) {', '.join(missing)}; it has: {', '.join(map(str, raw.columns))}"
            + (" (pick the label with --label-column)" if label_column not in raw.columns else "")
        )
    if raw.empty:
        raise MedtransferError(f"manifest {path.name} has no rows")

    table = pd.DataFrame()
    images = raw["image"].astype(str)
    table["id"] = raw["id"].astype(str) if "id" in raw.columns else images
    table["image"] = [str(_resolve(path.parent, p)) for p in images]
    labels = raw[label_column]
    empty = labels.isna() | (labels.astype(str).str.strip() == "")
    if empty.any():
        row = int(empty.to_numpy().nonzero()[0][0])
        raise MedtransferError(
            f"manifest {path.name}, row {row + 2}: empty label in column {label_column!r} "
            f"({int(empty.sum())} row(s) in all); remove them or fill them"
        )
    table["label"] = labels.astype(str).str.strip()
    table["patient"] = raw["patient"].astype(str) if "patient" in raw.columns else table["id"]
    table["center"] = raw["center"].astype(str) if "center" in raw.columns else "all"

    duplicated = table["id"].duplicated()
    if duplicated.any():
        row = int(duplicated.to_numpy().nonzero()[0][0])
        raise MedtransferError(
            f"manifest {path.name}, row {row + 2}: duplicate id {table['id'].iloc[row]!r}; ids must be unique"
        )

    classes = tuple(sorted(table["label"].unique(), key=_natural_key))
    if len(classes) < min_classes:
        raise MedtransferError(
            f"manifest {path.name}: label column {label_column!r} has a single class ({classes[0]!r}); "
            "a prediction task needs at least two"
        )
    table["label_index"] = table["label"].map({c: i for i, c in enumerate(classes)}).astype(int)

    if check_files:
        for row, image in enumerate(table["image"]):
            if not Path(image).is_file():
                raise MedtransferError(f"manifest {path.name}, row {row + 2}: image not found: {image}")
    return Manifest(path=path, table=table, label_column=label_column, classes=classes)


def _resolve(folder: Path, image: str) -> Path:
    candidate = Path(image).expanduser()
    return candidate if candidate.is_absolute() else (folder / candidate).resolve()


def _natural_key(value: str) -> tuple[int, float | str]:
    """Numeric labels sort numerically ("2" < "10"); text labels alphabetically."""
    try:
        return (0, float(value))
    except ValueError:
        return (1, value)
