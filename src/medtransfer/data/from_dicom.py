"""A manifest from a DICOM tree and a clinical table beside it (a PACS export, a TCIA download).

One row per image file. A multi-frame file is one row too; its ``frames`` column says how many frames it holds
(decoding reads 2-D images, so such rows need one frame exported per file before ``extract``). The patient comes
from PatientID, the center from a label-table column or a header tag (InstitutionName by default, where present),
the study date is kept for longitudinal data. Labels are joined by a header field (PatientID, StudyInstanceUID,
AccessionNumber, ...) or by the file name. Whatever cannot be joined is counted in one line and listed in a side
file: images without a label, label rows without images, unreadable files.
"""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from medtransfer.data.dicom_scan import HEADER_FIELDS, DicomScan, scan_dicom_tree
from medtransfer.data.tables import is_missing, read_label_table, require_columns
from medtransfer.errors import MedtransferError

FILE_JOIN = "file"  # join on the file name without its suffix (AIforCOVID names each DICOM after its row)
MANIFEST_COLUMNS = ("id", "image", "label", "patient", "center", "study", "study_date", "modality", "view", "frames")


@dataclass(frozen=True)
class DicomJoin:
    """How images meet their labels. ``labels_key`` defaults to the ``join`` name."""

    join: str = "PatientID"
    labels_key: str | None = None
    label_column: str = "label"
    center_column: str | None = None  # label-table column; else ``center_tag``; else ``default_center``
    center_tag: str = "InstitutionName"
    default_center: str = "all"
    modalities: tuple[str, ...] = ()  # keep only these Modality values (e.g. CR, DX); empty keeps all
    views: tuple[str, ...] = ()  # keep only these ViewPosition values (e.g. PA, AP); empty keeps all
    patient_from: str = "PatientID"  # or "key": the join key is the patient (one image per key)

    @property
    def key_column(self) -> str:
        return self.labels_key or self.join


@dataclass
class DicomImport:
    """The manifest rows and an account of every file and label row that did not become one."""

    manifest: pd.DataFrame
    scan: DicomScan
    filtered_out: Counter = field(default_factory=Counter)  # reason -> images
    unlabelled: pd.DataFrame = field(default_factory=pd.DataFrame)  # images without a (non-empty) label
    labels_without_images: list[str] = field(default_factory=list)

    def summary(self) -> str:
        table = self.manifest
        line = (f"{len(table)} image(s) of {table['patient'].nunique()} patient(s), "
                f"{table['center'].nunique()} center(s) -> manifest")
        if self.filtered_out:
            line += "; filtered out: " + ", ".join(f"{n} {why}" for why, n in sorted(self.filtered_out.items()))
        if len(self.unlabelled):
            line += (f"; {len(self.unlabelled)} image(s) of {self.unlabelled['patient'].nunique()} patient(s) "
                     "without a label")
        if self.labels_without_images:
            line += f"; {len(self.labels_without_images)} label row(s) without images"
        multi = int((table["frames"].astype(int) > 1).sum()) if len(table) else 0
        if multi:
            line += f"; {multi} multi-frame file(s), one row each (frames column)"
        return line

    def side_table(self) -> pd.DataFrame:
        """Everything that did not become a manifest row, one line each, with the reason."""
        rows = [{"kind": "image without label", "key": r.key, "path": r.path, "reason": r.reason}
                for r in self.unlabelled.itertuples(index=False)]
        rows += [{"kind": "label row without image", "key": k, "path": "", "reason": "no image with this key"}
                 for k in self.labels_without_images]
        rows += [{"kind": "unreadable file", "key": "", "path": p, "reason": why} for p, why in self.scan.unreadable]
        rows += [{"kind": "odd header (read anyway)", "key": "", "path": p, "reason": why}
                 for p, why in self.scan.odd_headers]
        return pd.DataFrame(rows, columns=["kind", "key", "path", "reason"])


def manifest_from_dicom(
    root: str | Path,
    labels: str | Path | pd.DataFrame,
    join: DicomJoin,
    *,
    out: str | Path | None = None,
    workers: int | None = None,
    progress: bool = True,
    force_dicom: bool = False,
) -> DicomImport:
    """Scan ``root``, join ``labels`` and, with ``out``, write the manifest and ``<out>.unmatched.csv``;
    ``force_dicom``: read files without the DICM preamble too (then extract and adapt need --force-dicom)."""
    table = labels if isinstance(labels, pd.DataFrame) else read_label_table(labels)
    _check_join(table, join)  # before the scan: a wrong column name should not cost a scan of the tree
    scan = scan_dicom_tree(root, workers=workers, progress=progress, force=force_dicom)
    result = join_labels(scan, table, join, root=Path(root))
    if out is not None:
        write_import(result, out)
    return result


