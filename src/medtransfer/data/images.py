"""Decode any supported image file into one float32 array in [0, 1], shape (H, W) or (H, W, 3).

PNG/JPEG/TIFF at 8 or 16 bits (float TIFF scaled over its finite values) through Pillow; DICOM through pydicom
with its photometric interpretation applied (``medtransfer.data.dicom_pixels``). A path may name one frame of a
multi-frame file (``scan.dcm#f0002``, see ``medtransfer.data.frames``); a multi-frame file named without a
frame is refused with a hint to the ``--frames`` policy.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from medtransfer.data.dicom_pixels import frame_count, load_dicom, read_header
from medtransfer.data.frames import split_locator
from medtransfer.data.intensity import min_max
from medtransfer.errors import MedtransferError, first_line

DICOM_SUFFIXES = {".dcm", ".dicom"}
FRAMES_HINT = "choose a frame with --frames first|middle, or one row per frame with --frames all"


def load_image(path: str | Path, *, force_dicom: bool = False) -> np.ndarray:
    """Return the image as float32 in [0, 1]; raise MedtransferError naming the file if it cannot be read.

    ``path`` is a file or a frame locator (``<file>#f0003``: frame 3 of a multi-frame file). ``force_dicom``:
    read a DICOM file that lacks the 128-byte preamble and file meta header (``--force-dicom``).
    """
    path, frame = split_locator(path)
    if not path.is_file():
        raise MedtransferError(f"image not found: {path}")
    try:
        array = load_dicom(path, frame, FRAMES_HINT, force=force_dicom) if is_dicom(path) else \
            _load_pillow(path, frame)
    except MedtransferError:
        raise
    # RuntimeError also covers pydicom's error for transfer syntaxes it cannot decode (a RuntimeError subclass)
    except (OSError, UnidentifiedImageError, ValueError, AttributeError, KeyError, TypeError, EOFError,
            IndexError, RuntimeError) as exc:
        raise MedtransferError(
            f"cannot decode image {path}: {first_line(exc, 200)} (truncated or corrupt file?)"
        ) from exc
    except Exception as exc:  # decoders raise their own types (pydicom's InvalidDicomError, ...)
        raise MedtransferError(f"cannot decode image {path}: {type(exc).__name__}: {first_line(exc, 300)}") from exc
    return _check_shape(array, path)


def count_frames(path: str | Path) -> int:
    """How many 2-D frames the file holds (header only); 1 for a file that cannot be opened: decoding it later
    reports why."""
    path = Path(path)
    if path.suffix.lower() in {".jpg", ".jpeg", ".bmp"} or not path.is_file():
        return 1
    try:
        if is_dicom(path):
            return frame_count(read_header(path))
        with Image.open(path) as image:
            return int(getattr(image, "n_frames", 1) or 1)
    except Exception:  # any reader error: the file is decoded (and its error reported) later
        return 1


def is_dicom(path: Path) -> bool:
    if path.suffix.lower() in DICOM_SUFFIXES:
        return True
    with path.open("rb") as handle:
        head = handle.read(132)
    return len(head) == 132 and head[128:132] == b"DICM"


def _load_pillow(path: Path, frame: int | None) -> np.ndarray:
    with Image.open(path) as image:
        n_frames = int(getattr(image, "n_frames", 1) or 1)
        if frame is None and n_frames > 1:
            raise MedtransferError(
                f"image {path} has {n_frames} frames (a volume or multi-page image); medtransfer expects 2-D "
                f"images: {FRAMES_HINT}"
            )
        if frame is not None:
            if frame >= n_frames:
                raise MedtransferError(f"image {path} has {n_frames} frame(s); frame {frame} does not exist")
            image.seek(frame)
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
            return min_max(np.asarray(image, dtype=np.float32), path)
        if image.mode in {"RGBA", "LA", "P", "CMYK", "YCbCr", "1"}:
            image = image.convert("RGB" if image.mode not in {"LA", "1"} else "L")
        if image.mode not in {"L", "RGB"}:
            image = image.convert("L")
        return np.asarray(image, dtype=np.float32) / 255.0


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
