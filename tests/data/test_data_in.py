"""From the layouts data comes in to a manifest: DICOM trees, class folders, and imported splits."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from dicom_replicas import write_dicom, write_presentation_state, write_sr
from medtransfer.data.dicom_scan import scan_dicom_tree


@pytest.fixture(scope="module")
def dicom_tree(tmp_path_factory):
    """~300 files: 60 patients x 4 CR/DX images and a CT, 8 SR and 4 presentation states, a corrupt file, a
    multi-frame file, a spreadsheet and a patient whose label is missing; labels beside it in a CSV."""
    root = tmp_path_factory.mktemp("pacs")
    tree = root / "export"
    labels = []
    for p in range(60):
        patient = f"PID{p:03d}"
        label = p % 2
        for k in range(4):
            write_dicom(tree / patient / f"s{k}" / f"IM{k}", patient=patient, modality="DX" if k else "CR",
                        view="AP" if k == 3 else "PA", institution=f"Hospital {p % 3}", study_date=f"2020050{k + 1}",
                        label=label, size=8)
        if p % 10 == 0:
            write_dicom(tree / patient / "ct" / "IM0", patient=patient, modality="CT", view="", label=label, size=8)
        if p % 8 == 0:
            write_sr(tree / patient / "sr" / "SR0", patient)
        if p % 15 == 0:
            write_presentation_state(tree / patient / "pr" / "PR0", patient)
        if p != 59:  # PID059 has images but no label row
            labels.append({"patient_id": patient, "outcome": "yes" if label else "no", "site": f"S{p % 3}"})
    labels.append({"patient_id": "PID999", "outcome": "no", "site": "S0"})  # a label row without images
    write_dicom(tree / "PID000" / "multi" / "IMM", patient="PID000", frames=3, size=8, label=0,
                institution="Hospital 0")
    (tree / "PID001" / "broken.dcm").write_bytes(b"\x00" * 64 + b"not a dicom file")
    (tree / "notes.txt").write_text("export log")
    pd.DataFrame(labels).to_csv(root / "clinical.csv", index=False)
    return root


def test_scan_accounts_for_every_file(dicom_tree):
    scan = scan_dicom_tree(dicom_tree / "export", progress=False)
    assert len(scan.images) == 60 * 4 + 6 + 1  # CR/DX + CT + the multi-frame file
    assert sum(scan.non_image.values()) == 8 + 4
    assert any("SR" in kind for kind in scan.non_image) and any("PR" in kind for kind in scan.non_image)
    assert scan.other_files == 1
    assert [p for p, _ in scan.unreadable] == [str(dicom_tree / "export" / "PID001" / "broken.dcm")]


def test_from_dicom_cli_counts_names_and_side_file(dicom_tree, cli, tmp_path):
    out = tmp_path / "study" / "manifest.csv"
    result = cli("manifest", "from-dicom", dicom_tree / "export", "--labels", dicom_tree / "clinical.csv",
                 "--labels-key", "patient_id", "--label-column", "outcome", "--modality", "CR,DX",
                 "--view", "PA", "--out", out)
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    assert "12 non-image object(s) skipped" in text and "broken.dcm" in text and "1 unreadable" in text
    assert "without a label" in text and "1 label row(s) without images" in text
    manifest = pd.read_csv(out, dtype=str)
    # 59 labelled patients x 3 PA images (+1 PA multi-frame file of PID000); AP and CT filtered out
    assert len(manifest) == 59 * 3 + 1
    assert set(manifest["view"]) == {"PA"} and set(manifest["modality"]) <= {"CR", "DX"}
    assert manifest["patient"].nunique() == 59 and "PID059" not in set(manifest["patient"])
    assert set(manifest["center"]) == {"Hospital 0", "Hospital 1", "Hospital 2"}  # InstitutionName by default
    assert manifest.loc[manifest["frames"] == "3", "patient"].tolist() == ["PID000"]
    assert (manifest["study_date"].str.len() == 8).all()
    assert (out.parent / manifest["image"].iloc[0]).is_file()  # paths relative to the manifest
    side = pd.read_csv(out.with_name("manifest.unmatched.csv"))
    assert set(side["kind"]) == {"image without label", "label row without image", "unreadable file"}
    assert (side["kind"] == "image without label").sum() == 3  # PID059's three PA images
    assert side.loc[side["kind"] == "label row without image", "key"].tolist() == ["PID999"]
    assert side.loc[side["kind"] == "unreadable file", "path"].str.endswith("broken.dcm").all()
    # the manifest is a valid manifest: splits run on it
    result = cli("splits", out, "--folds", "3", "--out", tmp_path / "splits.json")
    assert result.exit_code == 0, result.output


def test_from_dicom_center_column_and_bad_column(dicom_tree, cli, tmp_path):
    out = tmp_path / "m.csv"
    result = cli("manifest", "from-dicom", dicom_tree / "export", "--labels", dicom_tree / "clinical.csv",
                 "--labels-key", "patient_id", "--label-column", "outcome", "--center-column", "site", "--out", out)
    assert result.exit_code == 0, result.output
    assert set(pd.read_csv(out)["center"]) == {"S0", "S1", "S2"}
    result = cli("manifest", "from-dicom", dicom_tree / "export", "--labels", dicom_tree / "clinical.csv",
                 "--label-column", "nope", "--out", out)
    assert result.exit_code == 2
    assert result.stderr.startswith("error:") and len(result.stderr.strip().splitlines()) == 1
    assert "'nope'" in result.stderr and "patient_id" in result.stderr


def _folder_images(root, layout):
    from PIL import Image

    for relative in layout:
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.new("L", (8, 8), color=200 if "covid" in relative else 20).save(path)


def test_from_folders_with_patient_regex(tmp_path, cli):
    layout = [f"{c}/P{p:02d}_{k}.png" for c in ("covid", "normal") for p in range(6) for k in range(2)]
    _folder_images(tmp_path / "raw", layout)
    (tmp_path / "raw" / "covid" / "README.txt").write_text("x")
    out = tmp_path / "manifest.csv"
    result = cli("manifest", "from-folders", tmp_path / "raw", "--patient-regex", r"^(P\d+)_", "--out", out)
    assert result.exit_code == 0, result.output
    manifest = pd.read_csv(out)
    assert len(manifest) == 24 and set(manifest["label"]) == {"covid", "normal"}
    assert manifest["patient"].nunique() == 6 and "1 non-image file(s) skipped" in " ".join(result.output.split())
    result = cli("manifest", "from-folders", tmp_path / "raw", "--patient-regex", r"^(X\d+)_", "--out", out)
    assert result.exit_code == 2 and "matches no patient in 24" in result.stderr


def test_split_folders_become_an_imported_split(tmp_path, cli):
    layout = [f"{s}/{c}/P{s}{p:02d}_{k}.png" for s, n in (("train", 10), ("test", 5)) for c in ("a", "b")
              for p in range(n) for k in range(2)]
    _folder_images(tmp_path / "raw", layout)
    out = tmp_path / "manifest.csv"
    assert cli("manifest", "from-folders", tmp_path / "raw", "--patient-regex", r"^(P\w+?\d+)_",
               "--out", out).exit_code == 0
    assert set(pd.read_csv(out)["split"]) == {"train", "test"}
    result = cli("splits", "import", out, "--train-val-test", "split", "--shots", "2", "--seeds", "2",
                 "--out", tmp_path / "splits.json")
    assert result.exit_code == 0, result.output
    splits = json.loads((tmp_path / "splits.json").read_text())
    (fold,) = splits["folds"]
    assert splits["strategy"] == "imported" and len(fold["test"]) == 20
    assert len(fold["train"]) + len(fold["val"]) == 40 and fold["val"]  # val carved from train
    assert set(fold["fewshot"]["2"]["0"]) <= set(fold["train"])


@pytest.fixture()
def fold_manifest(tmp_path):
    """30 patients x 2 rows, with an official fold column (by patient) and a leaking one."""
    rows = []
    for p in range(30):
        for k in range(2):
            rows.append({"image": f"img/{p}_{k}.png", "label": p % 2, "patient": f"P{p}", "fold": p % 3,
                         "leaky": (p + k) % 3 if p == 7 else p % 3})
    path = tmp_path / "manifest.csv"
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def test_splits_import_folds_and_both_splits_forms(fold_manifest, cli, tmp_path):
    result = cli("splits", "import", fold_manifest, "--column", "fold", "--shots", "1,2", "--seeds", "2",
                 "--out", tmp_path / "imported.json")
    assert result.exit_code == 0, result.output
    splits = json.loads((tmp_path / "imported.json").read_text())
    assert len(splits["folds"]) == 3 and splits["params"]["imported_from"] == "fold"
    table = pd.read_csv(fold_manifest)
    for fold in splits["folds"]:
        assert set(fold["test"]) == set(table.loc[table["fold"] == fold["fold"], "image"])
        assert set(fold["fewshot"]["1"]["0"]) <= set(fold["fewshot"]["2"]["0"]) <= set(fold["train"])
    from medtransfer.splits import load_splits, tasks_for

    tasks = tasks_for(load_splits(tmp_path / "imported.json"), regimes=("full", "fewshot"))
    assert len(tasks) == 3 * (1 + 2 * 2)  # probe and adapt read it like a made file: folds x (full + shots x seeds)
    # the older form and the explicit subcommand make the same file
    for args in (("splits", fold_manifest), ("splits", "make", fold_manifest)):
        result = cli(*args, "--folds", "3", "--out", tmp_path / f"{len(args)}.json")
        assert result.exit_code == 0, result.output
    assert (tmp_path / "2.json").read_bytes() == (tmp_path / "3.json").read_bytes()


def test_splits_import_refuses_leaks_and_missing_ids(fold_manifest, cli, tmp_path):
    result = cli("splits", "import", fold_manifest, "--column", "leaky", "--out", tmp_path / "x.json")
    assert result.exit_code == 2 and "P7 in test and train" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    side = tmp_path / "official.csv"
    pd.DataFrame({"id": [f"img/{p}_{k}.png" for p in range(29) for k in range(2)],
                  "fold": [p % 3 for p in range(29) for _ in range(2)]}).to_csv(side, index=False)
    result = cli("splits", "import", fold_manifest, "--column", "fold", "--table", side, "--out", tmp_path / "y.json")
    assert result.exit_code == 2 and "2 manifest id(s) have no value" in result.stderr
    assert "img/29_0.png" in result.stderr and "img/29_1.png" in result.stderr


@pytest.mark.parametrize("spelling", ["NaN", "NA", "null"])
def test_a_label_written_as_nan_is_missing_not_a_class(dicom_tree, cli, tmp_path, spelling):
    """Issue 28.2: a sheet's ``NaN`` / ``NA`` label made a third class (['NaN', 'no', 'yes']); those images are
    unlabelled now, counted and listed in the side file, and the task stays binary."""
    table = pd.read_csv(dicom_tree / "clinical.csv", dtype=str, keep_default_na=False)
    table.loc[table["patient_id"] == "PID010", "outcome"] = spelling
    table.to_csv(tmp_path / "clinical.csv", index=False)
    out = tmp_path / "manifest.csv"
    result = cli("manifest", "from-dicom", dicom_tree / "export", "--labels", tmp_path / "clinical.csv",
                 "--labels-key", "patient_id", "--label-column", "outcome", "--out", out)
    assert result.exit_code == 0, result.output
    manifest = pd.read_csv(out, dtype=str, keep_default_na=False)
    assert set(manifest["label"]) == {"no", "yes"} and "PID010" not in set(manifest["patient"])
    side = pd.read_csv(out.with_name("manifest.unmatched.csv"), dtype=str, keep_default_na=False)
    assert (side["reason"] == f"missing label {spelling!r}").sum() == 5  # 4 CR/DX images and the CT of PID010


@pytest.mark.parametrize("spelling", ["NaN", "NA", "nan", "N/A", "None"])
def test_a_manifest_label_written_as_nan_is_refused_in_one_line(small_manifest, cli, tmp_path, spelling):
    """The manifest itself: a label spelled as a missing value is refused (it was a class of its own)."""
    table = pd.read_csv(small_manifest, dtype=str, keep_default_na=False)
    table.loc[3, "label"] = spelling
    table["image"] = [str((small_manifest.parent / p).resolve()) for p in table["image"]]
    table.to_csv(tmp_path / "m.csv", index=False)
    result = cli("splits", tmp_path / "m.csv", "--out", tmp_path / "splits.json")
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and f"missing label {spelling!r}" in lines[0]
    assert "row 5" in lines[0] and not (tmp_path / "splits.json").exists()
