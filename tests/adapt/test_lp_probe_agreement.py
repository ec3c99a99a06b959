"""adapt's lp is probe's logreg (issue 18, point 5): on the same tasks and the same embeddings it chooses the same
C, trains on the same rows and predicts the same test probabilities, in the full and the few-shot regimes, with
val tuning and with label-budget tuning. Gradient epochs from a fresh head left lp untrained in few-shot tasks
(best epoch 1 in 64% of 4-shot tasks); these tests fail on that head.

The images are 8-bit and already at the backbone's input size, and the store keeps float32 features, so extract's
features and adapt's in-memory 8-bit pixels give bit-equal embeddings: any difference is the head's fit.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from medtransfer.adapt import run_adapt
from medtransfer.data.manifest import load_manifest
from medtransfer.data.synthetic import SyntheticSpec, make_synthetic_dataset
from medtransfer.errors import MedtransferError
from medtransfer.splits import SplitSpec, make_splits, save_splits
from medtransfer.testing.backbones import SIZE, TINY_CNN

KEY = ["fold", "regime", "shots", "seed"]


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    from medtransfer.extract import extract_features

    folder = tmp_path_factory.mktemp("lp-probe")
    # one center: every image 8-bit (the synthetic data's other centers write 16-bit PNGs)
    manifest = make_synthetic_dataset(folder / "data", SyntheticSpec(n_patients=60, n_centers=1, image_size=SIZE,
                                                                     signal=1.5))
    splits = save_splits(make_splits(load_manifest(manifest), SplitSpec(n_folds=3, shots=(2, 4), fewshot_seeds=2)),
                         folder / "splits.json")
    store = folder / "features.zarr"
    extract_features(manifest, TINY_CNN, store, weights="random", progress=False, num_workers=0, pixel_cache=True,
                     dtype="float32")
    return manifest, splits, store, folder


def _lp(study, out, **options):
    manifest, splits, _, folder = study
    options = {"regimes": ("full", "fewshot"), "pixel_cache": folder / "features.pixels.zarr", **options}
    return run_adapt(manifest, splits, backbone=TINY_CNN, method="lp", out=out, weights="random", progress=False,
                     log=lambda _: None, **options)


def _chosen_c(table: pd.DataFrame) -> pd.Series:
    return table["hyperparameters"].map(lambda text: json.loads(text)["C"])


@pytest.mark.parametrize("tune", ["val", "budget"])
def test_lp_chooses_probes_c_and_predicts_what_probe_predicts(study, tmp_path, tune):
    from medtransfer.probe import run_probe

    _, splits, store, _ = study
    probe = run_probe(store, splits, [TINY_CNN], tmp_path / "probe", regimes=("full", "fewshot"), tune=tune,
                      progress=False)
    lp = _lp(study, tmp_path / "lp", tune=tune)
    assert (lp["status"] == "ok").all() and (lp["head_solver"] == "probe-logreg").all()
    assert (lp["epochs_run"] == 0).all()
    merged = probe.merge(lp, on=KEY, suffixes=("_probe", "_lp"))
    assert len(merged) == len(probe) == len(lp) == 3 * (1 + 2 * 2)
    assert set(merged["regime"]) == {"full", "fewshot"}
    assert (_chosen_c(merged.rename(columns={"hyperparameters_probe": "hyperparameters"}))
            == merged["hyperparameters_lp"].map(lambda text: json.loads(text)["C"])).all()
    # the same rows trained and the same tuning recorded, so the report pairs them
    for column in ("n_train", "trained_on", "tuning", "class_weight", "n_test"):
        assert (merged[f"{column}_probe"] == merged[f"{column}_lp"]).all(), column
    expected_tuning = {"val": {"full": "val", "fewshot": "val"}, "budget": {"full": "val", "fewshot": "cv"}}[tune]
    assert (merged["tuning_lp"] == merged["regime"].map(expected_tuning)).all()
    assert (merged.loc[merged["regime"] == "full", "trained_on_lp"] == "train+val").all()
    assert (merged.loc[merged["regime"] == "fewshot", "trained_on_lp"] == "train").all()
    assert np.allclose(merged["mcc_probe"], merged["mcc_lp"], atol=1e-9)

    keys = [*KEY, "id"]
    predictions = pd.read_parquet(tmp_path / "probe" / "predictions.parquet").merge(
        pd.read_parquet(tmp_path / "lp" / "predictions.parquet"), on=keys, suffixes=("_probe", "_lp"))
    assert len(predictions) == merged["n_test_lp"].sum()
    assert np.allclose(predictions["probability_probe"], predictions["probability_lp"], atol=1e-5)
    assert (predictions["predicted_probe"] == predictions["predicted_lp"]).all()


def test_lp_head_is_fitted_not_its_init(study, tmp_path):
    """scikit-learn's LogisticRegression, fitted on a few-shot task's standardised store features with the C lp
    chose, is what lp's saved head computes on the test rows; a fresh (or barely trained) head is not."""
    from sklearn.linear_model import LogisticRegression

    from medtransfer import cache_schema
    from medtransfer.splits.schema import load_splits

    _, splits_path, store, _ = study
    lp = _lp(study, tmp_path / "lp", folds=(0,), shots=(4,), seeds=(0,), regimes=("fewshot",))
    row = lp.iloc[0]
    fold = load_splits(splits_path).folds[0]
    train, test = fold.fewshot[4][0], fold.test
    features = cache_schema.read_features(store, cache_schema.find_group(store, TINY_CNN, None))
    labels = load_splits(splits_path).labels
    x_train, x_test = features.rows_for(train, what="train"), features.rows_for(test, what="test")
    mean, std = x_train.mean(0), x_train.std(0)
    std = np.where(std > 1e-12, std, 1.0)
    reference = LogisticRegression(C=json.loads(row["hyperparameters"])["C"], class_weight="balanced", tol=1e-10,
                                   max_iter=10_000).fit((x_train - mean) / std, [labels[i] for i in train])
    expected = reference.predict_proba((x_test - mean) / std)[:, 1]

    head = {k[len("head."):]: v for k, v in torch.load(next((tmp_path / "lp").rglob("best.pt")),
                                                          weights_only=True).items() if k.startswith("head.")}
    with torch.no_grad():
        x = (torch.tensor(x_test) - head["mean"]) * head["scale"]
        got = torch.softmax(x @ head["linear.weight"].T + head["linear.bias"], dim=1)[:, 1].numpy()
    assert np.allclose(got, expected, atol=2e-3), np.abs(got - expected).max()
    predicted = pd.read_parquet(tmp_path / "lp" / "predictions.parquet").set_index("id").loc[test, "probability"]
    assert np.allclose(predicted.to_numpy(), got, atol=1e-5)
    assert np.ptp(got) > 0.05  # an untrained head's probabilities sit near 0.5 for every image


def test_lp_without_refit_trains_on_train_only_and_says_so(study, tmp_path):
    lp = _lp(study, tmp_path / "lp", regimes=("full",), folds=(0,), refit=False)
    row = lp.iloc[0]
    splits = json.loads((study[1]).read_text())
    assert row["trained_on"] == "train" and row["n_train"] == len(splits["folds"][0]["train"])


def test_lp_probe_solver_refuses_augmented_images(study, tmp_path):
    with pytest.raises(MedtransferError, match="--option solver=gradient"):
        _lp(study, tmp_path / "lp", regimes=("full",), folds=(0,), augment="cxr")
