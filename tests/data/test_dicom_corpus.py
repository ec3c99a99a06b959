"""Every DICOM file of pydicom's wheel (and pydicom-data where installed) through our decoder: each matches
pydicom's own display pixels (correlation > 0.99 after the same small resize) or is one clear line naming it."""

from __future__ import annotations

import warnings
from collections import Counter

from dicom_support import corpus_files, correlation, pydicom_data_installed, reference

from medtransfer.data.frames import frame_locator
from medtransfer.data.images import count_frames, load_image
from medtransfer.errors import MedtransferError

NOT_DICOM = {".json", ".txt", ".dump", ".gz", ".icc", ".py", ".pyc"}


def _outcome(path) -> tuple[str, str]:
    """("match" | "error" | "mismatch", detail); a multi-frame file is checked on its middle frame."""
    n_frames = count_frames(path)
    frame = n_frames // 2 if n_frames > 1 else None
    try:
        ours = load_image(frame_locator(path, frame) if frame is not None else path)
    except MedtransferError as exc:
        return "error", str(exc)
    value = correlation(ours, reference(path, frame))
    return ("match" if value > 0.99 else "mismatch"), f"{path.name}: correlation {value:.3f}"


def test_every_dicom_file_matches_pydicom_or_is_one_clear_line():
    files = [p for p in corpus_files() if p.suffix.lower() not in NOT_DICOM and not p.name.startswith("README")]
    assert len(files) > 100
    counts, problems = Counter(), []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pydicom's notes on odd files (excess padding, bad VR values)
        for path in files:
            kind, detail = _outcome(path)
            counts[kind] += 1
            if kind == "mismatch":
                problems.append(detail)
            elif kind == "error":
                one_line = "\n" not in detail and path.name in detail and len(detail) < 700
                blames_file = "truncated or corrupt" in detail and "decoder" in detail
                if not one_line or blames_file:
                    problems.append(f"{path.name}: unclear error {detail!r}")
    print(f"DICOM corpus ({'with' if pydicom_data_installed() else 'without'} pydicom-data): {dict(counts)}")
    assert not problems, problems
    assert counts["match"] >= (140 if pydicom_data_installed() else 75)


def test_declared_decoders_are_available_to_pydicom():
    """The pure-pip decoders in pyproject.toml register with pydicom: a fresh install reads these syntaxes."""
    from pydicom import uid
    from pydicom.pixels import get_decoder

    for syntax in (uid.JPEGBaseline8Bit, uid.JPEGExtended12Bit, uid.JPEGLossless, uid.JPEGLosslessSV1,
                   uid.JPEGLSLossless, uid.JPEGLSNearLossless, uid.JPEG2000Lossless, uid.JPEG2000, uid.RLELossless):
        assert "pylibjpeg" in get_decoder(syntax).available_plugins, syntax.name
