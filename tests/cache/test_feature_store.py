"""The feature store: idempotent, incremental, reused by content, resumable, safe; Zarr and HDF5 alike."""

from __future__ import annotations

import errno
import subprocess
import sys

import numpy as np
import pytest
import zarr

from extract_support import NAN, TINY, extract_kwargs, make_images, write_manifest
from medtransfer import cache_schema, cache_store
from medtransfer.errors import MedtransferError
from medtransfer.extract import extract_features

FORMATS = ["zarr.zarr", "hdf5.h5"]


@pytest.fixture(autouse=True)
def _tiny(tiny_backbones):
    return tiny_backbones


@pytest.fixture
def data(tmp_path):
    images = make_images(tmp_path / "img", 10)
    return tmp_path, images, write_manifest(tmp_path / "m.csv", images)


@pytest.mark.parametrize("store_name", FORMATS)
def test_rerun_computes_nothing(data, store_name):
    tmp, images, manifest = data
    store = tmp / store_name
    first = extract_features(manifest, TINY, store, **extract_kwargs())
    assert first.n_computed == 10 and first.store_format == store_name.split(".")[0]
    before = cache_schema.read_features(store, first.group_key)
    again = extract_features(manifest, TINY, store, **extract_kwargs())
    assert (again.n_computed, again.n_copied, again.group_key) == (0, 0, first.group_key)
    after = cache_schema.read_features(store, first.group_key)
    assert after.sample_ids == before.sample_ids == [p.stem for p in images]
    np.testing.assert_array_equal(after.features, before.features)
    assert cache_schema.find_group(store, TINY, "random") == first.group_key
    assert cache_schema.verify_store(store) == []


def test_hdf5_and_zarr_hold_the_same_features(data):
    tmp, _, manifest = data
    z = extract_features(manifest, TINY, tmp / "s.zarr", **extract_kwargs())
    h = extract_features(manifest, TINY, tmp / "s.h5", **extract_kwargs())
    assert z.group_key == h.group_key
    fz = cache_schema.read_features(tmp / "s.zarr", z.group_key)
    fh = cache_schema.read_features(tmp / "s.h5", h.group_key)
    assert fz.sample_ids == fh.sample_ids and fz.image_sha == fh.image_sha
    np.testing.assert_array_equal(fz.features, fh.features)
    info_z, info_h = cache_schema.store_info(tmp / "s.zarr"), cache_schema.store_info(tmp / "s.h5")
    strip = [{k: v for k, v in i.items() if k != "bytes_on_disk"} for i in (info_z[0], info_h[0])]
    assert strip[0] == strip[1] and strip[0]["complete"] and strip[0]["n"] == 10
    # --format hdf5 with a suffix-less path
    explicit = extract_features(manifest, TINY, tmp / "plain", fmt="hdf5", **extract_kwargs())
    assert explicit.store_format == "hdf5" and (tmp / "plain").is_file()
    assert cache_store.store_format(tmp / "plain") == "hdf5"


@pytest.mark.parametrize("store_name", FORMATS)
def test_crash_mid_run_resumes_recomputing_at_most_one_chunk(data, store_name, monkeypatch):
    tmp, _, manifest = data
    reference = extract_features(manifest, TINY, tmp / f"ref-{store_name}", **extract_kwargs())
    store = tmp / store_name
    real_write = cache_schema.write_chunk
    calls = []

    def crashing_write(group, chunk, arrays, where="", **kwargs):
        calls.append(chunk)
        if len(calls) == 2:  # dies while writing the second chunk, before its flag
            raise KeyboardInterrupt("killed")
        real_write(group, chunk, arrays, where, **kwargs)

    monkeypatch.setattr(cache_schema, "write_chunk", crashing_write)
    with pytest.raises(KeyboardInterrupt):
        extract_features(manifest, TINY, store, **extract_kwargs())
    monkeypatch.setattr(cache_schema, "write_chunk", real_write)
    partial = cache_schema.read_features(store, reference.group_key)
    assert len(partial.sample_ids) == 4  # only the done chunk is read back, never the unflagged one
    with pytest.raises(MedtransferError, match="incomplete"):
        cache_schema.find_group(store, TINY)
    assert any(p.kind == "incomplete" for p in cache_schema.verify_store(store))
    resumed = extract_features(manifest, TINY, store, **extract_kwargs())
    assert resumed.n_computed == 6
    done = cache_schema.read_features(store, reference.group_key)
    np.testing.assert_array_equal(done.features,
                                  cache_schema.read_features(tmp / f"ref-{store_name}", reference.group_key).features)
    assert cache_schema.verify_store(store) == []


