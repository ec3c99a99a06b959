"""Tiny backbones with random weights, one per layout the adapters must handle (HF, open_clip and timm ViTs, a
CNN with BatchNorm), each a few thousand parameters at 32 px: a whole adapt or study run takes seconds on a CPU.
Their names start with ``test-`` and their source says "none": they are never a published model."""

from __future__ import annotations

from contextlib import contextmanager

import torch
from torch import nn

from medtransfer.backbones import REGISTRY, BackboneSpec, PeftTargets, Preprocessing, register

TINY_VIT = "test-tiny-vit"
TINY_OPEN_CLIP = "test-tiny-open-clip"
TINY_TIMM = "test-tiny-timm-vit"
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


def tiny_open_clip() -> nn.Module:
    """open_clip's own ViT layout (nn.MultiheadAttention, mlp.c_fc / c_proj, ln_1 / ln_2), 2 x 32 wide."""
    from open_clip.transformer import VisionTransformer

    from medtransfer.backbones.families.open_clip_models import wrap_open_clip_vit

    return wrap_open_clip_vit(VisionTransformer(image_size=SIZE, patch_size=8, width=32, layers=2, heads=2,
                                                mlp_ratio=2.0, output_dim=16))


def tiny_timm() -> nn.Module:
    """timm's ViT layout (fused attn.qkv + attn.proj, mlp.fc1 / fc2, norm1 / norm2), 2 x 32 wide."""
    from timm.models.vision_transformer import VisionTransformer

    from medtransfer.backbones.vit import ViTEmbedder

    vit = VisionTransformer(img_size=SIZE, patch_size=8, embed_dim=32, depth=2, num_heads=2, mlp_ratio=2.0,
                            num_classes=0)
    return ViTEmbedder(vit, lambda model, x: model.forward_features(x), token_dim=32)


def tiny_specs() -> list[BackboneSpec]:
    """The test backbones' registry entries (built fresh on every call): ViTs in the HF, open_clip and timm
    layouts, and a CNN."""
    from medtransfer.backbones.families.open_clip_models import OPEN_CLIP_VIT_TARGETS, timm_vit_targets

    return [
        BackboneSpec(
            name=TINY_VIT, architecture="tiny ViT (test)", source="none (test only)", embed_dim=32,
            n_params_m=0.023904, embedding_kind="cls-token", build=lambda pretrained: TinyViT(),
            preprocessing=Preprocessing(input_size=SIZE), family="vit",
            targets=PeftTargets(attention=("attention.q_proj", "attention.k_proj", "attention.v_proj",
                                           "attention.o_proj"),
                                mlp=("mlp.fc1", "mlp.fc2"),
                                norm=("layernorm_before", "layernorm_after", "vit.layernorm")),
        ),
        BackboneSpec(
            # the pre-projection class token (issue 12: the default embedding), the width, not output_dim 16
            name=TINY_OPEN_CLIP, architecture="tiny open_clip ViT (test)", source="none (test only)", embed_dim=32,
            n_params_m=0.024448, embedding_kind="cls-token", build=lambda pretrained: tiny_open_clip(),
            preprocessing=Preprocessing(input_size=SIZE), family="vit", targets=OPEN_CLIP_VIT_TARGETS,
        ),
        BackboneSpec(
            name=TINY_TIMM, architecture="tiny timm ViT (test)", source="none (test only)", embed_dim=32,
            n_params_m=0.023904, embedding_kind="cls-token", build=lambda pretrained: tiny_timm(),
            preprocessing=Preprocessing(input_size=SIZE), family="vit", targets=timm_vit_targets("backbone.norm"),
        ),
        BackboneSpec(
            name=TINY_CNN, architecture="tiny CNN (test)", source="none (test only)", embed_dim=24,
            n_params_m=0.00492, embedding_kind="global-average-pool", build=lambda pretrained: TinyCNN(),
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
    """Register the tiny backbones for good (a study plugin, a benchmark); ``tiny_backbones`` undoes it after."""
    for spec in tiny_specs():
        if spec.name not in REGISTRY:
            register(spec)

