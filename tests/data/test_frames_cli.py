"""--frames end to end through the CLI: splits, extract (with a pixel cache), probe and adapt on multi-frame DICOMs."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pydicom
import pytest
import zarr
from pydicom.data import get_testdata_file

from medtransfer.testing.backbones import TINY_CNN, register_tiny_backbones

register_tiny_backbones()
N_FILES, N_FRAMES = 12, 3


@pytest.fixture(scope="module")
def cine_manifest(tmp_path_factory):
    """12 three-frame DICOMs (frames differ), one patient each, labels alternating."""
    folder = tmp_path_factory.mktemp("cine")
    template = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    base = template.pixel_array.copy()
    rng = np.random.default_rng(0)
    rows = []
    for i in range(N_FILES):
        frames = np.stack([np.roll(base, int(rng.integers(0, 64)), axis=k % 2)
                           for k in range(N_FRAMES)])
        template.PixelData, template.NumberOfFrames = frames.tobytes(), N_FRAMES
        template.save_as(folder / f"cine{i}.dcm")
        rows.append({"image": f"cine{i}.dcm", "label": i % 2})
    pd.DataFrame(rows).to_csv(folder / "manifest.csv", index=False)
    return folder / "manifest.csv"


def test_default_policy_refuses_with_the_hint(cine_manifest, tmp_path, cli):
    result = cli("extract", cine_manifest, "--backbone", TINY_CNN, "--weights", "random",
                 "--store", tmp_path / "f.zarr")
    assert result.exit_code == 2
    assert "3-frame DICOM" in result.stderr and "--frames" in result.stderr and "Traceback" not in result.output


def test_frames_all_every_frame_is_a_row_everywhere(cine_manifest, tmp_path, cli):
    common = ("--frames", "all")
    result = cli("splits", cine_manifest, "--folds", "2", "--val-fraction", "0.5", "--out", tmp_path / "splits.json",
                 *common)
    assert result.exit_code == 0, result.output
    for fold in json.loads((tmp_path / "splits.json").read_text())["folds"]:
        roles = {role: {i.split("#")[0] for i in fold[role]} for role in ("train", "val", "test")}
        assert sum(len(files) for files in roles.values()) == N_FILES  # the frames of a file share one role
    result = cli("extract", cine_manifest, "--backbone", TINY_CNN, "--weights", "random", "--store",
                 tmp_path / "f.zarr", "--pixel-cache", tmp_path / "pixels.zarr", *common)
    assert result.exit_code == 0, result.output
    (key,) = list(zarr.open_group(str(tmp_path / "f.zarr"), mode="r").group_keys())
    group = zarr.open_group(str(tmp_path / "f.zarr"), mode="r")[key]
    ids = [str(i) for i in group["sample_id"][:]]
    assert ids == [f"cine{i}.dcm#f{k:04d}" for i in range(N_FILES) for k in range(N_FRAMES)]
    assert len({str(s) for s in group["image_sha"][:]}) == N_FILES * N_FRAMES  # one content key per frame
    features = np.asarray(group["features"][:], dtype=np.float32)
    assert not np.allclose(features[0], features[1])  # frames of one file are different images
    result = cli("probe", "--store", tmp_path / "f.zarr", "--splits", tmp_path / "splits.json", "--backbone",
                 TINY_CNN, "--head", "centroid", "--out", tmp_path / "results")
    assert result.exit_code == 0, result.output
    assert set(pd.read_parquet(tmp_path / "results" / "results.parquet")["n_test"]) == {18}  # 6 files x 3 frames
    result = cli("adapt", cine_manifest, "--splits", tmp_path / "splits.json", "--backbone", TINY_CNN,
                 "--method", "lp", "--weights", "random", "--epochs", "1", "--regime", "full", "--folds", "0",
                 "--pixel-cache", tmp_path / "pixels.zarr", "--out", tmp_path / "results", *common)
    assert result.exit_code == 0, result.output
    # without the same policy the splits file is another manifest's
    result = cli("adapt", cine_manifest, "--splits", tmp_path / "splits.json", "--backbone", TINY_CNN,
                 "--method", "lp", "--weights", "random", "--out", tmp_path / "other")
    assert result.exit_code == 2 and "another manifest" in result.stderr


def test_frames_middle_keeps_ids(cine_manifest, tmp_path, cli):
    result = cli("extract", cine_manifest, "--backbone", TINY_CNN, "--weights", "random", "--store",
                 tmp_path / "f.zarr", "--frames", "middle")
    assert result.exit_code == 0, result.output
    group = next(iter(zarr.open_group(str(tmp_path / "f.zarr"), mode="r").groups()))[1]
    assert [str(i) for i in group["sample_id"][:]] == [f"cine{i}.dcm" for i in range(N_FILES)]
    assert all(str(p).endswith("#f0001") for p in group["image_path"][:])
