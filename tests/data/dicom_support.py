"""DICOM test files and pydicom's own display pixels, for comparing our decoder with pydicom."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest
import torch
import torch.nn.functional as F
from pydicom.pixels import apply_color_lut, apply_modality_lut, apply_voi_lut, pixel_array

COMPARE_SIZE = 32


def corpus_files() -> list[Path]:
    """Every file of pydicom's wheel test data and, when installed, of the pydicom-data package.

    Listed from disk, not with ``get_testdata_files()``: that call also downloads pydicom's online test files
    (slow with network, a warning per call without); pydicom-data holds the same files as a package.
    """
    from pydicom.data import DATA_ROOT, external_data_sources
    from pydicom.data.data_manager import DataTypes

    files = [p for p in Path(DATA_ROOT, "test_files").rglob("*") if p.is_file()]
    source = external_data_sources().get("pydicom-data")
    if source is not None:
        files += [Path(p) for p in source.get_paths("**/*", DataTypes.DATASET) if Path(p).is_file()]
    return sorted(files, key=lambda p: (p.name, str(p)))


def pydicom_data_installed() -> bool:
    from pydicom.data import external_data_sources

    return "pydicom-data" in external_data_sources()


def dicom_file(name: str) -> Path:
    """A test file by name from the wheel or pydicom-data; skipped with the reason when only the download has it."""
    found = [p for p in corpus_files() if p.name == name]
    if not found:
        pytest.skip(f"{name}: only in pydicom-data (pip install pydicom-data) or pydicom's download; offline here")
    return found[0]


def reference(path: str | Path, frame: int | None = None) -> np.ndarray:
    """pydicom's own display values: pixel_array (YBR -> RGB), then the colour LUT or modality + VOI LUTs;
    MONOCHROME1 negated (bright = high attenuation, as we show it)."""
    dataset = pydicom.dcmread(path)
    pixels = pixel_array(dataset, index=frame)
    photometric = dataset.PhotometricInterpretation
    if photometric == "PALETTE COLOR":
        return apply_color_lut(pixels, dataset)[..., :3]
    if photometric.startswith("MONOCHROME"):
        values = apply_voi_lut(apply_modality_lut(pixels, dataset), dataset).astype(np.float64)
        return -values if photometric == "MONOCHROME1" else values
    return pixels


def small(array: np.ndarray) -> np.ndarray:
    """Area-resize to COMPARE_SIZE x COMPARE_SIZE (per channel), flattened: the same resize for both sides."""
    tensor = torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))
    tensor = tensor[None, None] if tensor.ndim == 2 else tensor.permute(2, 0, 1)[None]
    return F.interpolate(tensor, size=(COMPARE_SIZE, COMPARE_SIZE), mode="area").flatten().numpy()


def correlation(ours: np.ndarray, theirs: np.ndarray) -> float:
    """Pearson correlation after the same resize; two constant images correlate perfectly."""
    a, b = small(ours), small(theirs)
    if a.std() == 0 or b.std() == 0:
        return 1.0 if a.std() == b.std() else 0.0
    return float(np.corrcoef(a, b)[0, 1])
