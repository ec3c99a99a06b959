"""The CUDA-only branches of adapt, their logic checked on the CPU: bf16 autocast (also packed), the fp16
GradScaler sequence (scale, unscale, clip, step, update), channels_last, ``--compile``; and the device suite's
dry run (benchmarks/gpu_suite.sh with DRY_RUN=1; opt-in, it takes minutes). Pinned memory (``PixelStore.batch``
to CUDA) needs a CUDA driver to pin pages at all, so it has no CPU test."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from medtransfer.adapt import run_adapt, train
from medtransfer.data.manifest import load_manifest
from medtransfer.data.synthetic import SyntheticSpec, make_synthetic_dataset
from medtransfer.splits import SplitSpec, make_splits, save_splits
from medtransfer.testing.backbones import TINY_CNN, TINY_VIT

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    folder = tmp_path_factory.mktemp("gpu-paths")
    manifest_path = make_synthetic_dataset(folder / "data", SyntheticSpec(n_patients=50, image_size=36, signal=1.5))
    splits_path = save_splits(make_splits(load_manifest(manifest_path),
                                          SplitSpec(n_folds=3, shots=(4,), fewshot_seeds=2)), folder / "splits.json")
    return manifest_path, splits_path


def _adapt(data, out, backbone=TINY_VIT, **options):
    manifest_path, splits_path = data
    options = {"regimes": ("fewshot",), "folds": (0,), "epochs": 2, "lr": 3e-3, "batch_size": 4, "progress": False,
               "log": lambda _: None, "weights": "random", "device": "cpu", "method": "lora", **options}
    return run_adapt(manifest_path, splits_path, backbone=backbone, out=out, **options)


def _probabilities(out) -> np.ndarray:
    return pd.read_parquet(out / "predictions.parquet").sort_values(["seed", "id"])["probability"].to_numpy()


def test_bf16_autocast_trains_alone_and_packed(data, tmp_path):
    alone = _adapt(data, tmp_path / "alone", precision="bf16", pack=1)
    packed = _adapt(data, tmp_path / "packed", precision="bf16", pack=2)
    assert (alone["status"] == "ok").all() and (packed["status"] == "ok").all()
    # bf16 rounds at 8 bits of mantissa: packed and lone runs agree to bf16's precision, not fp32's
    np.testing.assert_allclose(_probabilities(tmp_path / "packed"), _probabilities(tmp_path / "alone"), atol=0.05)


def test_the_fp16_grad_scaler_sequence_trains(data, tmp_path, monkeypatch):
    """fp16 is refused off CUDA; here train.autocast_dtype says fp16 on the CPU (CPU autocast supports fp16), so
    fit runs its GradScaler branch: scaled loss, unscale before clipping, scaler.step / update, state saved."""
    monkeypatch.setattr(train, "autocast_dtype", lambda precision, device: torch.float16)
    seen = {}
    real = torch.amp.GradScaler.step

    def step(self, optimizer, *args, **kwargs):
        seen["enabled"], seen["scale"] = self.is_enabled(), self.get_scale()
        return real(self, optimizer, *args, **kwargs)

    monkeypatch.setattr(torch.amp.GradScaler, "step", step)
    table = _adapt(data, tmp_path, pack=1, seeds=(0,))
    assert (table["status"] == "ok").all()
    assert seen["enabled"] and seen["scale"] > 1.0  # the loss really was scaled


def test_channels_last_gives_the_same_predictions(data, tmp_path):
    _adapt(data, tmp_path / "nchw", backbone=TINY_CNN, channels_last=False, seeds=(0,))
    _adapt(data, tmp_path / "nhwc", backbone=TINY_CNN, channels_last=True, seeds=(0,))
    np.testing.assert_allclose(_probabilities(tmp_path / "nhwc"), _probabilities(tmp_path / "nchw"), atol=1e-5)


def test_compile_option_runs_fit_through_torch_compile(data, tmp_path, monkeypatch):
    """--compile hands the module to torch.compile (checked with the eager backend: inductor would build C++ for
    minutes on this CPU); the packed path refuses it with its reason and runs one by one."""
    compiled = []
    real = torch.compile

    def eager_compile(module, **kwargs):
        compiled.append(type(module).__name__)
        return real(module, backend="eager")

    monkeypatch.setattr(torch, "compile", eager_compile)
    logs: list[str] = []
    table = _adapt(data, tmp_path, compile=True, pack=2, epochs=1, log=logs.append)
    assert (table["status"] == "ok").all()
    assert compiled == ["Classifier", "Classifier"]
    assert any("--compile compiles one run's model" in line for line in logs)


@pytest.mark.skipif(os.environ.get("MEDTRANSFER_GPU_SUITE_DRY_RUN") != "1",
                    reason="minutes on a shared CPU: MEDTRANSFER_GPU_SUITE_DRY_RUN=1 runs it")
def test_gpu_suite_dry_run_writes_its_figures(tmp_path):
    """benchmarks/gpu_suite.sh at tiny sizes on the CPU: every stage runs and the JSON holds each one's figures
    (several minutes on the shared 2-core machine, so opt-in; run before a device session)."""
    env = {**os.environ, "DRY_RUN": "1", "OUT": str(tmp_path), "PYTHONPATH": str(ROOT / "src")}
    result = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu_suite.sh")], env=env, capture_output=True,
                            text=True, timeout=800)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    report = json.loads((tmp_path / "gpu_suite.json").read_text())
    assert report["dry_run"] and report["device"] == "cpu"
    assert {s["status"] for s in report["stages"].values()} == {"ok"}
    assert report["stages"]["adapt-lora-resnet18"]["figures"]["fraction_of_ceiling"] > 0
    assert report["stages"]["packed-test-tiny-vit"]["figures"]["max_probability_difference"] < 1e-4
    assert "extract" in report["stages"]["extract-resnet18"]["output_tail"]
