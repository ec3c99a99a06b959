"""Issue 30 through the CLI (tried as a new user would): the pooled boxplot says what it pools (4), a study task
names its positive class (6), advice that helps (7), nearest names for typos (8), `methods` one line per row and
probe saying what it skipped (10), DICOM files without the preamble (11), a center from the folder layout (12).
The paired-tests table (3) is checked in tests/report/test_report_scale.py's screenshot test; the study report's
planned runs (5) in tests/study/test_study.py."""

from __future__ import annotations

import base64
import re

import numpy as np
import pandas as pd
import pytest

from medtransfer.data.synthetic import SyntheticSpec, make_synthetic_dataset


@pytest.fixture(scope="module")
def work(small_manifest, tmp_path_factory):
    from typer.testing import CliRunner

    from medtransfer.cli import app

    folder = tmp_path_factory.mktemp("issue30")
    runner = CliRunner()
    for args in (
        ["splits", small_manifest, "--folds", "2", "--shots", "2", "--seeds", "1", "--out", folder / "splits.json"],
        ["extract", small_manifest, "--backbone", "resnet18", "--weights", "random", "--store", folder / "f.zarr"],
    ):
        result = runner.invoke(app, [str(a) for a in args], catch_exceptions=False)
        assert result.exit_code == 0, result.output
    return folder


def _one_error_line(result) -> str:
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:"), result.stderr
    return lines[0]


def test_boxplot_pools_only_backbones_every_method_ran_on(cli, tmp_path):
    """hgb ran on one backbone of three: its box would compare backbones, not methods."""
    rows = []
    for backbone in ("resnet18", "dinov2-s", "rad-dino"):
        for method in ("logreg", "knn", "hgb"):
            if method == "hgb" and backbone != "resnet18":
                continue
            for fold in range(3):
                rows.append({"task": "t", "backbone": backbone, "method": method, "regime": "full", "shots": 0,
                             "seed": 0, "fold": fold, "mcc": 0.1 * fold + (0.5 if backbone == "rad-dino" else 0),
                             "pr_auc": 0.7, "status": "ok"})
    folder = tmp_path / "t"
    folder.mkdir()
    pd.DataFrame(rows).to_csv(folder / "results.csv", index=False)
    result = cli("report", folder, "--out", tmp_path / "report")
    assert result.exit_code == 0, result.output
    page = (tmp_path / "report" / "index.html").read_text()
    figure = re.search(r'<figure[^>]*data-figure="boxplot"[^>]*>.*?</figure>', page).group(0)
    assert 'data-backbones="resnet18"' in figure
    assert "Pooled over the backbone(s) every method ran on (resnet18); left out: dinov2-s, rad-dino" in figure
    svg = base64.b64decode(re.search(r'src="data:image/svg\+xml;base64,([^"]+)"', figure).group(1)).decode()
    assert svg.count("<path") > 0  # drawn


def test_boxplot_labels_what_each_box_pools_when_no_backbone_is_shared(cli, tmp_path):
    rows = [{"task": "t", "backbone": backbone, "method": method, "regime": "full", "shots": 0, "seed": 0,
             "fold": fold, "mcc": 0.2 + 0.1 * fold, "pr_auc": 0.7, "status": "ok"}
            for backbone, method in (("resnet18", "hgb"), ("dinov2-s", "logreg"), ("rad-dino", "logreg"))
            for fold in range(3)]
    folder = tmp_path / "t"
    folder.mkdir()
    pd.DataFrame(rows).to_csv(folder / "results.csv", index=False)
    assert cli("report", folder, "--out", tmp_path / "report").exit_code == 0
    page = (tmp_path / "report" / "index.html").read_text()
    figure = re.search(r'<figure[^>]*data-figure="boxplot"[^>]*>.*?</figure>', page).group(0)
    assert "No backbone ran with every method" in figure
    svg = base64.b64decode(re.search(r'src="data:image/svg\+xml;base64,([^"]+)"', figure).group(1)).decode()
    assert "(1 of 3)" in svg and "(2 of 3)" in svg


def test_study_task_names_its_positive_class(tmp_path, cli, small_manifest):
    from medtransfer.study import build_plan, load_study
    from medtransfer.study.jobs import run_job

    def study(positive: str) -> object:
        path = tmp_path / "study.toml"
        path.write_text(f'''schema = "medtransfer.study/1"
name = "p"
[backbones]
names = ["resnet18"]
[probe]
heads = ["logreg"]
[tasks.t]
manifest = "{small_manifest}"
folds = 2
{positive}
''')
        return path

    assert cli("study", "plan", study('positive = "0"'), "--no-estimate").exit_code == 0
    plan = build_plan(load_study(tmp_path / "study.toml"))
    job = next(j for j in plan.jobs if j.kind == "splits")
    assert job.params["split_spec"]["positive"] == "0"
    run_job(job.params)
    made = pd.read_json(job.params["splits_path"], typ="series")
    assert made["params"]["positive"] == "0"
    assert load_study(study("positive = 0")).tasks[0].positive == "0"  # a TOML integer names the same class
    line = _one_error_line(cli("study", "plan", study("positive = true"), "--no-estimate"))
    assert "tasks.t.positive must be a class label" in line


