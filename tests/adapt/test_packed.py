"""Packed runs (adapt.packed): several few-shot seeds trained as one stacked model equal the same seeds trained
one by one (same initialisation, data order and seeds), per method, on a tiny ViT and a tiny CNN; and what cannot
pack says why and runs alone."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from medtransfer.adapt import run_adapt
from medtransfer.adapt.packed import _Stack, method_refusal
from medtransfer.adapt.run import pack_groups
from medtransfer.data.manifest import load_manifest
from medtransfer.data.synthetic import SyntheticSpec, make_synthetic_dataset
from medtransfer.errors import MedtransferError
from medtransfer.splits import SplitSpec, make_splits, save_splits
from medtransfer.testing.backbones import TINY_CNN, TINY_VIT


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    folder = tmp_path_factory.mktemp("packed")
    manifest_path = make_synthetic_dataset(folder / "data", SyntheticSpec(n_patients=60, image_size=36, signal=1.5))
    splits_path = save_splits(make_splits(load_manifest(manifest_path),
                                          SplitSpec(n_folds=3, shots=(4,), fewshot_seeds=3)), folder / "splits.json")
    return manifest_path, splits_path


def _adapt(data, backbone, method, out, **options):
    manifest_path, splits_path = data
    options = {"regimes": ("fewshot",), "folds": (0,), "epochs": 3, "lr": 3e-3, "batch_size": 4, "patience": 1,
               "progress": False, "log": lambda _: None, "weights": "random", "device": "cpu", **options}
    return run_adapt(manifest_path, splits_path, backbone=backbone, method=method, out=out, **options)


def _predictions(out) -> pd.DataFrame:
    return pd.read_parquet(out / "predictions.parquet").sort_values(["seed", "id"]).reset_index(drop=True)


def _assert_same(alone, packed, tmp_path):
    keys = ["seed", "epochs_run", "best_epoch"]
    assert alone.sort_values("seed")[keys].values.tolist() == packed.sort_values("seed")[keys].values.tolist()
    np.testing.assert_allclose(packed.sort_values("seed")["best_val_mcc"], alone.sort_values("seed")["best_val_mcc"],
                               atol=1e-6)
    a, p = _predictions(tmp_path / "alone"), _predictions(tmp_path / "packed")
    np.testing.assert_allclose(p["probability"], a["probability"], atol=2e-5)
    assert (p["predicted"] == a["predicted"]).all()


PACKING = [
    (TINY_VIT, "lora", {}), (TINY_VIT, "vera", {}), (TINY_VIT, "ia3", {}), (TINY_VIT, "bitfit", {}),
    (TINY_VIT, "ln-tune", {}), (TINY_VIT, "vpt-deep", {}), (TINY_VIT, "lp", {"solver": "gradient", "augment": "cxr"}),
    (TINY_VIT, "fft", {}),
    (TINY_CNN, "lora", {}), (TINY_CNN, "ia3", {}), (TINY_CNN, "bitfit", {}),
    # BatchNorm trains (batch statistics and running statistics per run, under vmap)
    (TINY_CNN, "ln-tune", {}), (TINY_CNN, "fft", {}),
]


@pytest.mark.parametrize(("backbone", "method", "options"), PACKING, ids=[f"{b}-{m}" for b, m, _ in PACKING])
def test_packed_runs_equal_the_same_runs_alone(data, tmp_path, backbone, method, options):
    alone = _adapt(data, backbone, method, tmp_path / "alone", pack=1, **options)
    logs: list[str] = []
    packed = _adapt(data, backbone, method, tmp_path / "packed", pack=3, log=logs.append, **options)
    assert any(line.startswith("packed: fewshot4-seed0-fold0, fewshot4-seed1-fold0, fewshot4-seed2") for line in logs)
    assert (alone["status"] == "ok").all() and (packed["status"] == "ok").all()
    _assert_same(alone, packed, tmp_path)


def test_packed_runs_without_clipping_and_with_a_sampler_equal_alone(data, tmp_path):
    options = {"max_grad_norm": None, "balance": "sampler", "optimizer": "sgd", "epochs": 2}
    alone = _adapt(data, TINY_VIT, "lora", tmp_path / "alone", pack=1, **options)
    packed = _adapt(data, TINY_VIT, "lora", tmp_path / "packed", pack=2, **options)  # a pack of 2, then 1
    _assert_same(alone, packed, tmp_path)


def test_gradient_clipping_is_per_run():
    """One run's huge gradient must not shrink another run's (a global norm over the stack would)."""
    from medtransfer.adapt.config import AdaptConfig

    stack = _Stack.__new__(_Stack)
    stack.params = {"w": torch.zeros(2, 3, requires_grad=True)}
    stack.params["w"].grad = torch.tensor([[100.0, 0, 0], [0.3, 0.4, 0]])
    stack.config = AdaptConfig()
    stack.clip_per_run(1.0)
    torch.testing.assert_close(stack.params["w"].grad[1], torch.tensor([0.3, 0.4, 0.0]))
    torch.testing.assert_close(stack.params["w"].grad[0].norm(), torch.tensor(1.0), atol=1e-5, rtol=0)


def test_a_killed_packed_run_resumes_alone_or_packed(data, tmp_path):
    """State files of a pack are lone-run state files: a pack killed after epoch 1 resumes to the same result."""
    reference = _adapt(data, TINY_VIT, "lora", tmp_path / "alone", pack=1, patience=5)
    packed = _adapt(data, TINY_VIT, "lora", tmp_path / "packed", pack=3, patience=5)
    _assert_same(reference, packed, tmp_path)
    # simulate a kill after epoch 1: rerun 1 epoch with the state kept, then resume to 3
    out = tmp_path / "killed"
    from medtransfer.adapt import packed as packed_module

    real = packed_module._PackedFit._epoch
    calls = {"n": 0}

    def dying(self, epoch):
        if calls["n"] == 1:
            raise KeyboardInterrupt
        calls["n"] += 1
        real(self, epoch)

    packed_module._PackedFit._epoch = dying
    try:
        with pytest.raises(KeyboardInterrupt):
            _adapt(data, TINY_VIT, "lora", out, pack=3, patience=5)
    finally:
        packed_module._PackedFit._epoch = real
    assert len(list((out / "adapt-runs").rglob("state.pt"))) == 3
    resumed = _adapt(data, TINY_VIT, "lora", out, pack=3, patience=5, resume=True)
    np.testing.assert_allclose(resumed.sort_values("seed")["mcc"], reference.sort_values("seed")["mcc"], atol=1e-6)
    a, r = _predictions(tmp_path / "alone"), _predictions(out)
    np.testing.assert_allclose(r["probability"], a["probability"], atol=2e-5)


def test_methods_that_cannot_pack_say_why_and_run_alone(data, tmp_path):
    logs: list[str] = []
    table = _adapt(data, TINY_VIT, "lora", tmp_path, pack=3, dropout=0.1, log=logs.append, epochs=1)
    assert (table["status"] == "ok").all()
    assert any("runs one task at a time: the method's dropout" in line for line in logs)
    from medtransfer.adapt.config import AdaptConfig
    from medtransfer.adapt.methods import get_method

    adalora = get_method("adalora")
    assert "per-step hook" in method_refusal(adalora, adalora.make_options(), AdaptConfig())
    lp = get_method("lp")
    assert "no gradient epochs" in method_refusal(lp, lp.make_options(), AdaptConfig())
    assert "GradScaler" in method_refusal(get_method("lora"), get_method("lora").make_options(),
                                          AdaptConfig(precision="fp16"))


def test_pack_groups_hold_tasks_of_equal_training_size():
    from medtransfer.splits.tasks import Task

    def task(regime, n, seed):
        return Task(regime=regime, fold=0, seed=seed, shots=n, train=[str(i) for i in range(n)], val=[], test=[],
                    refit_with_val=False)

    tasks = [task("fewshot", 4, 0), task("fewshot", 8, 0), task("fewshot", 4, 1), task("fewshot", 4, 2)]
    assert pack_groups(tasks, 2) == [[0, 2], [1], [3]]
    assert pack_groups(tasks, 1) == [[0], [1], [2], [3]]


def test_pack_below_one_is_refused(data, tmp_path):
    with pytest.raises(MedtransferError, match="--pack must be at least 1"):
        _adapt(data, TINY_VIT, "lora", tmp_path, pack=0)


def test_cli_pack_option(data, tmp_path, cli):
    manifest_path, splits_path = data
    result = cli("adapt", str(manifest_path), "--splits", str(splits_path), "--backbone", TINY_VIT, "--method",
                 "lora", "--weights", "random", "--out", str(tmp_path), "--regime", "fewshot", "--folds", "0",
                 "--epochs", "1", "--batch-size", "4", "--device", "cpu", "--pack", "3")
    assert result.exit_code == 0, result.output
    assert "packed: fewshot4-seed0-fold0" in result.output
    result = cli("adapt", str(manifest_path), "--splits", str(splits_path), "--backbone", TINY_VIT, "--weights",
                 "random", "--out", str(tmp_path / "b"), "--pack", "0")
    assert result.exit_code == 2 and "error: --pack must be at least 1" in result.output