def join_labels(scan: DicomScan, table: pd.DataFrame, join: DicomJoin, *, root: Path) -> DicomImport:
    """Filter the scanned images, attach labels, and account for what did not match."""
    _check_join(table, join)
    images = scan.images.copy()
    filtered: Counter = Counter()
    for tag, wanted, what in (("Modality", join.modalities, "modality"), ("ViewPosition", join.views, "view")):
        if wanted:
            keep = images[tag].str.upper().isin({w.upper() for w in wanted})
            for value, n in images.loc[~keep, tag].replace("", "(none)").value_counts().items():
                filtered[f"{what} {value}"] += int(n)
            images = images[keep]
    images["key"] = [Path(p).stem for p in images["path"]] if join.join == FILE_JOIN else images[join.join]

    keyed = table[table[join.key_column] != ""].copy()
    if join.join == FILE_JOIN:  # a sheet may name the file with its suffix (P_1.dcm) or without (P_1)
        keyed[join.key_column] = [strip_dicom_suffix(k) for k in keyed[join.key_column]]
    conflicts = keyed.groupby(join.key_column)[join.label_column].nunique()
    conflicts = sorted(conflicts[conflicts > 1].index)
    if conflicts:
        raise MedtransferError(
            f"the label table gives {len(conflicts)} key(s) more than one label in {join.label_column!r} "
            f"(e.g. {', '.join(conflicts[:5])}); keep one row per {join.key_column}"
        )
    keyed = keyed.drop_duplicates(subset=[join.key_column]).set_index(join.key_column)
    label_of = keyed[join.label_column].to_dict()

    images["label"] = images["key"].map(label_of).fillna("")
    if join.patient_from == "key":
        images["patient"] = images["key"]
    else:
        images["patient"] = images["PatientID"].where(images["PatientID"] != "", images["key"])
    missing = images["label"].map(is_missing).astype(bool)  # NaN / NA / null in the sheet: missing, not a class
    unlabelled = images[missing].assign(
        reason=[(f"missing label {label!r}" if label else "empty label") if k in label_of
                else "key not in the label table"
                for k, label in zip(images.loc[missing, "key"], images.loc[missing, "label"], strict=True)]
    )[["key", "path", "patient", "reason"]]
    images = images[~missing]
    if join.center_column:
        images["center"] = images["key"].map(keyed[join.center_column].to_dict()).replace("", join.default_center)
    elif join.center_tag and join.center_tag in images.columns:
        images["center"] = images[join.center_tag].replace("", join.default_center)
    else:
        images["center"] = join.default_center
    seen = set(scan.images["path"].map(lambda p: Path(p).stem) if join.join == FILE_JOIN
               else scan.images[join.join])
    without_images = sorted(k for k in label_of if k not in seen)

    manifest = pd.DataFrame({
        "id": [_relative(p, root) for p in images["path"]],
        "image": images["path"].tolist(),
        "label": images["label"].tolist(),
        "patient": images["patient"].tolist(),
        "center": images["center"].tolist(),
        "study": images["StudyInstanceUID"].tolist(),
        "study_date": images["StudyDate"].tolist(),
        "modality": images["Modality"].tolist(),
        "view": images["ViewPosition"].tolist(),
        "frames": images["NumberOfFrames"].tolist(),
    }, columns=list(MANIFEST_COLUMNS))
    manifest = manifest.sort_values(["patient", "study_date", "id"], kind="stable").reset_index(drop=True)
    return DicomImport(manifest=manifest, scan=scan, filtered_out=filtered, unlabelled=unlabelled,
                       labels_without_images=without_images)


def _check_join(table: pd.DataFrame, join: DicomJoin) -> None:
    if join.join != FILE_JOIN and join.join not in HEADER_FIELDS:
        raise MedtransferError(
            f"--join {join.join!r}: join on one of {', '.join(HEADER_FIELDS)} or {FILE_JOIN!r} (the file name)"
        )
    columns = [join.key_column, join.label_column] + ([join.center_column] if join.center_column else [])
    require_columns(table, columns, source="the label table", option="--labels-key / --label-column / --center-column")


def write_import(result: DicomImport, out: str | Path) -> tuple[Path, Path]:
    """The manifest (image paths relative to its folder) and ``<stem>.unmatched.csv`` beside it."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    if result.manifest.empty:
        raise MedtransferError(f"no labelled image to write: {result.summary()}")
    written = result.manifest.copy()
    written["image"] = [_relative(p, out.parent.resolve()) for p in written["image"]]
    written.to_csv(out, index=False)
    side = out.with_name(f"{out.stem}.unmatched.csv")
    result.side_table().to_csv(side, index=False)
    return out, side


def strip_dicom_suffix(name: str) -> str:
    return name[: -len(Path(name).suffix)] if Path(name).suffix.lower() in {".dcm", ".dicom"} else name


def _relative(path: str, folder: Path) -> str:
    """Relative to ``folder`` where that is short and portable; absolute otherwise (another drive)."""
    absolute = Path(path).resolve()
    try:
        return Path(os.path.relpath(absolute, folder.resolve())).as_posix()
    except ValueError:
        return absolute.as_posix()