def test_val_fraction_advice_says_to_raise_it(tmp_path, cli):
    manifest = make_synthetic_dataset(tmp_path / "d", SyntheticSpec(n_patients=14, image_size=32))
    line = _one_error_line(cli("splits", manifest, "--folds", "2", "--val-fraction", "0.1", "--out",
                               tmp_path / "s.json"))
    assert "raise --val-fraction to" in line and "lower --val-fraction" not in line
    for _ in range(3):  # following the advice (per fold: the next fold may have fewer patients) ends in splits
        wanted = re.search(r"raise --val-fraction to ([0-9.]+)", line).group(1)
        result = cli("splits", manifest, "--folds", "2", "--val-fraction", wanted, "--out", tmp_path / "s.json")
        if result.exit_code == 0:
            break
        line = _one_error_line(result)
    assert result.exit_code == 0, line
    line = _one_error_line(cli("splits", manifest, "--folds", "10", "--out", tmp_path / "s.json"))
    assert "lower --folds to" in line


def test_misspelt_names_get_the_nearest_ones(cli, work, small_manifest, tmp_path):
    probe = ("probe", "--store", work / "f.zarr", "--splits", work / "splits.json", "--out", tmp_path / "r")
    line = _one_error_line(cli(*probe, "--backbone", "resnet-18"))
    assert "did you mean resnet18?" in line and "extract" not in line
    line = _one_error_line(cli(*probe, "--backbone", "resnett50"))
    assert line.startswith("error: unknown backbone 'resnett50' (did you mean resnet50")
    line = _one_error_line(cli(*probe, "--backbone", "resnet18", "--head", "log-reg"))
    assert "unknown probe head 'log-reg' (did you mean logreg?)" in line
    line = _one_error_line(cli("adapt", small_manifest, "--splits", work / "splits.json", "--backbone", "resnet18",
                               "--method", "lroa", "--out", tmp_path / "a"))
    assert "(did you mean lora" in line


def test_probe_says_what_it_skipped(cli, work, tmp_path):
    probe = ("probe", "--store", work / "f.zarr", "--splits", work / "splits.json", "--backbone", "resnet18",
             "--head", "centroid", "--out", tmp_path / "r")
    first = cli(*probe)
    assert first.exit_code == 0 and "skipped" not in first.stderr
    again = cli(*probe)
    assert again.exit_code == 0
    assert re.search(r"skipped \d+ finished fit\(s\).*--force fits them again", again.stderr), again.stderr


def test_methods_prints_one_line_per_row(cli):
    import json

    from medtransfer.testing.backbones import TINY_CNN, register_tiny_backbones

    register_tiny_backbones()
    rows = json.loads(cli("methods", "--reference", TINY_CNN, "--json").stdout)
    lines = cli("methods", "--reference", TINY_CNN).stdout.splitlines()  # not a terminal: the plain layout
    rule = next(i for i, line in enumerate(lines) if line.startswith("-----"))
    table = lines[rule + 1: rule + 1 + len(rows)]
    assert [line.split()[0] for line in table] == [row["method"] for row in rows]
    assert lines[rule + 1 + len(rows)] == "options:"  # no cell spilled onto a line of its own
    assert max(len(line) for line in table) < 400
    lora = next(line for line in table if line.split()[0] == "lora")
    assert "rank=" in lora and "alpha=" in lora


def _no_preamble_copy(path, patient: str) -> None:
    """CT_small.dcm written as old exporters do: no 128-byte preamble, no file meta, implicit VR little endian."""
    import pydicom
    from pydicom.data import get_testdata_file

    dataset = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    dataset.PatientID = patient
    dataset.preamble = None
    del dataset.file_meta
    dataset.save_as(path, implicit_vr=True, little_endian=True, enforce_file_format=False)


