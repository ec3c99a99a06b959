"""Issue 17.1: one undecodable image never invalidates other rows. A complete store of 40 rows (one partial
chunk, reopened by an append) meets each kind of bad image: the 40 rows stay valid, and the corrected manifest
(the image dropped, or fixed) finishes the store cleanly."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from PIL import Image

from extract_support import TINY, extract_kwargs, make_images, write_manifest
from medtransfer import cache_schema
from medtransfer.errors import MedtransferError
from medtransfer.extract import extract_features

N_OLD = 40
KWARGS = extract_kwargs(chunk_rows=256)  # the default: 40 rows are one partial chunk that an append reopens


@pytest.fixture(autouse=True)
def _tiny(tiny_backbones):
    return tiny_backbones


@pytest.fixture(scope="module")
def complete_store(tmp_path_factory):
    from extract_support import tiny_specs
    from medtransfer.backbones import REGISTRY

    folder = tmp_path_factory.mktemp("bad-images")
    images = make_images(folder / "img", N_OLD)
    manifest = write_manifest(folder / "m.csv", images)
    with pytest.MonkeyPatch.context() as patch:
        for spec in tiny_specs():
            patch.setitem(REGISTRY, spec.name, spec)
        key = extract_features(manifest, TINY, folder / "s.zarr", **KWARGS).group_key
    return folder, images, key


def _dicom_without_decoder(path):
    """A DICOM file whose transfer syntax (MPEG2) no installed decoder handles."""
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.encaps import encapsulate
    from pydicom.uid import UID, generate_uid

    meta = FileMetaDataset()
    meta.TransferSyntaxUID = UID("1.2.840.10008.1.2.4.100")  # MPEG2 Main Profile / Main Level
    meta.MediaStorageSOPClassUID = UID("1.2.840.10008.5.1.4.1.1.7")
    meta.MediaStorageSOPInstanceUID = generate_uid()
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.Rows, ds.Columns, ds.SamplesPerPixel, ds.BitsAllocated, ds.BitsStored, ds.HighBit = 8, 8, 1, 8, 8, 7
    ds.PhotometricInterpretation, ds.PixelRepresentation = "MONOCHROME2", 0
    ds.PixelData = encapsulate([b"\x00\x00\x01\xb3" + b"\x00" * 60])
    ds["PixelData"].VR = "OB"
    ds.save_as(str(path), enforce_file_format=True)


def _make_bad(kind: str, folder, good, monkeypatch):
    if kind == "zero-byte":
        (path := folder / "bad.png").write_bytes(b"")
    elif kind == "truncated":
        (path := folder / "bad.png").write_bytes(good.read_bytes()[:100])
    elif kind == "1x1":
        Image.fromarray(np.zeros((1, 1), np.uint8)).save(path := folder / "bad.png")
    elif kind == "bomb":  # over twice Pillow's pixel limit (lowered here so the file stays tiny)
        monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1700)
        Image.fromarray(np.zeros((100, 100), np.uint8)).save(path := folder / "bad.png")
    elif kind == "alpha":
        rgba = np.zeros((40, 40, 4), np.uint8)
        rgba[..., 3] = 128
        Image.fromarray(rgba).save(path := folder / "bad.png")
    elif kind == "gif":  # an animated GIF: several frames
        frames = [Image.fromarray(np.full((40, 40), v, np.uint8)) for v in (0, 255)]
        frames[0].save(path := folder / "bad.gif", save_all=True, append_images=frames[1:])
    else:
        _dicom_without_decoder(path := folder / "bad.dcm")
    return path


@pytest.mark.parametrize("kind", ["zero-byte", "truncated", "1x1", "bomb", "alpha", "gif", "dicom-no-decoder"])
def test_a_bad_image_leaves_the_old_rows_valid_and_a_corrected_manifest_finishes(complete_store, tmp_path, kind,
                                                                                   monkeypatch):
    folder, images, key = complete_store
    store = tmp_path / "s.zarr"
    shutil.copytree(folder / "s.zarr", store)
    before = cache_schema.read_features(store, key)
    bad = _make_bad(kind, tmp_path, images[0], monkeypatch)
    with pytest.raises(MedtransferError, match=bad.name):
        extract_features(write_manifest(tmp_path / "bad.csv", [*images, bad]), TINY, store, **KWARGS)
    after = cache_schema.read_features(store, key)
    assert after.sample_ids == before.sample_ids and len(after.sample_ids) == N_OLD
    np.testing.assert_array_equal(after.features, before.features)
    assert [info.n_valid for info in cache_schema.list_groups(store)] == [N_OLD]
    # the image dropped: nothing to compute, the store is complete again
    dropped = extract_features(write_manifest(tmp_path / "fixed.csv", images), TINY, store, **KWARGS)
    assert dropped.n_computed == 0 and cache_schema.verify_store(store) == []
    # the image fixed (a good file in its place): exactly that row is computed
    good = tmp_path / "good.png"
    shutil.copy(images[1], good)
    fixed = extract_features(write_manifest(tmp_path / "good.csv", [*images, good]), TINY, store, **KWARGS)
    assert fixed.n_computed == 0 and fixed.n_copied == 1  # same content as images[1]: copied
    assert cache_schema.verify_store(store) == []
    assert len(cache_schema.read_features(store, key).sample_ids) == N_OLD + 1
