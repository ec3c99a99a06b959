"""Tiny test-only backbones (random weights) and a small synthetic data set for the adapt tests."""

from __future__ import annotations

from contextlib import contextmanager

import torch
from torch import nn

from medtransfer.backbones import REGISTRY, BackboneSpec, PeftTargets, Preprocessing, register

TINY_VIT = "test-tiny-vit"
TINY_CNN = "test-tiny-cnn"
SIZE = 32


class TinyViT(nn.Module):
    """A 2-layer, 32-wide HF ViT; the embedding is the final-normed class token."""

    def __init__(self):
        super().__init__()
        from transformers import ViTConfig, ViTModel

        config = ViTConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                           image_size=SIZE, patch_size=8, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
        self.vit = ViTModel(config, add_pooling_layer=False)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.vit(pixel_values=images).last_hidden_state[:, 0]


class TinyCNN(nn.Module):
    """stem -> two residual-free conv blocks with BatchNorm -> global average pool (24-d)."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU())
        self.block = nn.Module()
        self.block.conv1 = nn.Conv2d(8, 16, 3, stride=2, padding=1, bias=False)
        self.block.bn1 = nn.BatchNorm2d(16)
        self.block.conv2 = nn.Conv2d(16, 24, 3, stride=2, padding=1, bias=False)
        self.block.bn2 = nn.BatchNorm2d(24)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = self.stem(images)
        x = torch.relu(self.block.bn1(self.block.conv1(x)))
        x = torch.relu(self.block.bn2(self.block.conv2(x)))
        return x.mean(dim=(2, 3))


def tiny_specs() -> list[BackboneSpec]:
    """The two test backbones' registry entries (built fresh on every call)."""
    return [
        BackboneSpec(
            name=TINY_VIT, architecture="tiny ViT (test)", source="none (test only)", embed_dim=32,
            n_params_m=0.03, embedding_kind="cls-token", build=lambda pretrained: TinyViT(),
            preprocessing=Preprocessing(input_size=SIZE), family="vit",
            targets=PeftTargets(attention=("attention.q_proj", "attention.k_proj", "attention.v_proj",
                                           "attention.o_proj"),
                                mlp=("mlp.fc1", "mlp.fc2"),
                                norm=("layernorm_before", "layernorm_after", "vit.layernorm")),
        ),
        BackboneSpec(
            name=TINY_CNN, architecture="tiny CNN (test)", source="none (test only)", embed_dim=24,
            n_params_m=0.005, embedding_kind="global-average-pool", build=lambda pretrained: TinyCNN(),
            preprocessing=Preprocessing(input_size=SIZE), family="cnn",
            targets=PeftTargets(conv=("conv1", "conv2")),  # no norm patterns: ln-tune falls back to BN types
        ),
    ]


@contextmanager
def tiny_backbones():
    """Register the test backbones for the ``with`` block; only the entries it added are removed after."""
    added = [spec.name for spec in tiny_specs() if spec.name not in REGISTRY and register(spec)]
    try:
        yield
    finally:
        for name in added:
            REGISTRY.pop(name, None)


def register_tiny_backbones() -> None:
    """For modules outside tests/adapt that still register at import (tests/adapt uses the fixture)."""
    for spec in tiny_specs():
        if spec.name not in REGISTRY:
            register(spec)

