"""Support for the extract and cache tests (no tests here): tiny images, manifests, tiny backbones (a fixture)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from torch import nn

from medtransfer.backbones import REGISTRY, BackboneSpec, Preprocessing

TINY = "tiny-test-cnn"
TINY2 = "tiny-test-cnn-b"
NAN = "tiny-test-nan"
SIZE = 32
PREP = Preprocessing(input_size=SIZE)


class TinyCNN(nn.Module):
    def __init__(self, width: int = 16):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, stride=2)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(8, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.pool(torch.relu(self.conv(x))).flatten(1))


class NaNModel(TinyCNN):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = super().forward(x)
        bright = x.mean(dim=(1, 2, 3)) > 1.5  # only very bright images give NaN
        out[bright] = float("nan")
        return out


def _spec(name: str, build, dim: int = 16) -> BackboneSpec:
    return BackboneSpec(name=name, architecture="tiny", source="test", embed_dim=dim, n_params_m=0.0,
                        embedding_kind="global-average-pool", build=build, preprocessing=PREP)


def tiny_specs() -> list[BackboneSpec]:
    """The tiny test backbones: two CNN widths and one that gives NaN for very bright images."""
    return [_spec(TINY, lambda pretrained: TinyCNN()), _spec(TINY2, lambda pretrained: TinyCNN(24), dim=24),
            _spec(NAN, lambda pretrained: NaNModel())]


@pytest.fixture
def tiny_backbones(monkeypatch) -> list[str]:
    """Register the tiny backbones for one test; they leave the registry when it ends."""
    for spec in tiny_specs():
        monkeypatch.setitem(REGISTRY, spec.name, spec)
    return [TINY, TINY2, NAN]


def make_images(folder: Path, n: int, seed: int = 0, prefix: str = "img", size: int = 40) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(n):
        path = folder / f"{prefix}{i:03d}.png"
        if i % 3 == 2:  # some 16-bit images
            Image.fromarray(rng.integers(0, 65535, (size, size + 4), dtype=np.uint16)).save(path)
        else:
            Image.fromarray(rng.integers(0, 255, (size + 4, size), dtype=np.uint8)).save(path)
        paths.append(path)
    return paths


def write_manifest(path: Path, images: list[Path], ids: list[str] | None = None) -> Path:
    ids = ids or [p.stem for p in images]
    pd.DataFrame({"id": ids, "image": [str(p) for p in images],
                  "label": [str(i % 2) for i in range(len(images))]}).to_csv(path, index=False)
    return path


def extract_kwargs(**overrides) -> dict:
    kwargs = dict(weights="random", batch_size=4, device="cpu", num_workers=0, chunk_rows=4, progress=False)
    kwargs.update(overrides)
    return kwargs
