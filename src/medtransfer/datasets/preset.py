"""What a public data set preset declares, and the one routine that turns its raw download into study files.

A preset is data, not code: where the label sheet lies, how images join it, which column is the label and which
raw values are the positive class, where the center comes from, the benchmark's validation strategy and the
figures the benchmark's paper reports. ``prepare_dataset`` runs the from-dicom route with those settings, maps
labels to 0/1, writes ``manifest.csv`` (+ ``manifest.unmatched.csv``) and ``splits.json``, and returns the
figures of the user's download beside the paper's, so a mismatch shows at once.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

import pandas as pd

from medtransfer.data.from_dicom import (
    DicomImport,
    DicomJoin,
    manifest_from_dicom,
    strip_dicom_suffix,
    write_import,
)
from medtransfer.data.manifest import load_manifest
from medtransfer.data.tables import read_label_tables, require_columns
from medtransfer.errors import MedtransferError
from medtransfer.splits import SplitSpec, make_splits, save_splits

LABEL = "__label"  # the mapped 0/1 label column added to the label sheet before joining


@dataclass(frozen=True)
class Figures:
    """N images, N patients, N centers and class balance (negative:positive, percent)."""

    images: int | None
    patients: int | None
    centers: int | None
    balance: str | None


@dataclass(frozen=True)
class DatasetPreset:
    name: str  # the benchmark's task name, e.g. AFC
    dataset: str  # the public data set, e.g. AIforCOVID
    task: str  # what is predicted
    label_files: tuple[str, ...]  # glob patterns under RAW_DIR (recursive) for the clinical sheet(s)
    join: str  # DICOM keyword (PatientID, ...) or "file" (the DICOM file name = the sheet's key)
    labels_key: str  # the sheet's column holding the join key
    label_column: str
    positive: tuple[str, ...]  # raw label values of class 1 (compared case-insensitively)
    negative: tuple[str, ...]  # raw label values of class 0
    strategy: str  # the benchmark's validation: "loco" or "kfold"
    paper: Figures
    center_column: str | None = None
    center: str = "all"  # the center name when the sheet has no center column
    patient_from: str = "PatientID"
    modalities: tuple[str, ...] = ()
    one_image_per_patient: bool = False  # keep each patient's earliest image (by study date, then file)
    stack_label_files: bool = False  # several matching sheets are releases of one sheet
    n_folds: int = 5
    unconfirmed: tuple[str, ...] = ()  # fields no public source confirmed: overridable on the command line


@dataclass(frozen=True)
class PresetOverrides:
    """Command-line replacements for a preset's fields (None keeps the preset's value)."""

    labels: tuple[Path, ...] = ()
    label_column: str | None = None
    labels_key: str | None = None
    join: str | None = None
    center_column: str | None = None
    positive: tuple[str, ...] = ()
    negative: tuple[str, ...] = ()
    one_image_per_patient: bool | None = None

    def apply(self, preset: DatasetPreset) -> DatasetPreset:
        changes = {name: getattr(self, name) for name in
                   ("label_column", "labels_key", "join", "center_column", "one_image_per_patient")
                   if getattr(self, name) is not None}
        if self.positive:
            changes["positive"] = self.positive
        if self.negative:
            changes["negative"] = self.negative
        return replace(preset, **changes)


@dataclass
class PreparedDataset:
    preset: DatasetPreset
    manifest_path: Path
    splits_path: Path
    side_path: Path
    figures: Figures
    imported: DicomImport
    dropped_later_images: int = 0  # images beyond each patient's first (one_image_per_patient)
    notes: list[str] = field(default_factory=list)


def prepare_dataset(preset: DatasetPreset, raw_dir: str | Path, out_dir: str | Path, *,
                    overrides: PresetOverrides = PresetOverrides(), shots: tuple[int, ...] = (),
                    fewshot_seeds: int = 5, seed: int = 0, workers: int | None = None,
                    progress: bool = True) -> PreparedDataset:
    """RAW_DIR (the download as published) -> OUT_DIR/manifest.csv and OUT_DIR/splits.json."""
    preset = overrides.apply(preset)
    raw_dir, out_dir = Path(raw_dir), Path(out_dir)
    if not raw_dir.is_dir():
        raise MedtransferError(f"not a folder: {raw_dir}")
    sheet = _label_sheet(preset, raw_dir, overrides.labels)
    join = DicomJoin(join=preset.join, labels_key=preset.labels_key, label_column=LABEL,
                     center_column=preset.center_column, center_tag="", default_center=preset.center,
                     modalities=preset.modalities, patient_from=preset.patient_from)
    imported = manifest_from_dicom(raw_dir, sheet, join, workers=workers, progress=progress)
    manifest = imported.manifest
    raw_label = sheet.drop_duplicates(preset.labels_key).set_index(preset.labels_key)[preset.label_column]
    keys = [Path(p).stem for p in manifest["image"]] if preset.join == "file" else None
    dropped = 0
    if preset.one_image_per_patient and len(manifest):
        first = manifest.sort_values(["patient", "study_date", "id"], kind="stable").drop_duplicates("patient")
        dropped = len(manifest) - len(first)
        manifest = first.reset_index(drop=True)
        keys = [Path(p).stem for p in manifest["image"]] if preset.join == "file" else None
    imported.manifest = manifest
    if keys is None:
        key_of = _image_keys(imported, preset)
        keys = [key_of[path] for path in manifest["image"]]
    manifest.insert(3, "outcome", [raw_label.get(k, "") for k in keys])
    out_dir.mkdir(parents=True, exist_ok=True)
    manifest_path, side_path = write_import(imported, out_dir / "manifest.csv")

    loaded = load_manifest(manifest_path, check_files=False)
    spec = SplitSpec(strategy=preset.strategy, n_folds=preset.n_folds, shots=shots, fewshot_seeds=fewshot_seeds,
                     seed=seed)
    splits_path = save_splits(make_splits(loaded, spec), out_dir / "splits.json")
    return PreparedDataset(preset=preset, manifest_path=manifest_path, splits_path=splits_path,
                           side_path=side_path, figures=figures_of(manifest), imported=imported,
                           dropped_later_images=dropped)


def figures_of(manifest: pd.DataFrame) -> Figures:
    counts = manifest["label"].astype(str).value_counts()
    total = int(counts.sum())
    negative, positive = int(counts.get("0", 0)), int(counts.get("1", 0))
    balance = f"{round(100 * negative / total)}:{round(100 * positive / total)}" if total else None
    return Figures(images=len(manifest), patients=int(manifest["patient"].nunique()),
                   centers=int(manifest["center"].nunique()), balance=balance)


def _label_sheet(preset: DatasetPreset, raw_dir: Path, given: tuple[Path, ...]) -> pd.DataFrame:
    """The clinical sheet(s), with the label mapped to "1" / "0" in ``LABEL`` (empty where the raw one is)."""
    paths = list(given) or sorted({p for pattern in preset.label_files for p in raw_dir.rglob(pattern)})
    if not paths:
        raise MedtransferError(
            f"{preset.name}: no label sheet matching {', '.join(preset.label_files)} under {raw_dir}; "
            "name it with --labels"
        )
    if len(paths) > 1 and not preset.stack_label_files and not given:
        raise MedtransferError(
            f"{preset.name}: several label sheets under {raw_dir} ({', '.join(p.name for p in paths[:5])}); "
            "name the clinical one with --labels"
        )
    sheet = read_label_tables(paths)
    columns = [preset.labels_key, preset.label_column] + ([preset.center_column] if preset.center_column else [])
    require_columns(sheet, columns, source=f"{preset.name} label sheet {', '.join(p.name for p in paths)}",
                    option="--labels-key / --label-column / --center-column")
    if preset.join == "file":  # a sheet may name the file with its suffix (P_1.dcm) or without (P_1)
        sheet[preset.labels_key] = [strip_dicom_suffix(k) for k in sheet[preset.labels_key]]
    if preset.center_column:  # AIforCOVID writes hospitals in mixed case; the benchmark upper-cases them
        sheet[preset.center_column] = sheet[preset.center_column].str.upper()
    positive = {v.lower() for v in preset.positive}
    negative = {v.lower() for v in preset.negative}
    raw = sheet[preset.label_column].str.strip()
    unknown = sorted(set(raw[(raw != "") & ~raw.str.lower().isin(positive | negative)]))
    if unknown:
        raise MedtransferError(
            f"{preset.name}: column {preset.label_column!r} has value(s) {', '.join(map(repr, unknown[:6]))} that "
            f"are neither positive {list(preset.positive)} nor negative {list(preset.negative)}; "
            "map them with --positive / --negative"
        )
    sheet[LABEL] = ["1" if v.lower() in positive else "0" if v.lower() in negative else "" for v in raw]
    return sheet


def _image_keys(imported: DicomImport, preset: DatasetPreset) -> dict[str, str]:
    images = imported.scan.images
    return dict(zip(images["path"], images[preset.join], strict=True))
