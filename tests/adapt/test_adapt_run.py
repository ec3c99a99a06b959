"""adapt end to end on a small synthetic data set with tiny random-weight backbones: it learns, it writes
probe's table plus its own columns, lp agrees with probe's logreg, and a killed run resumes."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from medtransfer.adapt import run_adapt
from medtransfer.adapt.augment import AugmentSpec, augment_batch
from medtransfer.data.manifest import load_manifest
from medtransfer.data.synthetic import SyntheticSpec, make_synthetic_dataset
from medtransfer.errors import MedtransferError
from medtransfer.splits import SplitSpec, make_splits, save_splits
from medtransfer.testing.backbones import SIZE, TINY_CNN, TINY_VIT

ADAPT_COLUMNS = ("trainable_params", "total_params", "pct_trainable", "epochs_run", "best_epoch",
                 "peak_memory_mb", "train_seconds")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    folder = tmp_path_factory.mktemp("adapt")
    manifest_path = make_synthetic_dataset(folder / "data", SyntheticSpec(n_patients=80, image_size=40, signal=1.5))
    manifest = load_manifest(manifest_path)
    splits_path = save_splits(make_splits(manifest, SplitSpec(n_folds=3, shots=(4,), fewshot_seeds=1)),
                              folder / "splits.json")
    return manifest_path, splits_path, folder


def _adapt(data, backbone, method, out, **options):
    manifest_path, splits_path, _ = data
    options = {"regimes": ("full",), "folds": (0,), "epochs": 6, "lr": 3e-3, "batch_size": 16,
               "progress": False, "log": lambda _: None, "weights": "random", **options}
    return run_adapt(manifest_path, splits_path, backbone=backbone, method=method, out=out, **options)


@pytest.mark.parametrize(("backbone", "method", "options"), [
    (TINY_CNN, "fft", {}), (TINY_CNN, "lora", {}), (TINY_CNN, "bitfit", {}), (TINY_CNN, "lp", {"solver": "gradient"}),
    (TINY_VIT, "lora", {})])
def test_a_few_epochs_lift_validation_mcc_above_chance(data, tmp_path, backbone, method, options):
    table = _adapt(data, backbone, method, tmp_path, **options)
    row = table.iloc[0]
    assert row["status"] == "ok"
    assert row["best_val_mcc"] > 0.3, row.to_dict()
    assert 1 <= row["best_epoch"] <= row["epochs_run"] <= 6


def test_rows_share_probes_table_and_add_adapt_columns(data, tmp_path):
    table = _adapt(data, TINY_CNN, "lora", tmp_path, regimes=("full", "fewshot"), epochs=1, rank=4)
    assert sorted(table["regime"]) == ["fewshot", "full"]
    assert set(table["method"]) == {"lora-r4"}
    saved = pd.read_parquet(tmp_path / "results.parquet")
    assert len(saved) == 2
    for column in ("backbone", "method", "regime", "shots", "seed", "fold", "mcc", "roc_auc", *ADAPT_COLUMNS):
        assert column in saved.columns
    assert (saved["pct_trainable"] == 100 * saved["trainable_params"] / saved["total_params"]).all()
    assert '"alpha": 8.0' in saved["hyperparameters"].iloc[0]
    predictions = pd.read_parquet(tmp_path / "predictions.parquet")
    assert len(predictions) == saved["n_test"].sum()
    assert set(predictions["method"]) == {"lora-r4"}
    best = torch.load(next((tmp_path / "adapt-runs").rglob("best.pt")), weights_only=True)
    assert best and all("lora_" in k or k.startswith("head.") for k in best)  # adapter weights + head only


def test_lp_agrees_with_probe_logreg(data, tmp_path):
    from medtransfer.extract import extract_features
    from medtransfer.probe import run_probe

    manifest_path, splits_path, _ = data
    store = tmp_path / "features.zarr"
    extract_features(manifest_path, TINY_CNN, store, weights="random", progress=False, num_workers=0,
                     pixel_cache=True)
    probe = run_probe(store, splits_path, [TINY_CNN], tmp_path / "probe", regimes=("full",), progress=False)
    # lp fits probe's logreg on its own embeddings (8-bit pixels in memory, so not bit-equal to the store's:
    # tests/adapt/test_lp_probe_agreement.py has the exact comparison) and refits on train + val as probe does
    options = {"folds": None}
    lp = _adapt(data, TINY_CNN, "lp", tmp_path / "lp", **options)
    merged = probe.merge(lp, on=["fold", "regime"], suffixes=("_probe", "_lp"))
    assert len(merged) == 3
    assert (merged["trained_on_lp"] == "train+val").all() and (merged["n_train_lp"] == merged["n_train_probe"]).all()
    assert abs(merged["mcc_probe"].mean() - merged["mcc_lp"].mean()) <= 0.05, merged[["mcc_probe", "mcc_lp"]]

    messages = []
    cached = _adapt(data, TINY_CNN, "lp", tmp_path / "lp-cached", pixel_cache=tmp_path / "features.pixels.zarr",
                    log=messages.append, **options)
    assert any("read from pixel cache" in m for m in messages), messages
    assert cached["mcc"].mean() == pytest.approx(lp["mcc"].mean(), abs=0.05)


def test_killed_run_resumes_from_its_last_epoch(data, tmp_path, monkeypatch):
    import medtransfer.adapt.train as train

    reference = _adapt(data, TINY_CNN, "lora", tmp_path / "reference", epochs=3, patience=10)
    calls = {"n": 0}
    real = train.compute_metrics

    def dies_in_epoch_two(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(train, "compute_metrics", dies_in_epoch_two)
    with pytest.raises(KeyboardInterrupt):
        _adapt(data, TINY_CNN, "lora", tmp_path / "killed", epochs=3, patience=10)
    assert list((tmp_path / "killed").rglob("state.pt"))
    monkeypatch.setattr(train, "compute_metrics", real)
    resumed = _adapt(data, TINY_CNN, "lora", tmp_path / "killed", epochs=3, patience=10, resume=True)
    assert resumed["epochs_run"].iloc[0] == 3
    assert resumed["mcc"].iloc[0] == pytest.approx(reference["mcc"].iloc[0])
    assert not list((tmp_path / "killed").rglob("state.pt"))
    again = _adapt(data, TINY_CNN, "lora", tmp_path / "killed", epochs=3, patience=10, resume=True)
    assert again["train_seconds"].iloc[0] == resumed["train_seconds"].iloc[0]  # finished task kept, not re-run


def test_errors_the_user_can_fix(data, tmp_path):
    manifest_path, _, folder = data
    other = make_synthetic_dataset(folder / "other", SyntheticSpec(n_patients=40, image_size=SIZE, seed=3))
    other_splits = save_splits(make_splits(load_manifest(other), SplitSpec(n_folds=2, val_fraction=0.3)),
                               folder / "other.json")
    with pytest.raises(MedtransferError, match="another manifest"):
        run_adapt(manifest_path, other_splits, backbone=TINY_CNN, method="lora", out=tmp_path, weights="random")
    with pytest.raises(MedtransferError, match="unknown adapt option"):
        _adapt(data, TINY_CNN, "lora", tmp_path, learning_rate=1)
    with pytest.raises(MedtransferError, match="no task left"):
        _adapt(data, TINY_CNN, "lora", tmp_path, folds=(7,))
    with pytest.raises(MedtransferError, match=r"^--precision must be auto, fp32, bf16, fp16, got 'fp8'$"):
        _adapt(data, TINY_CNN, "lora", tmp_path, precision="fp8")
    with pytest.raises(MedtransferError, match="fp16 trains only on a CUDA device .* use bf16 or fp32"):
        _adapt(data, TINY_CNN, "lora", tmp_path, precision="fp16", device="cpu")
    with pytest.raises(MedtransferError, match=r"unknown adapt option\(s\) rank for method 'fft'"):
        _adapt(data, TINY_CNN, "fft", tmp_path, rank=4)


def test_resume_refuses_other_method_options(data, tmp_path, monkeypatch):
    import medtransfer.adapt.train as train

    real, calls = train.compute_metrics, []

    def dies_in_epoch_two(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(train, "compute_metrics", dies_in_epoch_two)
    with pytest.raises(KeyboardInterrupt):
        _adapt(data, TINY_CNN, "lora", tmp_path, epochs=2, rank=4, alpha=8.0)
    monkeypatch.undo()
    with pytest.raises(MedtransferError, match="started with other settings"):
        _adapt(data, TINY_CNN, "lora", tmp_path, epochs=2, rank=4, alpha=2.0, resume=True)
    resumed = _adapt(data, TINY_CNN, "lora", tmp_path, epochs=2, rank=4, alpha=8.0, resume=True)
    assert resumed["epochs_run"].iloc[0] == 2 and resumed["status"].iloc[0] == "ok"


def test_augmentation_keeps_shape_range_and_is_seeded():
    images = torch.rand(4, 1, SIZE, SIZE)
    a = augment_batch(images, AugmentSpec(), torch.Generator().manual_seed(0))
    b = augment_batch(images, AugmentSpec(), torch.Generator().manual_seed(0))
    assert a.shape == images.shape and a.min() >= 0 and a.max() <= 1
    assert torch.equal(a, b) and not torch.equal(a, images)
    still = AugmentSpec(scale=(1.0, 1.0), ratio=(1.0, 1.0), degrees=0.0, brightness=0.0, contrast=0.0)
    assert torch.allclose(augment_batch(images, still, torch.Generator()), images, atol=1e-5)
    assert np.isfinite(a.numpy()).all()


@pytest.mark.parametrize(("backbone", "method"), [
    *[(TINY_VIT, m) for m in ("lp-ft", "ln-tune", "ia3", "vera", "dora", "loha", "lokr", "oft", "boft")],
    *[(TINY_CNN, m) for m in ("lp-ft", "ln-tune", "ia3", "dora", "oft")],
])
def test_every_method_runs_a_task_end_to_end(data, tmp_path, backbone, method):
    table = _adapt(data, backbone, method, tmp_path, regimes=("fewshot",), epochs=1, grad_accumulation=2,
                   balance="sampler", early_stopping="loss", options={"block_size": 8} if method == "oft" else None)
    row = table.iloc[0]
    assert row["status"] == "ok" and row["regime"] == "fewshot" and row["n_train"] == 8
    assert np.isfinite(row["roc_auc"]) and 0 < row["pct_trainable"] <= 100
    assert (tmp_path / "predictions.parquet").is_file()


class _WritesMarker:
    """A pickle payload: unpickling it would create the marker file (what a crafted state.pt could do)."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_resume_refuses_a_crafted_pickle_and_runs_nothing(data, tmp_path, monkeypatch):
    import medtransfer.adapt.train as train

    calls = {"n": 0}
    real = train.compute_metrics

    def dies_in_epoch_two(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(train, "compute_metrics", dies_in_epoch_two)
    with pytest.raises(KeyboardInterrupt):
        _adapt(data, TINY_CNN, "lora", tmp_path / "run", epochs=3, patience=10)
    monkeypatch.setattr(train, "compute_metrics", real)
    (state,) = list((tmp_path / "run").rglob("state.pt"))
    marker = tmp_path / "executed"
    torch.save({"epoch": 1, "payload": _WritesMarker(marker)}, state)
    with pytest.raises(MedtransferError, match="refusing checkpoint .*state.pt: it holds code or Python objects that "
                       "are not tensors") as caught:
        _adapt(data, TINY_CNN, "lora", tmp_path / "run", epochs=3, patience=10, resume=True)
    assert "\n" not in str(caught.value)
    assert not marker.exists()