def test_force_dicom_reads_files_without_the_preamble(cli, tmp_path):
    from pydicom.data import get_testdata_file

    from medtransfer.data.images import load_image

    export = tmp_path / "export"
    export.mkdir()
    patients = [f"P{i}" for i in range(4)]
    for patient in patients:
        _no_preamble_copy(export / f"{patient}.dcm", patient)
    pd.DataFrame({"PatientID": patients, "label": ["a", "b", "a", "b"]}).to_csv(tmp_path / "labels.csv",
                                                                                index=False)
    base = ("manifest", "from-dicom", export, "--labels", tmp_path / "labels.csv", "--label-column", "label")
    refused = cli(*base, "--out", tmp_path / "plain.csv")
    text = " ".join((refused.output + refused.stderr).split())
    assert refused.exit_code == 2 and "4 unreadable" in text and "--force-dicom reads such files" in text, text
    result = cli(*base, "--force-dicom", "--out", tmp_path / "m.csv")
    assert result.exit_code == 0, result.output
    manifest = pd.read_csv(tmp_path / "m.csv", dtype=str)
    assert sorted(manifest["patient"]) == patients
    image = manifest["image"].iloc[0]
    image = image if image.startswith("/") else str(tmp_path / image)
    with pytest.raises(Exception, match="--force-dicom"):
        load_image(image)
    np.testing.assert_array_equal(load_image(image, force_dicom=True), load_image(get_testdata_file("CT_small.dcm")))
    store = tmp_path / "f.zarr"
    refused = cli("extract", tmp_path / "m.csv", "--backbone", "resnet18", "--weights", "random", "--store", store,
                  "--workers", "0")
    errors = [line for line in refused.stderr.splitlines() if line.startswith("error:")]
    assert refused.exit_code == 2 and len(errors) == 1 and "pass --force-dicom" in errors[0], refused.stderr
    done = cli("extract", tmp_path / "m.csv", "--backbone", "resnet18", "--weights", "random", "--store", store,
               "--workers", "0", "--force-dicom")
    assert done.exit_code == 0, done.output
    assert "4 of 4 images computed" in done.output


def test_adapt_force_dicom_trains_on_files_without_the_preamble(cli, tmp_path):
    from medtransfer.testing.backbones import TINY_CNN, register_tiny_backbones

    register_tiny_backbones()
    export = tmp_path / "export"
    export.mkdir()
    patients = [f"P{i}" for i in range(12)]
    for patient in patients:
        _no_preamble_copy(export / f"{patient}.dcm", patient)
    pd.DataFrame({"PatientID": patients, "label": ["a", "b"] * 6}).to_csv(tmp_path / "labels.csv", index=False)
    assert cli("manifest", "from-dicom", export, "--labels", tmp_path / "labels.csv", "--label-column", "label",
               "--force-dicom", "--out", tmp_path / "m.csv").exit_code == 0
    assert cli("splits", tmp_path / "m.csv", "--folds", "2", "--val-fraction", "0.5", "--out",
               tmp_path / "s.json").exit_code == 0
    adapt = ("adapt", tmp_path / "m.csv", "--splits", tmp_path / "s.json", "--backbone", TINY_CNN, "--weights",
             "random", "--method", "lp", "--epochs", "1", "--folds", "0", "--regime", "full", "--image-size", "32",
             "--out", tmp_path / "a")
    refused = cli(*adapt)
    assert refused.exit_code == 2 and "pass --force-dicom" in refused.stderr, refused.output
    done = cli(*adapt, "--force-dicom")
    assert done.exit_code == 0, done.output
    assert (pd.read_csv(tmp_path / "a" / "results.csv")["status"] == "ok").all()


def test_from_folders_takes_the_center_from_the_layout(cli, tmp_path):
    from PIL import Image

    root = tmp_path / "root"
    for label in ("cat", "dog"):
        for center in ("siteA", "siteB"):
            folder = root / label / center
            folder.mkdir(parents=True)
            for k in range(2):
                Image.fromarray(np.full((16, 16), 40 * k, dtype=np.uint8)).save(folder / f"p{k}_{center}.png")
    out = tmp_path / "manifest.csv"
    result = cli("manifest", "from-folders", root, "--center-regex", "^[^/]+/([^/]+)/", "--out", out)
    assert result.exit_code == 0, result.output
    assert "2 center(s)" in " ".join(result.output.split())
    manifest = pd.read_csv(out)
    assert sorted(set(manifest["center"])) == ["siteA", "siteB"]
    assert all(center in image for center, image in zip(manifest["center"], manifest["image"], strict=True))
    named = cli("manifest", "from-folders", root, "--center-regex", r"_(?P<center>site\w)\.png$", "--out", out)
    assert named.exit_code == 0 and sorted(set(pd.read_csv(out)["center"])) == ["siteA", "siteB"]
    line = _one_error_line(cli("manifest", "from-folders", root, "--center-regex", "hospital(\\d)", "--out", out))
    assert "--center-regex 'hospital(\\\\d)' matches no center in 8 path(s)" in line
    line = _one_error_line(cli("manifest", "from-folders", root, "--center-regex", "site", "--out", out))
    assert "has no group" in line
