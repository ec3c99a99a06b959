"""DICOM photometric interpretations and compressions against pydicom's own result, and the missing-decoder line."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pydicom
import pytest
from dicom_support import correlation, dicom_file, reference
from pydicom.pixels import convert_color_space, pixel_array

from medtransfer.data.frames import frame_locator
from medtransfer.data.images import load_image
from medtransfer.errors import MedtransferError


@pytest.mark.parametrize("name", [
    "examples_palette.dcm",      # wheel: 8-bit palette
    "OBXXXX1A.dcm",              # pydicom-data: palette, little endian
    "OBXXXX1A_expb.dcm",         # ... big endian
    "OBXXXX1A_rle.dcm",          # ... RLE
    "gdcm-US-ALOKA-16.dcm",      # segmented 16-bit palette
])
def test_palette_colour_applies_the_lookup_table(name):
    path = dicom_file(name)
    ours = load_image(path)
    assert ours.shape[-1] == 3 and ours.dtype == np.float32
    assert correlation(ours, reference(path)) > 0.99
    # the stored indices are not the picture: without the LUT the correlation is clearly lower
    indices = pydicom.dcmread(path).pixel_array.astype(np.float32)
    assert correlation(ours, np.repeat(indices[..., None], 3, axis=-1)) < 0.97


@pytest.mark.parametrize(("name", "stored"), [
    ("SC_ybr_full_422_uncompressed.dcm", "YBR_FULL_422"),
    ("SC_ybr_full_uncompressed.dcm", "YBR_FULL"),
])
def test_ybr_is_converted_to_rgb(name, stored):
    path = dicom_file(name)
    raw = pixel_array(pydicom.dcmread(path), raw=True)  # still Y, Cb, Cr
    expected = convert_color_space(raw, stored, "RGB")
    ours = load_image(path)
    assert ours.shape == expected.shape
    assert correlation(ours, expected) > 0.99
    assert correlation(ours[..., 2], raw[..., 2]) < 0.9  # Cr is not blue


@pytest.mark.parametrize("name", ["examples_jpeg2k.dcm", "US1_J2KR.dcm", "SC_rgb_dcmtk_+eb+cy+np.dcm"])
def test_jpeg_colour_transforms_match_pydicom(name):
    path = dicom_file(name)
    assert correlation(load_image(path), reference(path)) > 0.99


@pytest.mark.parametrize("name", ["RG3_UNCR.dcm", "RG1_J2KR.dcm"])
def test_monochrome1_real_radiographs_are_inverted(name):
    path = dicom_file(name)
    ours = load_image(path)
    theirs = reference(path)  # pydicom's windowed values, negated
    assert correlation(ours, theirs) > 0.99
    assert correlation(ours, -theirs) < -0.99


@pytest.mark.parametrize("name", ["mlut_18.dcm", "vlut_04.dcm", "MR_small.dcm", "CT_small.dcm", "693_UNCR.dcm"])
def test_modality_and_voi_luts_match_pydicom(name):
    path = dicom_file(name)
    ours = load_image(path)
    assert ours.min() == 0.0 and ours.max() == 1.0
    assert correlation(ours, reference(path)) > 0.99


@pytest.mark.parametrize(("compressed", "uncompressed"), [
    ("MR_small_RLE.dcm", "MR_small.dcm"),               # RLE lossless
    ("MR_small_jpeg_ls_lossless.dcm", "MR_small.dcm"),  # JPEG-LS lossless
    ("MR_small_jp2klossless.dcm", "MR_small.dcm"),      # JPEG 2000 lossless
    ("SC_rgb_jpeg_gdcm.dcm", "SC_rgb.dcm"),             # JPEG lossless (process 14 SV1), RGB
])
def test_lossless_compressions_decode_to_the_uncompressed_pixels(compressed, uncompressed):
    ours = load_image(dicom_file(compressed))
    expected = load_image(dicom_file(uncompressed))
    assert ours.shape == expected.shape
    np.testing.assert_allclose(ours, expected, atol=1e-6)


@pytest.mark.parametrize("name", [
    "JPGExtended.dcm",               # JPEG extended (process 2 and 4), 12-bit
    "JPEGLSNearLossless_16.dcm",     # JPEG-LS near-lossless
    "SC_rgb_jls_lossy_sample.dcm",   # JPEG-LS near-lossless, colour
    "JPEG2000.dcm",                  # JPEG 2000 lossy
    "SC_rgb_jpeg_dcmtk.dcm",         # JPEG baseline
    "JPEG-LL.dcm",                   # pydicom-data: JPEG lossless, 16-bit
    "JPGLosslessP14SV1_1s_1f_8b.dcm",  # pydicom-data: JPEG lossless, 8-bit
])
def test_lossy_compressions_decode_like_pydicom(name):
    path = dicom_file(name)
    assert correlation(load_image(path), reference(path)) > 0.99


def test_frames_of_a_real_multi_frame_file_decode_one_at_a_time():
    path = dicom_file("emri_small_jpeg_ls_lossless.dcm")  # 10 frames, JPEG-LS
    with pytest.raises(MedtransferError, match="10-frame DICOM.*--frames"):
        load_image(path)
    frames = [load_image(frame_locator(path, k)) for k in (0, 5, 9)]
    uncompressed = dicom_file("emri_small.dcm")
    for k, frame in zip((0, 5, 9), frames, strict=True):
        assert correlation(frame, reference(path, k)) > 0.99
        np.testing.assert_allclose(frame, load_image(frame_locator(uncompressed, k)), atol=1e-6)
    assert not np.allclose(frames[0], frames[2])
    with pytest.raises(MedtransferError, match="has 10 frame.*frame 10 does not exist"):
        load_image(frame_locator(path, 10))


def test_undecodable_codestream_is_one_line_without_blaming_the_file():
    path = dicom_file("JPEG-lossy.dcm")  # 12-bit JPEG extended that no installed plugin decodes
    with pytest.raises(MedtransferError) as caught:
        load_image(path)
    message = str(caught.value)
    assert "\n" not in message and "JPEG-lossy.dcm" in message
    assert "no installed decoder could read its JPEG Extended" in message
    assert "truncated or corrupt" not in message


def test_missing_decoder_names_the_package_to_install():
    """With pylibjpeg (and the other JPEG-LS plugins) hidden, as in an install without them, a JPEG-LS file names
    the packages to install."""
    path = dicom_file("MR_small_jpeg_ls_lossless.dcm")
    script = (
        "import sys\n"
        "for name in ('pylibjpeg', 'libjpeg', 'jpeg_ls', 'gdcm'):\n"
        "    sys.modules[name] = None\n"
        "from medtransfer.data.images import load_image\n"
        "from medtransfer.errors import MedtransferError\n"
        "try:\n"
        f"    load_image({str(path)!r})\n"
        "except MedtransferError as exc:\n"
        "    print(exc)\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    message = done.stdout.strip()
    assert done.returncode == 0 and "\n" not in message, done.stderr
    assert "MR_small_jpeg_ls_lossless.dcm" in message and "JPEG-LS Lossless" in message
    assert "pip install 'pylibjpeg>=2.0' 'pylibjpeg-libjpeg>=2.1'" in message
    assert "truncated or corrupt" not in message


def test_dicom_without_file_meta_is_one_clear_line():
    with pytest.raises(MedtransferError, match="no_meta.dcm: not a DICOM file with a file meta header"):
        load_image(dicom_file("no_meta.dcm"))
