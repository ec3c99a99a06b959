import pandas as pd
import pytest

from medtransfer.data.manifest import load_manifest
from medtransfer.errors import MedtransferError


def _write(tmp_path, rows, name="m.csv"):
    path = tmp_path / name
    frame = pd.DataFrame(rows)
    if name.endswith(".parquet"):
        frame.to_parquet(path)
    else:
        frame.to_csv(path, index=False)
    return path


def test_defaults_relative_paths_and_parquet(tmp_path, small_manifest):
    table = pd.read_csv(small_manifest)[["image", "label"]]
    table["image"] = [str(small_manifest.parent / p) for p in table["image"]]  # absolute paths work too
    path = _write(tmp_path, table.to_dict("records"), "m.parquet")
    manifest = load_manifest(path)
    assert manifest.ids == table["image"].tolist()  # id defaults to the image path
    assert (manifest.table["patient"] == manifest.table["id"]).all()  # one patient per row by default
    assert manifest.classes == ("0", "1")
    relative = load_manifest(small_manifest)
    assert relative.table["image"].iloc[0].startswith(str(small_manifest.parent))


def test_label_column_and_multiclass(tmp_path, small_manifest):
    table = pd.read_csv(small_manifest)
    table["image"] = [str(small_manifest.parent / p) for p in table["image"]]
    table["grade"] = [str(i % 3) for i in range(len(table))]
    path = _write(tmp_path, table.to_dict("records"))
    manifest = load_manifest(path, label_column="grade")
    assert manifest.classes == ("0", "1", "2")
    assert set(manifest.labels) == {0, 1, 2}


def test_fingerprint_ignores_file_location_but_not_labels(tmp_path, small_manifest):
    table = pd.read_csv(small_manifest)
    base = load_manifest(small_manifest).fingerprint
    table["image"] = [str(small_manifest.parent / p) for p in table["image"]]
    table["id"] = pd.read_csv(small_manifest)["image"]
    assert load_manifest(_write(tmp_path, table.to_dict("records"))).fingerprint == base
    table.loc[0, "label"] = 1 - table.loc[0, "label"]
    assert load_manifest(_write(tmp_path, table.to_dict("records"), "n.csv")).fingerprint != base


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        ([{"path": "a.png", "label": 1}], "lacks column(s) image"),
        ([{"image": "a.png", "y": 1}], "lacks column(s) label"),
        ([{"image": "a.png", "label": 1}, {"image": "b.png", "label": 1}], "single class"),
        ([{"image": "a.png", "label": 1}, {"image": "a.png", "label": 0}], "duplicate id"),
        ([{"image": "a.png", "label": 1}, {"image": "b.png", "label": ""}], "row 3: empty label"),
        ([{"image": "missing.png", "label": 1}, {"image": "b.png", "label": 0}], "row 2: image not found"),
    ],
)
def test_bad_manifests_name_the_problem(tmp_path, rows, message):
    (tmp_path / "b.png").write_bytes(b"")
    with pytest.raises(MedtransferError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_manifest(_write(tmp_path, rows))


def test_missing_manifest(tmp_path):
    with pytest.raises(MedtransferError, match="manifest not found"):
        load_manifest(tmp_path / "nope.csv")


def test_numeric_labels_written_two_ways_are_one_class(tmp_path):
    (tmp_path / "a.png").write_bytes(b"")
    rows = [{"image": "a.png", "id": f"s{i}", "label": label} for i, label in enumerate(["1", "1.0", "0", "0.00", "2"])]
    manifest = load_manifest(_write(tmp_path, rows), check_files=False)
    assert manifest.classes == ("0", "1", "2")
    assert manifest.labels == [1, 1, 0, 0, 2]
    # written one way, labels stay as written (fingerprints and class names of existing studies do not change)
    rows = [{"image": "a.png", "id": f"s{i}", "label": label} for i, label in enumerate(["1.0", "0.0", "1.0"])]
    assert load_manifest(_write(tmp_path, rows, "b.csv"), check_files=False).classes == ("0.0", "1.0")
    # text labels are never touched
    rows = [{"image": "a.png", "id": f"s{i}", "label": label} for i, label in enumerate(["yes", "no", "1", "1.0"])]
    assert load_manifest(_write(tmp_path, rows, "c.csv"), check_files=False).classes == ("1", "no", "yes")


def _multi_frame_dicom(path, n_frames):
    import numpy as np
    import pydicom
    from pydicom.data import get_testdata_file

    dataset = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    dataset.PixelData = np.stack([np.roll(dataset.pixel_array, k, axis=0) for k in range(n_frames)]).tobytes()
    dataset.NumberOfFrames = n_frames
    dataset.save_as(path)
    return path


def _frames_study(tmp_path):
    import numpy as np
    from PIL import Image

    _multi_frame_dicom(tmp_path / "cine.dcm", 5)
    Image.fromarray(np.zeros((8, 8), dtype=np.uint8)).save(tmp_path / "plain.png")
    rows = [{"image": "cine.dcm", "id": "cine", "label": 1, "center": "x"},
            {"image": "plain.png", "id": "plain", "label": 0, "center": "y"},
            {"image": "cine.dcm#f0002", "id": "picked", "label": 0, "center": "y"}]
    return _write(tmp_path, rows)


def test_frames_first_middle_all(tmp_path):
    path = _frames_study(tmp_path)
    refuse = load_manifest(path)
    assert refuse.ids == ["cine", "plain", "picked"]
    assert refuse.table["image"].iloc[2] == str(tmp_path / "cine.dcm") + "#f0002"  # a frame the manifest names
    first = load_manifest(path, frames="first")
    middle = load_manifest(path, frames="middle")
    assert first.ids == middle.ids == refuse.ids and first.fingerprint == refuse.fingerprint
    assert first.table["image"].tolist()[:2] == [str(tmp_path / "cine.dcm#f0000"), str(tmp_path / "plain.png")]
    assert middle.table["image"].iloc[0] == str(tmp_path / "cine.dcm#f0002")
    every = load_manifest(path, frames="all")
    assert every.ids == [f"cine#f{k:04d}" for k in range(5)] + ["plain", "picked"]
    assert every.table["image"].tolist()[:5] == [str(tmp_path / f"cine.dcm#f{k:04d}") for k in range(5)]
    cine = every.table.iloc[:5]
    assert set(cine["patient"]) == {"cine"} and set(cine["label"]) == {"1"} and set(cine["center"]) == {"x"}
    assert every.fingerprint != refuse.fingerprint


def test_frames_policy_errors(tmp_path):
    path = _frames_study(tmp_path)
    with pytest.raises(MedtransferError, match="--frames must be one of refuse, first, middle, all"):
        load_manifest(path, frames="last")
    rows = [{"image": "cine.dcm", "id": "c", "label": 1}, {"image": "plain.png", "id": "c#f0001", "label": 0}]
    with pytest.raises(MedtransferError, match="frame id 'c#f0001' is also an id"):
        load_manifest(_write(tmp_path, rows, "clash.csv"), frames="all")
    rows = [{"image": "cine.dcm#f0001", "label": 1}, {"image": "gone.dcm#f0001", "label": 0}]
    with pytest.raises(MedtransferError, match="row 3: image not found"):
        load_manifest(_write(tmp_path, rows, "gone.csv"))
