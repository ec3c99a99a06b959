"""DICOM pixel data to display values the way pydicom does, one frame at a time.

The photometric interpretation decides what the stored values mean (DICOM PS3.3 C.7.6.3.1.2,
https://dicom.nema.org/medical/dicom/current/output/chtml/part03/sect_C.7.6.3.html):

* ``MONOCHROME1/2``: modality LUT (rescale to e.g. Hounsfield units), then the VOI LUT or window
  (``pydicom.pixels.apply_modality_lut`` / ``apply_voi_lut``); MONOCHROME1 is inverted so bone is always bright;
* ``PALETTE COLOR``: stored values index the colour lookup table (``pydicom.pixels.apply_color_lut``);
* ``YBR_FULL`` / ``YBR_FULL_422``: converted to RGB by ``pydicom.pixels.pixel_array`` itself (its default
  ``raw=False`` calls ``convert_color_space``); ``YBR_RCT`` / ``YBR_ICT`` (JPEG 2000) come out of the JPEG 2000
  decoder as RGB; ``RGB`` is used as stored.

Compressed transfer syntaxes need decoder plugins; a missing one is named with the packages to install, taken
from pydicom's own table (``pydicom/pixels/decoders/pylibjpeg.py``, ``DECODER_DEPENDENCIES``; see
https://pydicom.github.io/pydicom/stable/guides/plugin_table.html).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from medtransfer.data.intensity import min_max
from medtransfer.errors import MedtransferError, first_line

PIXEL_KEYWORDS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")
MONOCHROME = ("MONOCHROME1", "MONOCHROME2")
# pixel_array converts YBR_FULL(_422) to RGB; JPEG 2000 decoders undo the RCT/ICT colour transform themselves
RGB_AFTER_DECODING = ("RGB", "YBR_FULL", "YBR_FULL_422", "YBR_RCT", "YBR_ICT")


FORCE_HINT = "re-export it as a DICOM Part 10 file, or pass --force-dicom to read it as viewers do"


def read_header(path: Path, *, force: bool = False):
    """The dataset with its large values (the pixel data) left on disk until used: frame counts, LUTs and the
    transfer syntax cost a header read. A file without the DICOM file meta header is refused in our words, or
    with ``force`` read anyway (pydicom's ``dcmread(force=True)``, as viewers do)."""
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        dataset = pydicom.dcmread(path, defer_size="64 KB", force=force)
    except InvalidDicomError:
        raise MedtransferError(
            f"cannot decode image {path}: not a DICOM file with a file meta header (no 'DICM' prefix at byte 128); "
            f"{FORCE_HINT}"
        ) from None
    return with_transfer_syntax(dataset) if force else dataset


def with_transfer_syntax(dataset):
    """A dataset read with force=True and no file meta has no Transfer Syntax UID, which pixel decoding needs:
    the encoding pydicom detected while reading it (``Dataset.original_encoding``: implicit VR?, little endian?)
    names it, since files without meta are uncompressed (pydicom 3 docs, "Reading files without File Meta")."""
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian

    meta = getattr(dataset, "file_meta", None)
    if meta is not None and "TransferSyntaxUID" in meta:
        return dataset
    implicit, little = dataset.original_encoding
    if implicit is None:  # nothing was read: not DICOM after all
        return dataset
    dataset.file_meta = meta if meta is not None else FileMetaDataset()
    dataset.file_meta.TransferSyntaxUID = (ImplicitVRLittleEndian if implicit else
                                           ExplicitVRLittleEndian if little else ExplicitVRBigEndian)
    return dataset


def frame_count(header) -> int:
    value = header.get("NumberOfFrames", 1)
    try:
        return max(int(value or 1), 1)
    except (TypeError, ValueError):
        return 1


def load_dicom(path: Path, frame: int | None, frames_hint: str, *, force: bool = False) -> np.ndarray:
    """Display values of ``frame`` (None: the file must hold one frame) as float32 in [0, 1]."""
    from pydicom.pixels import pixel_array

    header = read_header(path, force=force)
    if not any(keyword in header for keyword in PIXEL_KEYWORDS):
        raise MedtransferError(f"DICOM file has no pixel data: {path}")
    n_frames = frame_count(header)
    if frame is None and n_frames > 1:
        raise MedtransferError(
            f"image {path} is a {n_frames}-frame DICOM (a volume or cine); medtransfer expects 2-D images: "
            f"{frames_hint}"
        )
    if frame is not None and frame >= n_frames:
        raise MedtransferError(f"image {path} has {n_frames} frame(s); frame {frame} does not exist")
    photometric = str(header.get("PhotometricInterpretation", "MONOCHROME2")).strip()
    if photometric not in (*MONOCHROME, "PALETTE COLOR", *RGB_AFTER_DECODING):
        raise MedtransferError(
            f"image {path}: photometric interpretation {photometric!r} is not supported "
            "(supported: MONOCHROME1/2, PALETTE COLOR, RGB, YBR_FULL(_422), YBR_RCT, YBR_ICT)"
        )
    syntax = _check_decoder(header, path)
    try:
        pixels = pixel_array(header, index=frame)
    except RuntimeError as exc:  # every installed plugin failed on this codestream
        if syntax is not None and syntax.is_encapsulated:
            raise MedtransferError(
                f"cannot decode image {path}: no installed decoder could read its {syntax.name} pixel data "
                f"({_plugin_reasons(exc)})"
            ) from exc
        raise
    return to_display(pixels, header, photometric, path)


def to_display(pixels: np.ndarray, header, photometric: str, path: Path) -> np.ndarray:
    """Apply the photometric interpretation (see the module docstring); float32 in [0, 1]."""
    from pydicom.pixels import apply_color_lut, apply_modality_lut, apply_voi_lut

    if photometric in MONOCHROME:
        values = apply_voi_lut(apply_modality_lut(pixels, header), header)
        array = min_max(np.asarray(values, dtype=np.float32), path)
        return 1.0 - array if photometric == "MONOCHROME1" else array
    if photometric == "PALETTE COLOR":
        pixels = apply_color_lut(pixels, header)[..., :3]  # an alpha palette, if any, is not an image channel
    return min_max(np.asarray(pixels, dtype=np.float32), path)


def _check_decoder(header, path: Path):
    """The transfer syntax (None for a file without one); refuse early when no plugin can decode it."""
    from pydicom.pixels import get_decoder

    syntax = getattr(getattr(header, "file_meta", None), "TransferSyntaxUID", None)
    if syntax is None:
        raise MedtransferError(
            f"cannot decode image {path}: its file meta information has no transfer syntax (0002,0010)"
        )
    try:
        decoder = get_decoder(syntax)
    except RuntimeError:  # pydicom has no decoder class at all for this transfer syntax (e.g. MPEG video)
        raise MedtransferError(
            f"cannot decode image {path}: pydicom cannot decode its transfer syntax {syntax.name} ({syntax}); "
            "convert the file to an uncompressed, JPEG, JPEG-LS, JPEG 2000 or RLE DICOM"
        ) from None
    if not decoder.is_available:
        raise MedtransferError(
            f"cannot decode image {path}: its pixel data are {syntax.name} ({syntax}) and no decoder for it is "
            f"installed; install one: {install_hint(syntax, decoder)}"
        )
    return syntax


def install_hint(syntax, decoder) -> str:
    """``pip install ...`` for the pure-pip plugin (pylibjpeg and its codec), else pydicom's own list."""
    from pydicom.pixels.decoders.pylibjpeg import DECODER_DEPENDENCIES

    packages = DECODER_DEPENDENCIES.get(syntax)
    if packages:
        return "pip install " + " ".join(f"'{p}'" for p in packages)
    return "; ".join(decoder.missing_dependencies) or "a pydicom decoder plugin for this transfer syntax"


def _plugin_reasons(exc: BaseException) -> str:
    """pydicom lists one failure per plugin on the lines after its first: keep them, on one line."""
    lines = [line.strip() for line in str(exc).splitlines()[1:] if line.strip()]
    return "; ".join(lines)[:300] if lines else first_line(exc, 300)
