"""A manifest from class sub-folders (torchvision's ImageFolder layout: ``ROOT/<class>/<image>``).

A ``ROOT/<split>/<class>/<image>`` layout (split one of train, val, valid, validation, test) is recognised too:
the split goes into a ``split`` column that ``splits import --train-val-test split`` turns into a splits file.
The patient comes from the file name through ``--patient-regex`` (its ``patient`` group, else its first group);
without it every image is its own patient. The center (for leave-one-center-out splits) comes from the image's
path below ROOT through ``--center-regex`` (its ``center`` group, else its first group): a folder level such as
``ROOT/<class>/<center>/<image>`` (``'^[^/]+/([^/]+)/'``) or a part of the file name (``'^(site\\d+)_'``).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from medtransfer.errors import MedtransferError

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".dcm", ".dicom"}
SPLIT_NAMES = {"train": "train", "val": "val", "valid": "val", "validation": "val", "test": "test"}


@dataclass
class FolderImport:
    manifest: pd.DataFrame
    skipped_files: list[str]  # files whose suffix is not an image's

    def summary(self) -> str:
        table = self.manifest
        balance = ", ".join(f"{c}: {n}" for c, n in table["label"].value_counts().sort_index().items())
        line = f"{len(table)} image(s) of {table['patient'].nunique()} patient(s) in {table['label'].nunique()} " \
               f"class(es) ({balance})"
        if "center" in table.columns:
            line += f"; {table['center'].nunique()} center(s)"
        if "split" in table.columns:
            line += "; splits " + ", ".join(f"{s}: {n}" for s, n in table["split"].value_counts().sort_index().items())
        if self.skipped_files:
            line += f"; {len(self.skipped_files)} non-image file(s) skipped (e.g. {self.skipped_files[0]})"
        return line


def manifest_from_folders(root: str | Path, *, patient_regex: str | None = None, center_regex: str | None = None,
                          out: str | Path | None = None) -> FolderImport:
    """One row per image under ``root/<class>/`` (any depth below the class folder); ``center_regex`` is searched
    in each image's path relative to ``root`` (``/``-separated) and fills a ``center`` column."""
    root = Path(root)
    if not root.is_dir():
        raise MedtransferError(f"not a folder: {root}")
    pattern = _compile(patient_regex)
    center_pattern = _compile(center_regex, "--center-regex", "center", "'^[^/]+/([^/]+)/'")
    top = sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    if not top:
        raise MedtransferError(f"{root} has no class sub-folders (expected ROOT/<class>/<image>)")
    with_splits = all(name.lower() in SPLIT_NAMES for name in top)
    rows, skipped, unmatched, no_center = [], [], [], []
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        relative_folder = Path(folder).relative_to(root)
        depth = 2 if with_splits else 1
        if len(relative_folder.parts) < depth:
            skipped += [str(relative_folder / f) for f in files if not f.startswith(".")]
            continue
        for name in sorted(files):
            if name.startswith("."):
                continue
            relative = relative_folder / name
            if Path(name).suffix.lower() not in IMAGE_SUFFIXES:
                skipped.append(relative.as_posix())
                continue
            row = {"image": relative.as_posix(), "label": relative.parts[depth - 1]}
            if with_splits:
                row["split"] = SPLIT_NAMES[relative.parts[0].lower()]
            if pattern is None:
                row["patient"] = relative.as_posix()
            else:
                match = pattern.search(name)
                if match is None:
                    unmatched.append(relative.as_posix())
                    continue
                row["patient"] = match.group("patient") if "patient" in pattern.groupindex else match.group(1)
            if center_pattern is not None:
                found = center_pattern.search(relative.as_posix())
                if found is None or not _group(found, "center"):
                    no_center.append(relative.as_posix())
                    continue
                row["center"] = _group(found, "center")
            rows.append(row)
    if unmatched:
        raise MedtransferError(
            f"--patient-regex {patient_regex!r} matches no patient in {len(unmatched)} file name(s), e.g. "
            f"{', '.join(unmatched[:3])}; fix the pattern (it is searched in the file name)"
        )
    if no_center:
        raise MedtransferError(
            f"--center-regex {center_regex!r} matches no center in {len(no_center)} path(s), e.g. "
            f"{', '.join(no_center[:3])}; fix the pattern (it is searched in the path below ROOT)"
        )
    if not rows:
        raise MedtransferError(f"no image files ({', '.join(sorted(IMAGE_SUFFIXES))}) under {root}")
    manifest = pd.DataFrame(rows)
    manifest.insert(0, "id", manifest["image"])
    if out is not None:
        out = Path(out)
        out.parent.mkdir(parents=True, exist_ok=True)
        written = manifest.copy()
        written["image"] = [_relative(root / p, out.parent) for p in manifest["image"]]
        written.to_csv(out, index=False)
    return FolderImport(manifest=manifest, skipped_files=skipped)


def _group(match: re.Match, name: str) -> str | None:
    """The named group when the pattern has one, else the first group."""
    return match.group(name) if name in match.re.groupindex else match.group(1)


def _compile(regex: str | None, option: str = "--patient-regex", what: str = "patient",
             example: str = "'^(P\\d+)_'") -> re.Pattern | None:
    if regex is None:
        return None
    try:
        pattern = re.compile(regex)
    except re.error as exc:
        raise MedtransferError(f"{option} {regex!r} is not a valid regular expression: {exc}") from None
    if pattern.groups == 0:
        raise MedtransferError(
            f"{option} {regex!r} has no group; capture the {what} id, e.g. {example} or '(?P<{what}>[^_]+)_'"
        )
    return pattern


def _relative(path: Path, folder: Path) -> str:
    try:
        return Path(os.path.relpath(path.resolve(), folder.resolve())).as_posix()
    except ValueError:
        return path.resolve().as_posix()
