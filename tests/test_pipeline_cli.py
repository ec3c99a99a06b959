"""The walking skeleton end to end through the CLI: splits -> extract -> probe, and its bad inputs."""

import json

import numpy as np
import pandas as pd
import pytest
import zarr
from PIL import Image

from medtransfer import cache_schema
from medtransfer.results import KEY


@pytest.fixture(scope="module")
def pipeline(small_manifest, tmp_path_factory):
    """splits + extract + probe once for the module; returns the folder holding every artefact."""
    from typer.testing import CliRunner

    from medtransfer.cli import app

    work = tmp_path_factory.mktemp("pipeline")
    runner = CliRunner()
    for args in (
        ["splits", small_manifest, "--strategy", "kfold", "--folds", "3", "--shots", "2,4", "--seeds", "2",
         "--out", work / "splits.json"],
        ["extract", small_manifest, "--backbone", "resnet18", "--weights", "random", "--store", work / "f.zarr"],
        ["probe", "--store", work / "f.zarr", "--splits", work / "splits.json", "--backbone", "resnet18",
         "--out", work / "results"],
    ):
        result = runner.invoke(app, [str(a) for a in args], catch_exceptions=False)
        assert result.exit_code == 0, result.output
    return work


def test_store_is_self_describing_with_plain_zarr(pipeline, small_manifest):
    root = zarr.open_group(str(pipeline / "f.zarr"), mode="r")
    assert root.attrs["schema"] == cache_schema.SCHEMA
    (key,) = list(root.group_keys())
    assert key.startswith("resnet18__random__224-")
    group = root[key]
    n = len(pd.read_csv(small_manifest))
    assert group["features"].shape == (n, 512) and group["features"].dtype == np.float16
    assert group["features"].chunks[1] == 512
    assert group["sample_id"][:].tolist() == pd.read_csv(small_manifest)["image"].tolist()
    attrs = dict(group.attrs)
    for field in ("backbone", "weights", "weights_source", "weights_fingerprint", "preprocessing",
                  "embedding_kind", "dim", "created", "versions", "schema"):
        assert field in attrs, field
    assert attrs["preprocessing"]["input_size"] == 224 and len(attrs["preprocessing"]["mean"]) == 3
    assert attrs["complete"] is True and "random" in attrs["weights_source"]


def test_results_table_contract(pipeline):
    results = pd.read_parquet(pipeline / "results" / "results.parquet")
    csv = pd.read_csv(pipeline / "results" / "results.csv")
    assert len(results) == len(csv) == 3 * (1 + 2 * 2)  # folds x (full + shots x seeds)
    for column in (*KEY, "mcc", "pr_auc", "roc_auc", "balanced_accuracy", "n_train", "n_test", "fit_seconds"):
        assert column in results.columns, column
    assert set(results["regime"]) == {"full", "fewshot"}
    assert (results["status"] == "ok").all()
    assert not results.duplicated(KEY).any()
    full = results[results["regime"] == "full"]
    assert full["mcc"].mean() > 0.4, "the synthetic label is learnable"
    fewshot = results[results["shots"] == 2]
    assert (fewshot["n_train"] == 4).all()


def test_metrics_can_be_recomputed_from_predictions(pipeline):
    from medtransfer.metrics import compute_metrics

    results = pd.read_parquet(pipeline / "results" / "results.parquet")
    predictions = pd.read_parquet(pipeline / "results" / "predictions.parquet")
    row = results.iloc[0]
    mask = np.ones(len(predictions), dtype=bool)
    for column in KEY:
        mask &= predictions[column].to_numpy() == row[column]
    sample = predictions[mask]
    assert len(sample) == row["n_test"]
    probability = sample["probability"].to_numpy()
    metrics = compute_metrics(sample["label"].to_numpy(), np.stack([1 - probability, probability], axis=1))
    assert metrics["mcc"] == pytest.approx(row["mcc"])
    assert metrics["pr_auc"] == pytest.approx(row["pr_auc"])


def test_rerun_extract_computes_nothing_and_probe_merges(pipeline, small_manifest, cli):
    result = cli("extract", small_manifest, "--backbone", "resnet18", "--weights", "random",
                 "--store", pipeline / "f.zarr")
    assert result.exit_code == 0 and "0 of" in result.output
    before = pd.read_parquet(pipeline / "results" / "results.parquet")
    result = cli("probe", "--store", pipeline / "f.zarr", "--splits", pipeline / "splits.json",
                 "--backbone", "resnet18", "--out", pipeline / "results")
    assert result.exit_code == 0
    after = pd.read_parquet(pipeline / "results" / "results.parquet")
    assert len(after) == len(before)
    pd.testing.assert_frame_equal(after[[*KEY, "mcc"]], before[[*KEY, "mcc"]])


def test_splits_cli_is_byte_identical(small_manifest, tmp_path, cli):
    for name in ("a", "b"):
        assert cli("splits", small_manifest, "--strategy", "loco", "--shots", "2", "--seeds", "2",
                   "--out", tmp_path / f"{name}.json").exit_code == 0
    assert (tmp_path / "a.json").read_bytes() == (tmp_path / "b.json").read_bytes()
    assert len(json.loads((tmp_path / "a.json").read_text())["folds"]) == 3
    assert cli("splits", small_manifest, "--strategy", "holdout", "--out", tmp_path / "h.json").exit_code == 0
    assert len(json.loads((tmp_path / "h.json").read_text())["folds"]) == 1


def _one_line_error(result, *fragments):
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and result.stderr.rstrip().endswith(errors[0]), result.stderr
    message = errors[0]
    for fragment in fragments:
        assert fragment in message, message


