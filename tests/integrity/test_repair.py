"""Issue 10.5 / 17.6: damaged chunks are seen (extract, verify) and `--repair` marks them not done so the next
run recomputes exactly their rows; a group folder whose zarr.json is gone is reported."""

from __future__ import annotations

import numpy as np
import pytest

from extract_support import TINY, extract_kwargs, make_images, write_manifest
from medtransfer import cache_schema
from medtransfer.errors import MedtransferError
from medtransfer.extract import extract_features

KWARGS = extract_kwargs(chunk_rows=4)


@pytest.fixture(autouse=True)
def _tiny(tiny_backbones):
    return tiny_backbones


@pytest.fixture
def extracted(tmp_path):
    manifest = write_manifest(tmp_path / "m.csv", make_images(tmp_path / "img", 10, size=16))
    store = tmp_path / "s.zarr"
    key = extract_features(manifest, TINY, store, **KWARGS).group_key
    return manifest, store, key, cache_schema.read_features(store, key)


@pytest.mark.parametrize(("array", "chunk_file", "recomputed"), [
    ("features", "c/1/0", 4),  # one feature chunk: exactly its 4 rows
    ("features", "c/2/0", 2),  # the partial last chunk
    ("chunk_done", "c/0", 10),  # the flags (one storage chunk holds all): every row
    ("sample_id", "c/0", 10),  # the ids (one storage chunk holds all): every row
])
@pytest.mark.parametrize("how", ["extract", "verify"])
def test_a_truncated_chunk_is_seen_and_repair_recomputes_exactly_its_rows(extracted, array, chunk_file, recomputed,
                                                                           how):
    manifest, store, key, before = extracted
    path = store / key / array / chunk_file
    path.write_bytes(path.read_bytes()[: max(1, path.stat().st_size // 2)])
    assert any(p.kind == "unreadable" for p in cache_schema.verify_store(store))
    with pytest.raises(MedtransferError, match="--repair") as caught:
        extract_features(manifest, TINY, store, **KWARGS)
    assert "\n" not in str(caught.value) and "the rest already" not in str(caught.value)
    if how == "verify":
        cache_schema.verify_store(store, repair=True)
        result = extract_features(manifest, TINY, store, **KWARGS)
    else:
        result = extract_features(manifest, TINY, store, **KWARGS, repair=True)
    assert result.n_computed == recomputed
    assert cache_schema.verify_store(store) == []
    after = cache_schema.read_features(store, key)
    assert sorted(after.sample_ids) == sorted(before.sample_ids)
    order_before, order_after = np.argsort(before.sample_ids), np.argsort(after.sample_ids)
    np.testing.assert_array_equal(after.features[order_after], before.features[order_before])


def test_a_group_without_its_zarr_json_is_reported(extracted):
    _, store, key, _ = extracted
    (store / key / "zarr.json").unlink()
    problems = cache_schema.verify_store(store)
    assert [p.kind for p in problems] == ["layout"] and "zarr.json" in problems[0].message


def test_a_deleted_group_zarr_json_is_refused_by_extract_and_dropped_by_repair(extracted, cli):
    """Issue 29.4: extract raised zarr's ContainsArrayError and wrote an empty zarr.json (every later extract then
    refused the store); `--repair` printed "repaired" and changed nothing. Now extract names the group and the
    repair, leaves the folder as it was; `cache verify --repair` drops the group and says so; extract recomputes."""
    manifest, store, key, before = extracted
    (store / key / "zarr.json").unlink()
    files_before = sorted(p.relative_to(store) for p in store.rglob("*"))
    with pytest.raises(MedtransferError, match=f"group {key} has a folder but no zarr.json.*cache verify .*--repair"):
        extract_features(manifest, TINY, store, **KWARGS)
    assert sorted(p.relative_to(store) for p in store.rglob("*")) == files_before
    result = cli("cache", "verify", store, "--repair")
    assert f"repaired: dropped group {key}" in result.stderr, result.output
    assert not (store / key).exists()
    assert extract_features(manifest, TINY, store, **KWARGS).n_computed == 10
    assert cache_schema.verify_store(store) == []
    after = cache_schema.read_features(store, key)
    np.testing.assert_array_equal(after.features[np.argsort(after.sample_ids)],
                                  before.features[np.argsort(before.sample_ids)])


def _rewrite(store, key, transform):
    import zarr

    group = zarr.open_group(str(store / key), mode="r+")
    values = transform(group["features"][:])
    del group["features"]
    group.create_array("features", data=values, chunks=(4, values.shape[1]))


@pytest.mark.parametrize(("transform", "said"), [
    (lambda x: x.astype("int8"), "is int8 but the group's attributes say float16"),
    (lambda x: x[:, :7], "is 7 wide but the group's attributes say dim 16"),
    (lambda x: x.astype("float64"), "is float64 but the group's attributes say float16"),
])
def test_an_altered_store_is_refused_on_open_and_by_verify(extracted, cli, transform, said):
    """Issue 29.3: features re-cast or re-shaped outside medtransfer were read and `cache verify` said ok."""
    manifest, store, key, _ = extracted
    _rewrite(store, key, transform)
    with pytest.raises(MedtransferError, match=said):
        cache_schema.read_features(store, key)
    with pytest.raises(MedtransferError, match=said):
        extract_features(manifest, TINY, store, **KWARGS)
    problems = cache_schema.verify_store(store)
    assert [p.kind for p in problems] == ["altered"] and said in problems[0].message
    result = cli("cache", "verify", store)
    assert result.exit_code == 1 and said in result.stderr
    result = cli("cache", "verify", store, "--repair")
    assert f"repaired: dropped group {key}" in result.stderr
    assert extract_features(manifest, TINY, store, **KWARGS).n_computed == 10
    assert cache_schema.verify_store(store) == []


def test_uneven_arrays_after_a_killed_append_are_reported_and_repaired(extracted):
    manifest, store, key, _ = extracted
    import zarr

    group = zarr.open_group(str(store / key), mode="r+")
    group["features"].resize((14, group["features"].shape[1]))  # a kill after the data grew, before the ids
    assert any("different lengths" in p.message for p in cache_schema.verify_store(store))
    assert extract_features(manifest, TINY, store, **KWARGS).n_computed == 0
    assert cache_schema.verify_store(store) == []


def test_a_truncated_zstd_chunk_names_store_group_rows_and_the_repair(extracted):
    """Issue 28.4: the message read "RuntimeError: Zstd decompression error"; it says which rows now."""
    _, store, key, _ = extracted
    path = store / key / "features" / "c" / "1" / "0"
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(MedtransferError) as caught:
        cache_schema.read_features(store, key)
    message = str(caught.value)
    assert f"store {store}, group {key}: rows 4-7 of array features cannot be read" in message
    assert f"cache verify {store} --repair" in message and "\n" not in message
