"""The manifest: the one table that says which images exist, their labels, patients and centers.

Columns: ``image`` (path, relative to the manifest's folder or absolute) and a label column (``label`` by
default); optional ``patient`` (group id; default one patient per row), ``center`` and ``id`` (default: the
image path as written). Everything downstream refers to samples by ``id``.

Multi-frame files follow the ``frames`` policy (``medtransfer.data.frames``): with ``first`` / ``middle`` /
``all`` the ``image`` column holds frame locators (``<file>#f0003``) for those files, and ``all`` gives each frame
its own row (id ``<id>#f0003``).
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from tqdm.auto import tqdm

from medtransfer.data.frames import FRAME_POLICIES, frame_id, frame_locator, policy_frame, split_locator
from medtransfer.data.images import count_frames
from medtransfer.data.tables import is_missing
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
    *,
    frames: str = "refuse",
) -> Manifest:
    """Read and validate a manifest; every problem is reported with the row it was found in.

    ``frames``: the multi-frame policy (refuse, first, middle, all); any other than ``refuse`` reads the header
    of every DICOM/TIFF/PNG file to count its frames, so it needs the files (``check_files`` is implied).
    """
    if frames not in FRAME_POLICIES:
        raise MedtransferError(f"--frames must be one of {', '.join(FRAME_POLICIES)}, not {frames!r}")
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
    table["image"] = [_resolve(path.parent, p) for p in images]
    labels = raw[label_column]
    empty = labels.isna() | labels.map(is_missing)
    if empty.any():
        row = int(empty.to_numpy().nonzero()[0][0])
        shown = "" if labels.isna().iloc[row] else str(labels.iloc[row]).strip()
        raise MedtransferError(
            f"manifest {path.name}, row {row + 2}: {'missing label ' + repr(shown) if shown else 'empty label'} "
            f"in column {label_column!r} ({int(empty.sum())} row(s) with an empty or missing label in all; NaN, NA, "
            "null and the like mean missing, not a class); remove them or fill them"
        )
    table["label"] = normalized_labels(labels.astype(str).str.strip().tolist())
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

    if check_files or frames != "refuse":
        for row, image in enumerate(table["image"]):
            if not split_locator(image)[0].is_file():
                raise MedtransferError(f"manifest {path.name}, row {row + 2}: image not found: {image}")
    if frames != "refuse":
        table = expand_frames(table, frames)
    return Manifest(path=path, table=table, label_column=label_column, classes=classes)


def expand_frames(table: pd.DataFrame, policy: str) -> pd.DataFrame:
    """Apply a ``first`` / ``middle`` / ``all`` policy to the rows whose file holds several frames.

    Rows that already name a frame (a locator in the manifest) and single-frame files are left as they are, so
    their ids, content fingerprints and stored rows do not change with the policy.
    """
    rows = []
    bar = tqdm(table.to_dict("records"), desc="count frames", unit="img", leave=False, disable=len(table) < 500)
    for record in bar:
        file, frame = split_locator(record["image"])
        n_frames = count_frames(file) if frame is None else 1
        if n_frames <= 1:
            rows.append(record)
        elif policy == "all":
            rows.extend({**record, "id": frame_id(record["id"], k), "image": frame_locator(file, k)}
                        for k in range(n_frames))
        else:
            rows.append({**record, "image": frame_locator(file, policy_frame(policy, n_frames))})
    expanded = pd.DataFrame(rows, columns=table.columns)
    clash = expanded["id"].duplicated()
    if clash.any():
        raise MedtransferError(
            f"--frames {policy}: frame id {expanded['id'][clash].iloc[0]!r} is also an id in the manifest; "
            "rename that row's id"
        )
    return expanded.reset_index(drop=True)


def normalized_labels(labels: list[str]) -> list[str]:
    """Numeric labels written two ways (``1`` and ``1.0``) are one class: when any two spellings name the same
    number, every numeric label is written canonically (``1``, ``0.5``); otherwise labels stay as written (so
    existing manifests keep their fingerprints and class names)."""
    numbers = {label: _number(label) for label in set(labels)}
    spellings: dict[float, set[str]] = {}
    for label, number in numbers.items():
        if number is not None:
            spellings.setdefault(number, set()).add(label)
    if all(len(group) == 1 for group in spellings.values()):
        return labels
    return [label if numbers[label] is None else _canonical(numbers[label]) for label in labels]


def _number(label: str) -> float | None:
    try:
        value = float(label)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def _canonical(value: float) -> str:
    return str(int(value)) if value.is_integer() else repr(value)


def _resolve(folder: Path, image: str) -> str:
    """Absolute path of the file (a frame locator keeps its frame suffix)."""
    candidate = Path(image).expanduser()
    file, frame = split_locator(candidate if candidate.is_absolute() else folder / candidate)
    file = file if candidate.is_absolute() else file.resolve()
    return str(file) if frame is None else frame_locator(file, frame)


def _natural_key(value: str) -> tuple[int, float | str]:
    """Numeric labels sort numerically ("2" < "10"); text labels alphabetically."""
    try:
        return (0, float(value))
    except ValueError:
        return (1, value)
