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
