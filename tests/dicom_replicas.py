"""Tiny DICOM files written with pydicom, and replicas of the benchmark's public data set layouts."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

# SOP classes (pydicom.uid names them): CR image storage, Basic Text SR, Grayscale Softcopy Presentation State.
CR_STORAGE = "1.2.840.10008.5.1.4.1.1.1"
BASIC_TEXT_SR = "1.2.840.10008.5.1.4.1.1.88.11"
GSPS = "1.2.840.10008.5.1.4.1.1.11.1"


def write_dicom(path: Path, *, patient: str, modality: str = "CR", view: str = "PA", institution: str = "",
                study_date: str = "20200401", label: int = 0, sop_class: str = CR_STORAGE,
                with_pixels: bool = True, frames: int = 1, size: int = 32) -> Path:
    """A valid DICOM file; its pixels carry ``label`` as brightness so a probe can learn it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.PatientID = patient
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.StudyDate = study_date
    ds.Modality = modality
    if view:
        ds.ViewPosition = view
    if institution:
        ds.InstitutionName = institution
    if with_pixels:
        rng = np.random.default_rng(abs(hash((patient, study_date, str(path)))) % 2**32)
        pixels = rng.integers(0, 1000, size=(frames, size, size) if frames > 1 else (size, size))
        pixels = (pixels + 3000 * label).astype(np.uint16)
        ds.Rows, ds.Columns = size, size
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
        if frames > 1:
            ds.NumberOfFrames = frames
        ds.PixelData = pixels.tobytes()
    ds.save_as(path, enforce_file_format=True)
    return path


def write_sr(path: Path, patient: str) -> Path:
    return write_dicom(path, patient=patient, modality="SR", view="", sop_class=BASIC_TEXT_SR, with_pixels=False)


def write_presentation_state(path: Path, patient: str) -> Path:
    return write_dicom(path, patient=patient, modality="PR", view="", sop_class=GSPS, with_pixels=False)


def afc_replica(root: Path, *, per_center: int = 8) -> Path:
    """AIforCOVID: imgs/, imgs_r2/ with P_<n>.dcm and AIforCOVID.xlsx / AIforCOVID_r2.xlsx (ImageFile, Hospital,
    Prognosis, Death), six hospitals written in mixed case as the sheets may."""
    rows = {"": [], "_r2": []}
    n = 0
    for hospital in ("A", "b", "C", "D", "e", "F"):
        for i in range(per_center):
            n += 1
            severe = i % 2
            release = "" if n % 3 else "_r2"
            write_dicom(root / f"imgs{release}" / f"P_{n}.dcm", patient=f"anon{n}", label=severe)
            rows[release].append({"ImageFile": f"P_{n}", "Hospital": hospital, "Age": 60 + i,
                                  "Prognosis": "SEVERE" if severe else "MILD", "Death": int(i % 4 == 1)})
    for release, release_rows in rows.items():
        pd.DataFrame(release_rows).to_excel(root / f"AIforCOVID{release}.xlsx", index=False)
    return root


def tcia_tree(root: Path, collection: str, patients: dict[str, list[int]], *, ct_for: str = "") -> None:
    """<collection>/<PatientID>/<study>/<series>/1-1.dcm, one study per image; label per image list item."""
    for patient, labels in patients.items():
        for k, label in enumerate(labels):
            write_dicom(root / collection / patient / f"study-{k}" / "series-1" / "1-1.dcm", patient=patient,
                        modality="DX" if k % 2 else "CR", study_date=f"2020040{k + 1}", label=label)
        if patient == ct_for:
            write_dicom(root / collection / patient / "ct-study" / "series-2" / "1-1.dcm", patient=patient,
                        modality="CT", view="", study_date="20200410", label=labels[0])


def car_replica(root: Path, n_patients: int = 30) -> Path:
    ids = [f"COVID-19-AR-{16400000 + i}" for i in range(n_patients)]
    tcia_tree(root, "COVID-19-AR", {p: [int(i % 3 == 0)] * (1 + i % 2) for i, p in enumerate(ids)}, ct_for=ids[0])
    pd.DataFrame({"PATIENT_ID": ids, "ICU Admit": [int(i % 3 == 0) for i in range(n_patients)]}).to_excel(
        root / "COVID-19-AR-Clinical-Data.xlsx", index=False)
    return root


def cc_replica(root: Path, n_patients: int = 20) -> Path:
    ids = [f"CC{i:03d}" for i in range(n_patients)]
    tcia_tree(root, "CoCross", {p: [int(i % 3 == 0)] * (2 + i % 3) for i, p in enumerate(ids)})
    pd.DataFrame({"ID": ids, "ICU Outcome": ["Death" if i % 3 == 0 else "Alive" for i in range(n_patients)]}).to_csv(
        root / "cocross_clinical.csv", index=False)
    return root


def ny_replica(root: Path, n_patients: int = 40) -> Path:
    ids = [f"A{i:06d}" for i in range(n_patients)]
    tcia_tree(root, "COVID-19-NY-SBU", {p: [int(i % 4 == 0)] * (1 + i % 3) for i, p in enumerate(ids)})
    pd.DataFrame({"to_patient_id": ids, "last.status": ["deceased" if i % 4 == 0 else "discharged"
                                                        for i in range(n_patients)],
                  "is_icu": [str(i % 5 == 0) for i in range(n_patients)]}).to_csv(
        root / "deidentified_overlap_tcia.csv", index=False)
    return root
