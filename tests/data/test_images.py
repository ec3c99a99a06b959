"""Decoding: 8/16-bit PNG, odd shapes, truncated files, DICOM with VOI LUT and MONOCHROME1."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.data import get_testdata_file

from medtransfer.data.frames import frame_locator
from medtransfer.data.images import count_frames, load_image
from medtransfer.errors import MedtransferError


def _png(path, array, mode=None):
    Image.fromarray(array, mode=mode).save(path) if mode else Image.fromarray(array).save(path)
    return path


def test_png_8_and_16_bit_scale_to_unit_range(tmp_path):
    gray = np.arange(64 * 64, dtype=np.uint16).reshape(64, 64)
    eight = load_image(_png(tmp_path / "a.png", (gray % 256).astype(np.uint8)))
    assert eight.dtype == np.float32 and eight.shape == (64, 64) and eight.max() == 1.0
    sixteen = load_image(_png(tmp_path / "b.png", gray * 16))
    assert sixteen.shape == (64, 64)
    np.testing.assert_allclose(sixteen, gray * 16 / 65535.0, atol=1e-6)


def test_truncated_png_names_the_file(tmp_path):
    path = _png(tmp_path / "t.png", np.random.default_rng(0).integers(0, 255, (64, 64), dtype=np.uint8))
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(MedtransferError, match="t.png"):
        load_image(path)


def test_not_an_image_names_the_file(tmp_path):
    path = tmp_path / "x.png"
    path.write_text("hello")
    with pytest.raises(MedtransferError, match="x.png"):
        load_image(path)


def test_four_channels_opaque_is_rgb_transparent_is_an_error(tmp_path):
    rgba = np.full((32, 32, 4), 200, dtype=np.uint8)
    rgba[..., 3] = 255
    assert load_image(_png(tmp_path / "opaque.png", rgba)).shape == (32, 32, 3)
    rgba[0, 0, 3] = 0
    with pytest.raises(MedtransferError, match="transparen.*see-through.png|see-through.png.*alpha"):
        load_image(_png(tmp_path / "see-through.png", rgba))


def test_one_pixel_image_is_degenerate(tmp_path):
    with pytest.raises(MedtransferError, match="degenerate.*one.png|one.png.*degenerate"):
        load_image(_png(tmp_path / "one.png", np.zeros((1, 1), dtype=np.uint8)))


def test_multi_frame_tiff_is_a_volume(tmp_path):
    frames = [Image.fromarray(np.full((16, 16), i * 40, dtype=np.uint8)) for i in range(3)]
    path = tmp_path / "vol.tif"
    frames[0].save(path, save_all=True, append_images=frames[1:])
    with pytest.raises(MedtransferError, match="vol.tif.*volume"):
        load_image(path)


@pytest.mark.parametrize("name", ["CT_small.dcm", "MR_small.dcm"])
def test_dicom_test_files(name):
    image = load_image(get_testdata_file(name))
    assert image.ndim == 2 and image.dtype == np.float32
    assert image.min() == 0.0 and image.max() == 1.0


def test_dicom_monochrome1_is_inverted(tmp_path):
    dataset = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    original = load_image(get_testdata_file("CT_small.dcm"))
    dataset.PhotometricInterpretation = "MONOCHROME1"
    path = tmp_path / "mono1.dcm"
    dataset.save_as(path)
    np.testing.assert_allclose(load_image(path), 1.0 - original, atol=1e-6)


def test_dicom_voi_window_is_applied(tmp_path):
    dataset = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    full = load_image(get_testdata_file("CT_small.dcm"))
    hu = dataset.pixel_array * float(dataset.RescaleSlope) + float(dataset.RescaleIntercept)
    dataset.WindowCenter, dataset.WindowWidth = float(np.median(hu)), 50.0
    path = tmp_path / "windowed.dcm"
    dataset.save_as(path)
    windowed = load_image(path)
    assert windowed.shape == full.shape
    # a narrow window saturates most pixels at 0 or 1
    assert ((windowed == 0) | (windowed == 1)).mean() > 0.5 > ((full == 0) | (full == 1)).mean()


def test_multi_frame_dicom_is_a_volume(tmp_path):
    dataset = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    frames = np.stack([dataset.pixel_array] * 3)
    dataset.PixelData = frames.tobytes()
    dataset.NumberOfFrames = 3
    path = tmp_path / "multi.dcm"
    dataset.save_as(path)
    with pytest.raises(MedtransferError, match="multi.dcm.*3-frame"):
        load_image(path)


def test_truncated_dicom_names_the_file(tmp_path):
    path = tmp_path / "cut.dcm"
    data = Path(get_testdata_file("CT_small.dcm")).read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(MedtransferError, match="cut.dcm"):
        load_image(path)


def test_multi_page_tiff_frames_by_locator(tmp_path):
    frames = [Image.fromarray(np.tile(np.arange(16, dtype=np.uint8) * (i + 1), (16, 1))) for i in range(3)]
    path = tmp_path / "vol.tif"
    frames[0].save(path, save_all=True, append_images=frames[1:])
    assert count_frames(path) == 3
    with pytest.raises(MedtransferError, match="vol.tif has 3 frames.*--frames first\\|middle"):
        load_image(path)
    for k in range(3):
        np.testing.assert_allclose(load_image(frame_locator(path, k)), np.asarray(frames[k]) / 255.0, atol=1e-6)
    with pytest.raises(MedtransferError, match="frame 3 does not exist"):
        load_image(frame_locator(path, 3))


def test_multi_frame_dicom_frames_by_locator(tmp_path):
    dataset = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    frames = np.stack([np.roll(dataset.pixel_array, 8 * k, axis=1) for k in range(3)])
    dataset.PixelData = frames.tobytes()
    dataset.NumberOfFrames = 3
    path = tmp_path / "multi.dcm"
    dataset.save_as(path)
    assert count_frames(path) == 3
    decoded = [load_image(frame_locator(path, k)) for k in range(3)]
    np.testing.assert_allclose(decoded[1], np.roll(decoded[0], 8, axis=1), atol=1e-6)


def test_float_tiff_with_inf_is_scaled_over_finite_values(tmp_path):
    values = np.linspace(-5.0, 5.0, 32 * 32, dtype=np.float32).reshape(32, 32)
    values[0, 0], values[0, 1], values[0, 2] = np.inf, -np.inf, np.nan
    path = tmp_path / "float.tif"
    Image.fromarray(values, mode="F").save(path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no raw RuntimeWarnings
        image = load_image(path)
    finite = np.isfinite(values)
    expected = (values[finite] + 5.0) / 10.0
    np.testing.assert_allclose(image[finite], (expected - expected.min()) / (expected.max() - expected.min()),
                               atol=1e-5)
    assert image[0, 0] == 1.0 and image[0, 1] == 0.0 and image[0, 2] == 0.0
    assert 0.45 < image.mean() < 0.55  # not a black image


def test_float_tiff_without_finite_values_is_refused(tmp_path):
    path = tmp_path / "nan.tif"
    Image.fromarray(np.full((8, 8), np.nan, dtype=np.float32), mode="F").save(path)
    with pytest.raises(MedtransferError, match="nan.tif has no finite pixel value"):
        load_image(path)