@pytest.mark.parametrize("store_name", FORMATS)
def test_new_images_compute_only_new_rows_and_other_studies_reuse_by_content(data, store_name):
    tmp, images, manifest = data
    store = tmp / store_name
    first = extract_features(manifest, TINY, store, **extract_kwargs())
    more = images + make_images(tmp / "img", 5, seed=1, prefix="new")
    grown = extract_features(write_manifest(tmp / "m2.csv", more), TINY, store, **extract_kwargs())
    assert grown.n_computed == 5 and grown.group_key == first.group_key
    features = cache_schema.read_features(store, first.group_key)
    assert len(features.sample_ids) == 15
    # another study: other folder, other ids, same bytes for 6 images + 2 of its own
    other = tmp / "other"
    other.mkdir()
    copies = []
    for i, src in enumerate(more[:6]):
        dst = other / f"case-{i}.png"
        dst.write_bytes(src.read_bytes())
        copies.append(dst)
    copies += make_images(other, 2, seed=7, prefix="own")
    ids = [f"study2-{i}" for i in range(len(copies))]
    reused = extract_features(write_manifest(tmp / "study2.csv", copies, ids), TINY, store, **extract_kwargs())
    assert (reused.n_computed, reused.n_copied) == (2, 6)
    both = cache_schema.read_features(store, first.group_key)
    np.testing.assert_array_equal(both.rows_for(ids[:6]), both.rows_for([p.stem for p in more[:6]]))
    fresh = extract_features(write_manifest(tmp / "s2.csv", copies, ids), TINY, tmp / f"fresh-{store_name}",
                             **extract_kwargs())
    np.testing.assert_allclose(both.rows_for(ids), cache_schema.read_features(
        tmp / f"fresh-{store_name}", fresh.group_key).rows_for(ids), atol=1e-3)
    assert cache_schema.verify_store(store) == []


def test_changed_image_gets_a_new_row_and_verify_notices_the_change(data):
    tmp, images, manifest = data
    store = tmp / "s.zarr"
    key = extract_features(manifest, TINY, store, **extract_kwargs()).group_key
    images[0].write_bytes(images[5].read_bytes())
    problems = cache_schema.verify_store(store)
    assert [p.kind for p in problems] == ["fingerprint"] and images[0].stem in problems[0].message
    result = extract_features(manifest, TINY, store, **extract_kwargs())
    assert result.n_copied == 1 and result.n_computed == 0  # same content as image 5: copied
    features = cache_schema.read_features(store, key)
    np.testing.assert_array_equal(features.rows_for([images[0].stem]), features.rows_for([images[5].stem]))


def test_verify_catches_a_nan_row_and_an_unflagged_chunk(data):
    tmp, _, manifest = data
    store = tmp / "s.zarr"
    key = extract_features(manifest, TINY, store, **extract_kwargs()).group_key
    group = zarr.open_group(str(store / key), mode="r+")
    group["features"][6, 3] = np.nan
    group["chunk_done"][2] = False
    kinds = sorted(p.kind for p in cache_schema.verify_store(store))
    assert kinds == ["incomplete", "nonfinite"]
    message = next(p.message for p in cache_schema.verify_store(store) if p.kind == "nonfinite")
    assert "row 6" in message


def test_nan_from_the_backbone_names_the_image_and_leaves_the_store_valid(tmp_path):
    images = make_images(tmp_path / "img", 6)
    from PIL import Image

    Image.fromarray(np.full((40, 40), 255, dtype=np.uint8)).save(images[5])  # bright -> NaN in this model
    manifest = write_manifest(tmp_path / "m.csv", images)
    store = tmp_path / "s.zarr"
    with pytest.raises(MedtransferError, match=f"NaN.*{images[5].name}"):
        extract_features(manifest, NAN, store, **extract_kwargs())
    assert [p.kind for p in cache_schema.verify_store(store)] == ["incomplete"]
    key = cache_schema.list_groups(store)[0].key
    assert len(cache_schema.read_features(store, key).sample_ids) == 4


def test_bad_image_mid_run_names_it_and_the_store_resumes(tmp_path):
    images = make_images(tmp_path / "img", 10)
    good = images[6].read_bytes()
    images[6].write_bytes(good[:100])
    manifest = write_manifest(tmp_path / "m.csv", images)
    store = tmp_path / "s.h5"
    with pytest.raises(MedtransferError, match=rf"manifest m.csv, row 8: .*{images[6].name}.*left valid"):
        extract_features(manifest, TINY, store, **extract_kwargs())
    images[6].write_bytes(good)
    resumed = extract_features(manifest, TINY, store, **extract_kwargs())
    assert (resumed.n_computed, resumed.backbone) == (6, TINY)
    assert cache_schema.verify_store(store) == []


def test_second_writer_stops_with_a_clear_error(data):
    tmp, _, manifest = data
    store = tmp / "s.zarr"
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import sys, time\nfrom medtransfer.cache_store import writer_lock\n"
         f"with writer_lock({str(store)!r}):\n    print('locked', flush=True)\n    sys.stdin.readline()\n"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(MedtransferError, match=rf"being written by pid {holder.pid}"):
            extract_features(manifest, TINY, store, **extract_kwargs())
    finally:
        holder.communicate("done\n", timeout=30)
    assert extract_features(manifest, TINY, store, **extract_kwargs()).n_computed == 10


