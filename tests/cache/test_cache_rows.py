"""Row planning without a model or a store: resume, reuse by content, refresh, reopened chunks, id clashes;
then the one chunked-rows writer applied to a real group (feature store) and the pixel cache's sizes."""

from __future__ import annotations

import numpy as np
import pytest

from medtransfer import cache_rows, cache_schema
from medtransfer.cache_rows import Images, RowIndex, plan_rows, stale_rows
from medtransfer.extract.pixels import PixelCacheFolder, fill_pixel_cache


def index(keys, shas, done, chunk_rows=4, paths=None) -> RowIndex:
    return RowIndex(keys=np.asarray(list(keys), dtype=str), shas=np.asarray(list(shas), dtype=str),
                    paths=np.asarray(paths or [f"{k}.png" for k in keys], dtype=str),
                    done=np.asarray(done, dtype=bool), chunk_rows=chunk_rows)


def images(keys, shas, paths=None) -> Images:
    return Images(keys=list(keys), shas=list(shas), paths=list(paths or [f"{k}.png" for k in keys]))


EMPTY = index([], [], [])


def test_empty_store_computes_everything_in_chunks():
    plan = plan_rows(EMPTY, images("abcdef", "ABCDEF"))
    assert [key for key, _, _ in plan.append] == list("abcdef")
    assert plan.pending == [0, 1] and plan.compute == list(range(6)) and not plan.copy and not plan.keep
    assert list(plan.chunk_range(1)) == [4, 5] and plan.n_after == 6


def test_complete_store_plans_nothing():
    held = index("abcdef", "ABCDEF", [True, True])
    plan = plan_rows(held, images("abcdef", "ABCDEF"))
    assert (plan.append, plan.refresh, plan.pending, plan.compute, plan.copy) == ([], {}, [], [], {})


def test_interrupted_run_resumes_at_the_unflagged_chunk():
    held = index("abcdefghij", "ABCDEFGHIJ", [True, False, False])
    plan = plan_rows(held, images("abcdefghij", "ABCDEFGHIJ"))
    assert plan.append == [] and plan.pending == [1, 2] and plan.compute == [4, 5, 6, 7, 8, 9]


def test_another_study_sharing_images_copies_rows_by_content():
    held = index("abcd", "ABCD", [True])
    plan = plan_rows(held, images(["s2-0", "s2-1", "s2-2"], ["B", "D", "Z"]))
    assert [key for key, _, _ in plan.append] == ["s2-0", "s2-1", "s2-2"]
    assert plan.copy == {4: 1, 5: 3} and plan.compute == [6] and plan.pending == [1]


def test_new_images_reopen_the_partial_last_chunk_and_keep_its_rows():
    held = index("abcdef", "ABCDEF", [True, True])
    plan = plan_rows(held, images("abcdefg", "ABCDEFG"))
    assert plan.keep == [4, 5] and plan.pending == [1] and plan.compute == [6] and not plan.copy
    undone = index("abcdef", "ABCDEF", [True, False])  # the partial chunk was never done: nothing to keep
    assert plan_rows(undone, images("abcdefg", "ABCDEFG")).keep == []


def test_changed_image_gets_a_new_row_pending_row_is_repointed():
    held = index("abcdefgh", "ABCDEFGH", [True, False])
    plan = plan_rows(held, images("abcdefgh", ["A2", "B", "C", "D", "E", "F2", "G", "H"]))
    assert plan.append == [("a", "A2", "a.png")]  # valid row, other content: a new row (the last one wins)
    assert plan.refresh == {5: ("F2", "f.png")}  # pending row: re-pointed at the image as it is now
    assert plan.clashes == []


def test_same_id_from_another_file_with_other_content_is_a_clash():
    held = index("ab", "AB", [True], paths=["/study1/a.png", "/study1/b.png"])
    plan = plan_rows(held, images("ab", ["X", "B"], ["/study2/a.png", "/study1/b.png"]))
    assert plan.clashes == [("a", "/study1/a.png")]


def test_pending_rows_of_another_manifest_are_rehashed_and_duplicates_appended_once():
    held = index(["old0", "old1", "old2", "old3", "x"], ["O0", "O1", "O2", "O3", "X"], [True, False])
    assert stale_rows(held, ["a"]) == [4]
    plan = plan_rows(held, images(["a", "a"], ["A", "A"]), rehashed={4: "X2"})
    assert plan.refresh == {4: ("X2", "x.png")} and plan.append == [("a", "A", "a.png")]
    assert plan.pending == [1] and plan.compute == [4, 5]


def test_pixel_cache_keys_rows_by_content():
    held = index(["A", "B"], ["A", "B"], [True], chunk_rows=16)
    plan = plan_rows(held, Images(keys=["B", "C", "C"], shas=["B", "C", "C"], paths=["b", "c", "c2"]))
    assert plan.append == [("C", "C", "c")] and plan.keep == [0, 1] and plan.compute == [2]


def test_apply_plan_then_filler_commits_whole_chunks_in_order(tmp_path):
    with cache_schema.open_store(tmp_path / "s.zarr", "a") as store:
        group = cache_schema.create_group(store, "g", {"features": 2}, {}, chunk_rows=2)
        first = plan_rows(cache_schema.row_index(group), images("abc", "ABC"))
        ready = cache_schema.apply_plan(group, first)
        assert ready == {} and group.attrs["n"] == 0  # new rows are appended only with their data
        commits = []
        plans = [first]

        def commit(chunk, data):
            commits.append(chunk)
            cache_schema.write_chunk(group, chunk, data, plan=plans[-1])

        filler = cache_rows.ChunkFiller(first, ready, commit)
        filler.add(2, {"features": np.full(2, 2.0)})
        filler.flush()
        assert commits == []  # chunk 1 is complete but chunk 0 is not: chunks commit in order
        for row in (0, 1):
            filler.add(row, {"features": np.full(2, float(row))})
        filler.finish("g")
        assert commits == [0, 1]
        second = plan_rows(cache_schema.row_index(group), images("abcd", "ABCA"))
        assert second.keep == [2] and second.copy == {3: 0} and second.compute == []
        plans.append(second)
        filler = cache_rows.ChunkFiller(second, cache_schema.apply_plan(group, second), commit)
        filler.finish("g")
        assert commits == [0, 1, 1]
    features = cache_schema.read_features(tmp_path / "s.zarr", "g")
    np.testing.assert_array_equal(features.rows_for(list("abcd"))[:, 0], [0.0, 1.0, 2.0, 0.0])


def test_filler_refuses_to_finish_with_chunks_left():
    filler = cache_rows.ChunkFiller(plan_rows(EMPTY, images("ab", "AB")), {}, lambda chunk, data: None)
    with pytest.raises(Exception, match="left unwritten"):
        filler.finish("g")


def test_pixel_cache_folder_says_which_sizes_it_holds(tmp_path):
    from extract_support import make_images

    paths = [str(p) for p in make_images(tmp_path / "img", 3)]
    fill_pixel_cache(tmp_path / "p.zarr", paths, size=16, dtype="uint8", progress=False)
    fill_pixel_cache(tmp_path / "p.zarr", paths, size=8, progress=False)
    folder = PixelCacheFolder(tmp_path / "p.zarr")
    assert folder.sizes() == [8, 16]
    assert folder.open(16).dtype == "uint8" and len(folder.open(8).index) == 3