def test_bad_inputs_give_one_line_errors(pipeline, small_manifest, tmp_path, cli):
    table = pd.read_csv(small_manifest)
    table["image"] = [str(small_manifest.parent / p) for p in table["image"]]

    missing = table.copy()
    missing.loc[5, "image"] = str(tmp_path / "gone.png")
    missing.to_csv(tmp_path / "missing.csv", index=False)
    _one_line_error(cli("extract", tmp_path / "missing.csv", "--backbone", "resnet18", "--weights", "random",
                        "--store", tmp_path / "s.zarr"), "row 7", "gone.png")

    broken = table.copy()
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    broken.loc[3, "image"] = str(tmp_path / "broken.png")
    broken.to_csv(tmp_path / "broken.csv", index=False)
    _one_line_error(cli("extract", tmp_path / "broken.csv", "--backbone", "resnet18", "--weights", "random",
                        "--store", tmp_path / "b.zarr"), "row 5", "broken.png")

    table.drop(columns="label").to_csv(tmp_path / "nolabel.csv", index=False)
    _one_line_error(cli("splits", tmp_path / "nolabel.csv", "--out", tmp_path / "x.json"), "label")

    table.assign(label=1).to_csv(tmp_path / "single.csv", index=False)
    _one_line_error(cli("splits", tmp_path / "single.csv", "--out", tmp_path / "x.json"), "single class")

    _one_line_error(cli("probe", "--store", pipeline / "f.zarr", "--splits", pipeline / "splits.json",
                        "--backbone", "resnet50", "--out", tmp_path / "r"), "resnet50", "not in store")

    other = table.copy()
    other.loc[0, "label"] = 1 - other.loc[0, "label"]
    other.to_csv(tmp_path / "other.csv", index=False)
    _one_line_error(cli("probe", "--store", pipeline / "f.zarr", "--splits", pipeline / "splits.json",
                        "--backbone", "resnet18", "--manifest", tmp_path / "other.csv", "--out", tmp_path / "r"),
                    "another manifest")

    _one_line_error(cli("extract", small_manifest, "--backbone", "nonet", "--store", tmp_path / "s.zarr"),
                    "unknown backbone")
    assert not (tmp_path / "r").exists(), "failed commands write no results"


def test_sixteen_bit_and_eight_bit_images_decode_to_the_same_scale(small_manifest):
    from medtransfer.data.images import load_image

    table = pd.read_csv(small_manifest)
    depths = {}
    for image in table["image"]:
        with Image.open(small_manifest.parent / image) as handle:
            depths.setdefault(handle.mode, image)
    assert {"L", "I;16"} <= set(depths) or {"L", "I"} <= set(depths), depths
    means = [load_image(small_manifest.parent / path).mean() for path in depths.values()]
    assert all(0.2 < m < 0.8 for m in means)


def test_backbones_command_lists_the_registry(cli):
    from medtransfer.backbones import REGISTRY

    result = cli("backbones")
    assert result.exit_code == 0
    assert "resnet18" in result.output and "dinov2-b" in result.output
    assert len(REGISTRY) >= 14


def test_a_results_folder_refuses_rows_of_another_splits_file(pipeline, small_manifest, tmp_path, cli):
    other = tmp_path / "loco.json"
    assert cli("splits", small_manifest, "--strategy", "loco", "--out", other).exit_code == 0
    before = (pipeline / "results" / "results.parquet").read_bytes()
    _one_line_error(cli("probe", "--store", pipeline / "f.zarr", "--splits", other, "--backbone", "resnet18",
                        "--out", pipeline / "results"), "another splits file", "another --out")
    assert (pipeline / "results" / "results.parquet").read_bytes() == before, "nothing was mixed in"


def test_replaced_rows_take_their_predictions_with_them(tmp_path):
    from medtransfer.results import ResultRow, read_union, write_results

    key = {"backbone": "b", "method": "m", "regime": "full", "shots": 0, "seed": 0, "fold": 0}
    predictions = pd.DataFrame([{**key, "fraction": 0.0, "id": "a", "label": 1, "probability": 0.9}])
    write_results(tmp_path, [ResultRow(**key, mcc=0.5, splits="s1")], predictions)
    write_results(tmp_path, [ResultRow(**key, status="failed", error="boom", splits="s1")], None)
    table, predictions = read_union(tmp_path)
    assert len(table) == 1 and table["status"].iloc[0] == "failed"
    assert predictions is None, "the failed row's stale predictions are gone"


def test_a_store_refuses_another_studys_images_under_the_same_ids(pipeline, small_manifest, tmp_path, cli):
    """Two studies with the same relative file names in one store: the second must not overwrite the first."""
    import shutil

    other = tmp_path / "study-b"
    shutil.copytree(small_manifest.parent, other)
    images = sorted((other / "images").glob("*.png"))
    first, second = images[0].read_bytes(), images[1].read_bytes()
    images[0].write_bytes(second)
    images[1].write_bytes(first)
    before = pd.read_parquet(pipeline / "results" / "results.parquet")
    _one_line_error(cli("extract", other / "manifest.csv", "--backbone", "resnet18", "--weights", "random",
                        "--store", pipeline / "f.zarr"), "already in store", "`id` column")
    assert cli("probe", "--store", pipeline / "f.zarr", "--splits", pipeline / "splits.json", "--backbone",
               "resnet18", "--out", tmp_path / "again").exit_code == 0
    again = pd.read_parquet(tmp_path / "again" / "results.parquet")
    pd.testing.assert_series_equal(again["mcc"], before["mcc"])
