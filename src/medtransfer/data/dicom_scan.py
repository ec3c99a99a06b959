"""Read the headers of every DICOM file under a folder, in parallel, without decoding pixels.

This is the slow part of turning a PACS export or a TCIA download into a manifest: a tree can hold tens of
thousands of files. Headers only (``dcmread(stop_before_pixels=True)``) and a thread pool keep it I/O bound.
Every file ends in exactly one bucket: an image row, a non-image object (structured report, presentation state,
...), a file that is not DICOM by its name (a spreadsheet beside the images), or an unreadable file with its
reason, so that nothing is dropped silently.
"""

from __future__ import annotations

import functools
import os
import threading
import warnings
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
from tqdm.auto import tqdm

from medtransfer.errors import MedtransferError

# Header fields kept per image (DICOM keywords, PS3.6 data dictionary: https://dicom.nema.org/medical/dicom/
# current/output/chtml/part06/chapter_6.html). Missing fields are empty strings.
HEADER_FIELDS = (
    "PatientID", "StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "SOPClassUID", "AccessionNumber",
    "StudyDate", "AcquisitionDate", "Modality", "ViewPosition", "InstitutionName", "BodyPartExamined",
    "NumberOfFrames", "Rows", "Columns",
)
# Modalities that never carry an image (PS3.3 C.7.3.1.1.1 defined terms: SR structured report, PR presentation
# state, KO key object selection, DOC document, REG registration, RWV real world value map, SEG is an image).
NON_IMAGE_MODALITIES = {"SR", "PR", "KO", "DOC", "REG", "RWV", "FID", "PLAN", "RTPLAN", "RTRECORD"}
# Files that are not DICOM by their name and sit beside images in downloads (clinical sheets, notes, exports).
NOT_DICOM_SUFFIXES = {
    ".csv", ".tsv", ".xlsx", ".xls", ".txt", ".md", ".json", ".xml", ".pdf", ".html", ".zip", ".gz", ".tar",
    ".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".py", ".log", ".db", ".ini",
}


@dataclass
class DicomScan:
    """What a scan found: one row per image file, and every other file accounted for."""

    images: pd.DataFrame  # columns: path + HEADER_FIELDS
    non_image: Counter = field(default_factory=Counter)  # kind (e.g. "SR (Basic Text SR Storage)") -> files
    other_files: int = 0  # files skipped by their suffix (spreadsheets, text, ...)
    unreadable: list[tuple[str, str]] = field(default_factory=list)  # (path, reason)
    odd_headers: list[tuple[str, str]] = field(default_factory=list)  # (path, pydicom's warning), files kept

    def summary(self) -> str:
        parts = [f"{len(self.images)} image file(s)"]
        if self.non_image:
            kinds = ", ".join(f"{n} {kind}" for kind, n in sorted(self.non_image.items()))
            parts.append(f"{sum(self.non_image.values())} non-image object(s) skipped ({kinds})")
        if self.other_files:
            parts.append(f"{self.other_files} non-DICOM file(s) skipped by name")
        if self.unreadable:
            parts.append(f"{len(self.unreadable)} unreadable: " + "; ".join(
                f"{path} ({reason})" for path, reason in self.unreadable[:5]
            ) + (" ..." if len(self.unreadable) > 5 else ""))
        if self.odd_headers:
            files = len({path for path, _ in self.odd_headers})
            parts.append(f"{files} file(s) with odd headers read anyway ({len(self.odd_headers)} pydicom "
                         "warning(s), listed in the side file)")
        return ", ".join(parts)


_current = threading.local()  # the file each scanning thread reads, so a warning can name it


