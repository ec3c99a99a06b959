"""`manifest from-dicom` over every file of pydicom's test data and pydicom-data (issue 28.1, 28.6): exit 0, a
manifest, and each kind of skipped or odd file counted in the summary and listed in the side file; no pydicom
warning reaches stderr and no header value (NumberOfFrames '1A') crashes the summary."""

from __future__ import annotations

import shutil
import warnings

import pandas as pd
import pydicom
from dicom_support import corpus_files, dicom_file


def _tree_with_labels(tmp_path, files):
    tree = tmp_path / "tree"
    tree.mkdir()
    patients: dict[str, str] = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for k, path in enumerate(files):
            shutil.copy(path, tree / f"{k:03d}_{path.name}")
            try:
                patient = str(pydicom.dcmread(path, stop_before_pixels=True, force=True).get("PatientID", "") or "")
            except Exception:  # not DICOM at all: it stays in the tree and must be counted as unreadable
                continue
            if patient:
                patients.setdefault(patient, str(len(patients) % 2))
    labels = tmp_path / "labels.csv"
    pd.DataFrame({"PatientID": list(patients), "label": list(patients.values())}).to_csv(labels, index=False)
    return tree, labels


def test_from_dicom_over_all_of_pydicoms_test_files(tmp_path, cli):
    files = corpus_files()
    assert len(files) > 100
    tree, labels = _tree_with_labels(tmp_path, files)
    out = tmp_path / "manifest.csv"
    result = cli("manifest", "from-dicom", tree, "--labels", labels, "--label-column", "label", "--out", out)
    assert result.exit_code == 0, result.output
    assert "Traceback" not in result.output and "Warning" not in result.stderr, result.stderr
    manifest = pd.read_csv(out, dtype=str)
    assert len(manifest) > 50 and manifest["frames"].str.isdigit().all()
    side = pd.read_csv(out.with_name("manifest.unmatched.csv"), dtype=str)
    kinds = side["kind"].value_counts()
    assert kinds["unreadable file"] >= 1 and kinds["odd header (read anyway)"] >= 1
    scanned = next(line for line in result.stdout.splitlines() if line.startswith("scanned"))
    assert f"{kinds['unreadable file']} unreadable" in scanned
    assert "with odd headers read anyway" in scanned


def test_a_frame_count_that_is_not_a_number_names_the_file(tmp_path, cli):
    """badVR.dcm's NumberOfFrames is '1A': the file is counted as unreadable with that reason (it crashed)."""
    tree, labels = _tree_with_labels(tmp_path, [dicom_file("badVR.dcm"), dicom_file("CT_small.dcm")])
    out = tmp_path / "manifest.csv"
    result = cli("manifest", "from-dicom", tree, "--labels", labels, "--label-column", "label", "--out", out)
    assert result.exit_code == 0, result.output
    side = pd.read_csv(out.with_name("manifest.unmatched.csv"), dtype=str)
    bad = side[side["path"].str.endswith("badVR.dcm", na=False)]
    assert "unreadable file" in bad["kind"].tolist()
    assert "NumberOfFrames '1A'" in bad.loc[bad["kind"] == "unreadable file", "reason"].iloc[0]
    assert len(pd.read_csv(out)) == 1
