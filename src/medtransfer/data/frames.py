"""Frames of multi-frame files (DICOM cine/volumes, multi-page TIFF): the ``--frames`` policy and frame locators.

A manifest row names one 2-D image. A file holding several frames is handled by the policy:

* ``refuse`` (default): decoding stops with a one-line error that names the file and this option;
* ``first`` / ``middle``: the row keeps its id and reads frame 0 / frame ``n // 2``;
* ``all``: the row becomes one row per frame, id ``<id>#f0003`` for frame 3 (same label, patient and center, so
  the frames of one file never land in two roles of a fold).

The frame travels with the image path as a *frame locator*, ``<path>#f0003``: decoding
(:func:`medtransfer.data.images.load_image`), content fingerprints and the stores' ``image_path`` columns all see
one string per 2-D image, so every stage applies the same policy without knowing about it. A manifest may also
name a frame itself (``image`` = ``scan.dcm#f0002``).
"""

from __future__ import annotations

import re
from pathlib import Path

FRAME_POLICIES = ("refuse", "first", "middle", "all")
_LOCATOR = re.compile(r"^(?P<path>.+)#f(?P<frame>\d+)$")


def frame_suffix(frame: int) -> str:
    return f"#f{frame:04d}"


def frame_locator(path: str | Path, frame: int) -> str:
    """The image string that names frame ``frame`` (0-based) of the file ``path``."""
    return f"{path}{frame_suffix(frame)}"


def frame_id(sample_id: str, frame: int) -> str:
    """The sample id of frame ``frame`` of a row under ``--frames all``."""
    return f"{sample_id}{frame_suffix(frame)}"


def split_locator(image: str | Path) -> tuple[Path, int | None]:
    """``(file, frame index or None)``; a file whose own name ends like a locator is taken as the file."""
    text = str(image)
    match = _LOCATOR.match(text)
    if match is None or Path(text).exists():
        return Path(text), None
    return Path(match["path"]), int(match["frame"])


def policy_frame(policy: str, n_frames: int) -> int:
    """The frame that ``first`` / ``middle`` read from a file of ``n_frames`` frames."""
    return 0 if policy == "first" else n_frames // 2
