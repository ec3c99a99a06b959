"""Decode any supported image file into one float32 array in [0, 1], shape (H, W) or (H, W, 3).

PNG/JPEG/TIFF at 8 or 16 bits through Pillow; DICOM through pydicom, with the modality and VOI LUTs
(windowing) applied and MONOCHROME1 inverted so that bone is always bright.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from medtransfer.errors import MedtransferError, first_line

DICOM_SUFFIXES = {".dcm", ".dicom"}


def load_image(path: str | Path) -> np.ndarray:
    """Return the image as float32 in [0, 1]; raise MedtransferError naming the file if it cannot be read."""
    path = Path(path)
    if not path.is_file():
        raise MedtransferError(f"image not found: {path}")
    try:
        if path.suffix.lower() in DICOM_SUFFIXES or _has_dicom_preamble(path):
            array = _load_dicom(path)
        else:
            array = _load_pillow(path)
    except MedtransferError:
        raise
    # RuntimeError also covers pydicom's error for transfer syntaxes it cannot decode (a RuntimeError subclass)
    except (OSError, UnidentifiedImageError, ValueError, AttributeError, KeyError, TypeError, EOFError,
            IndexError, RuntimeError) as exc:
        raise MedtransferError(
            f"cannot decode image {path}: {first_line(exc, 200)} (truncated or corrupt file?)"
        ) from exc
    except Exception as exc:  # decoders raise their own types (pydicom's InvalidDicomError, ...)
        raise MedtransferError(f"cannot decode image {path}: {type(exc).__name__}: {exc}") from exc
    array = _check_shape(array, path)
    if not np.isfinite(array).all():
        array = np.nan_to_num(array, nan=0.0, posinf=1.0, neginf=0.0)
    return array


def _has_dicom_preamble(path: Path) -> bool:
    with path.open("rb") as handle:
        head = handle.read(132)
    return len(head) == 132 and head[128:132] == b"DICM"


def _load_pillow(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        if getattr(image, "n_frames", 1) > 1:
            raise MedtransferError(
                f"image {path} has {image.n_frames} frames: a volume or multi-frame image; medtransfer expects "
                "2-D images (export one slice or frame per file)"
            )
        image.load()
        if image.mode in {"RGBA", "LA", "PA"} or (image.mode == "P" and "transparency" in image.info):
            alpha = np.asarray(image.convert("RGBA"))[..., 3]
            if (alpha < 255).any():
                raise MedtransferError(
                    f"image {path} has a transparency (alpha) channel with {int((alpha < 255).sum())} "
                    "non-opaque pixels; flatten it to RGB or grayscale first"
                )
        if image.mode in {"I;16", "I;16B", "I;16L", "I"}:
            raw = np.asarray(image)
            scale = 65535.0 if image.mode.startswith("I;16") or raw.max() <= 65535 else float(raw.max())
            return raw.astype(np.float32) / scale
        if image.mode == "F":
            return _min_max(np.asarray(image, dtype=np.float32))
        if image.mode in {"RGBA", "LA", "P", "CMYK", "YCbCr", "1"}:
            image = image.convert("RGB" if image.mode not in {"LA", "1"} else "L")
        if image.mode not in {"L", "RGB"}:
            image = image.convert("L")
        return np.asarray(image, dtype=np.float32) / 255.0


def _load_dicom(path: Path) -> np.ndarray:
    import pydicom
    from pydicom.pixels import apply_modality_lut, apply_voi_lut

    dataset = pydicom.dcmread(path)
    if "PixelData" not in dataset:
        raise MedtransferError(f"DICOM file has no pixel data: {path}")
    frames = int(getattr(dataset, "NumberOfFrames", 1) or 1)
    if frames > 1:
        raise MedtransferError(
            f"image {path} is a {frames}-frame DICOM (a volume or cine); medtransfer expects 2-D images "
            "(export one slice or frame per file)"
        )
    pixels = dataset.pixel_array
    photometric = str(getattr(dataset, "PhotometricInterpretation", "MONOCHROME2"))
    if photometric.startswith("MONOCHROME"):
        pixels = apply_modality_lut(pixels, dataset)
        pixels = apply_voi_lut(pixels, dataset)
        array = _min_max(pixels.astype(np.float32))
        if photometric == "MONOCHROME1":
            array = 1.0 - array
        return array
    return _min_max(pixels.astype(np.float32))


def _min_max(array: np.ndarray) -> np.ndarray:
    low, high = float(np.nanmin(array)), float(np.nanmax(array))
    if high <= low:
        return np.zeros_like(array, dtype=np.float32)
    return ((array - low) / (high - low)).astype(np.float32)


def _check_shape(array: np.ndarray, path: Path) -> np.ndarray:
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim == 3 and array.shape[-1] != 3:
        raise MedtransferError(
            f"image {path} has shape {array.shape}: a volume or multi-frame image; "
            "medtransfer expects 2-D images (export one slice or frame per file)"
        )
    if array.ndim not in (2, 3):
        raise MedtransferError(f"image {path} has unsupported shape {array.shape}; expected H x W or H x W x 3")
    if min(array.shape[:2]) < 2:
        raise MedtransferError(f"image {path} is degenerate: shape {array.shape} (at least 2 x 2 pixels needed)")
    return np.ascontiguousarray(array, dtype=np.float32)