def test_older_schema_and_foreign_folders_get_a_clear_message(tmp_path):
    old = zarr.open_group(str(tmp_path / "old.zarr"), mode="w")
    old.attrs["schema"] = "medtransfer.features/1"
    old.create_group("resnet18__random__224-00000000")
    with pytest.raises(MedtransferError, match="features/1.*re-extract|Re-extract"):
        cache_schema.list_groups(tmp_path / "old.zarr")
    zarr.open_group(str(tmp_path / "foreign.zarr"), mode="w").create_group("x")
    with pytest.raises(MedtransferError, match="not a medtransfer feature store"):
        cache_schema.open_store(tmp_path / "foreign.zarr", "a")
    with pytest.raises(MedtransferError, match="not found"):
        cache_schema.read_features(tmp_path / "absent.zarr", "k")


def test_missing_embedding_variant_is_a_clear_error(data):
    tmp, _, manifest = data
    key = extract_features(manifest, TINY, tmp / "s.zarr", **extract_kwargs()).group_key
    assert cache_schema.read_features(tmp / "s.zarr", key, embedding=None).features.shape == (10, 16)
    with pytest.raises(MedtransferError, match="no 'cls' embedding"):
        cache_schema.read_features(tmp / "s.zarr", key, embedding="cls")
    with pytest.raises(MedtransferError, match="unknown embedding"):
        cache_schema.read_features(tmp / "s.zarr", key, embedding="pooled")


def test_plain_zarr_reads_the_layout(data):
    tmp, images, manifest = data
    key = extract_features(manifest, TINY, tmp / "s.zarr", **extract_kwargs()).group_key
    root = zarr.open_group(str(tmp / "s.zarr"), mode="r")
    assert root.attrs["schema"] == cache_schema.SCHEMA
    group = root[key]
    assert group["features"].shape == (10, 16) and group["features"].dtype == np.float16
    assert bool(np.all(group["chunk_done"][:])) and group.attrs["complete"]
    assert list(group["sample_id"][:]) == [p.stem for p in images]


@pytest.mark.parametrize("store_name", FORMATS)
def test_full_disk_names_the_store_and_the_run_resumes(data, store_name, monkeypatch):
    tmp, _, manifest = data
    store = tmp / store_name
    real = cache_schema.store_rows
    calls = []

    def disk_full(group, name, start, values):
        calls.append(start)
        if len(calls) == 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        real(group, name, start, values)

    monkeypatch.setattr(cache_schema, "store_rows", disk_full)
    with pytest.raises(MedtransferError, match=f"cannot write to store {store}: the disk is full"):
        extract_features(manifest, TINY, store, **extract_kwargs())
    monkeypatch.setattr(cache_schema, "store_rows", real)
    assert [p.kind for p in cache_schema.verify_store(store)] == ["incomplete"]
    assert extract_features(manifest, TINY, store, **extract_kwargs()).n_computed == 6
    assert cache_schema.verify_store(store) == []


KILL_SCRIPT = """
import sys, time, torch
sys.path.insert(0, {tests!r})
import extract_support as fx
from medtransfer.backbones import register
class Slow(fx.TinyCNN):
    def forward(self, x):
        time.sleep(0.15)
        return super().forward(x)
register(fx._spec("tiny-test-slow", lambda pretrained: Slow()))
from medtransfer import cache_schema
real = cache_schema.write_chunk
def tell(group, chunk, arrays, where="", **kwargs):
    real(group, chunk, arrays, where, **kwargs)
    open({marker!r}, "a").write("x")
cache_schema.write_chunk = tell
from medtransfer.extract import extract_features
extract_features({manifest!r}, "tiny-test-slow", {store!r}, **fx.extract_kwargs())
"""


@pytest.mark.parametrize("store_name", FORMATS)
def test_sigkill_mid_run_then_resume(tmp_path, store_name, monkeypatch):
    import os
    import signal
    import time
    from pathlib import Path

    from extract_support import TinyCNN, _spec
    from medtransfer.backbones import REGISTRY

    images = make_images(tmp_path / "img", 40)
    manifest = write_manifest(tmp_path / "m.csv", images)
    store = tmp_path / store_name
    marker = tmp_path / "chunks-written"
    script = KILL_SCRIPT.format(tests=str(Path(__file__).parents[1]), manifest=str(manifest), store=str(store),
                                marker=str(marker))
    child = subprocess.Popen([sys.executable, "-c", script])
    deadline = time.time() + 60
    try:
        while time.time() < deadline:
            time.sleep(0.02)
            if marker.exists() and len(marker.read_text()) >= 2:
                break
        os.kill(child.pid, signal.SIGKILL)
    finally:
        child.wait(30)
    monkeypatch.setitem(REGISTRY, "tiny-test-slow", _spec("tiny-test-slow", lambda pretrained: TinyCNN()))
    resumed = extract_features(manifest, "tiny-test-slow", store, **extract_kwargs())
    assert 0 < resumed.n_computed <= 32
    assert cache_schema.verify_store(store) == []
    reference = extract_features(manifest, "tiny-test-slow", tmp_path / f"ref-{store_name}", **extract_kwargs())
    np.testing.assert_array_equal(cache_schema.read_features(store, resumed.group_key).features,
                                  cache_schema.read_features(tmp_path / f"ref-{store_name}",
                                                             reference.group_key).features)