def scan_dicom_tree(root: str | Path, *, workers: int | None = None, progress: bool = True,
                    force: bool = False) -> DicomScan:
    """Scan ``root`` recursively (files with any or no suffix, hidden files excluded); ``force``: read files
    without the DICM preamble too (pydicom ``force=True``)."""
    root = Path(root)
    if not root.is_dir():
        raise MedtransferError(f"not a folder: {root}")
    candidates: list[Path] = []
    other = 0
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            if name.startswith("."):
                continue
            path = Path(folder) / name
            if path.suffix.lower() in NOT_DICOM_SUFFIXES:
                other += 1
            else:
                candidates.append(path)
    n_workers = workers or min(16, (os.cpu_count() or 2) * 4)  # header reads wait on the disk, not the CPU
    rows: list[dict] = []
    non_image: Counter = Counter()
    unreadable: list[tuple[str, str]] = []
    odd: list[tuple[str, str]] = []

    def collect(message, category, filename, lineno, file=None, line=None) -> None:
        odd.append((str(getattr(_current, "path", "")), f"{category.__name__}: {message}".splitlines()[0][:200]))

    # pydicom warns (UserWarning) about every odd header it reads anyway; dozens of lines on a real tree. They
    # are collected (per file, by the reading thread) and counted in one line instead. ``showwarning`` is
    # process-wide, so it is swapped for the whole scan, not per thread.
    with warnings.catch_warnings(), ThreadPoolExecutor(max_workers=n_workers) as pool:
        warnings.simplefilter("always")
        warnings.showwarning = collect
        results = pool.map(functools.partial(_read_header, force=force), candidates)
        for path, outcome in tqdm(zip(candidates, results, strict=True), total=len(candidates), unit="file",
                                  desc="scan DICOM headers", disable=not progress):
            kind, value = outcome
            if kind == "image":
                rows.append({"path": str(path), **value})
            elif kind == "non-image":
                non_image[value] += 1
            else:
                unreadable.append((str(path), value))
    images = pd.DataFrame(rows, columns=["path", *HEADER_FIELDS])
    return DicomScan(images=images, non_image=non_image, other_files=other, unreadable=unreadable,
                     odd_headers=sorted(set(odd)))


def _read_header(path: Path, force: bool = False) -> tuple[str, object]:
    """("image", fields) | ("non-image", kind) | ("unreadable", reason)."""
    import pydicom
    from pydicom.errors import InvalidDicomError

    _current.path = path
    try:
        dataset = pydicom.dcmread(path, stop_before_pixels=True, force=force)
    except InvalidDicomError:
        return "unreadable", "not a DICOM file (no DICM preamble; --force-dicom reads such files)"
    except Exception as exc:  # truncated or malformed headers raise many types; the user needs path and reason
        return "unreadable", f"{type(exc).__name__}: {exc}".splitlines()[0][:200]
    if force and (dataset.original_encoding[0] is None or not len(dataset)):  # forced, yet nothing DICOM in it
        return "unreadable", "not a DICOM file (read with --force-dicom: no DICOM element in it)"
    modality = str(getattr(dataset, "Modality", "") or "").upper()
    sop_class = getattr(dataset, "SOPClassUID", None)
    class_name = str(getattr(sop_class, "name", "") or "")  # pydicom's UID dictionary (pydicom/_uid_dict.py)
    no_pixels = "Rows" not in dataset or "Columns" not in dataset
    if modality in NON_IMAGE_MODALITIES or "SR Storage" in class_name or "Presentation State" in class_name \
            or no_pixels:
        label = modality or "no pixel data"
        return "non-image", f"{label} ({class_name})" if class_name else label
    fields = {}
    for keyword in HEADER_FIELDS:
        value = getattr(dataset, keyword, "")
        fields[keyword] = "" if value is None else str(value).strip()
    frames = fields["NumberOfFrames"] or "1"
    if not frames.isdigit():  # an IS value pydicom keeps as text (e.g. '1A' in its own test files)
        return "unreadable", f"NumberOfFrames {frames!r} is not a whole number (a damaged header)"
    fields["NumberOfFrames"] = str(int(frames))
    return "image", fields
