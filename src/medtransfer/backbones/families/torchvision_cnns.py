"""ImageNet CNNs from torchvision: the published benchmark's baselines.

Preprocessing is read off each weights enum's own evaluation transform (``weights.transforms()``, an
``ImageClassification`` preset: resize the shorter side to ``resize_size``, center-crop ``crop_size``,
bilinear, ImageNet mean / std; pytorch/vision torchvision/models/resnet.py and densenet.py), so the constants
are upstream's by construction: ResNet-18 / ResNet-50 V1 / DenseNet-121: 256 -> 224, ResNet-50 V2: 232 -> 224.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import torch
import torchvision
from torch import nn

from medtransfer.backbones.hub import download_guard
from medtransfer.backbones.registry import (
    BackboneSpec,
    PeftTargets,
    Preprocessing,
    load_state_dict_strict,
    read_state_dict,
    register,
    strip_ddp_prefix,
)


def upstream_preprocessing(weights) -> Preprocessing:
    """The evaluation transform torchvision publishes with ``weights`` (``weights.transforms()``)."""
    preset = weights.transforms()
    crop, resize = int(preset.crop_size[0]), int(preset.resize_size[0])
    return Preprocessing(
        input_size=crop,
        resize="center-crop",
        crop_fraction=crop / resize,
        mean=tuple(float(v) for v in preset.mean),
        std=tuple(float(v) for v in preset.std),
        interpolation=preset.interpolation.value,
    )


# torchvision's DenseNet checkpoints (densenet121-a639ec97.pth) keep the pre-0.4 key layout "norm.1", "conv.2"
# inside each dense layer; torchvision remaps them in densenet._load_state_dict with this pattern
# (pytorch/vision torchvision/models/densenet.py)
_DENSENET_LEGACY = re.compile(
    r"^(.*denselayer\d+\.(?:norm|relu|conv))\.((?:[12])\.(?:weight|bias|running_mean|running_var))$"
)


def remap_legacy_densenet(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    out = {}
    for key, value in state.items():
        match = _DENSENET_LEGACY.match(key)
        out[match.group(1) + match.group(2) if match else key] = value
    return out


CNN_FEATURES = ()  # one pooled vector: no token variants


def _headless(factory: Callable[..., nn.Module], weights, head: str) -> Callable[[bool], nn.Module]:
    """Build the torchvision model and replace its classifier so forward returns the pooled embedding."""

    def build(pretrained: bool) -> nn.Module:
        weights_enum = type(weights)
        with download_guard(
            f"torchvision {weights_enum.__name__}.{weights.name}",
            url=weights.url if pretrained else None,
            hint=f"download {weights.url} (into {torch.hub.get_dir()}/checkpoints/ it is used automatically)"
            if pretrained
            else "",
        ):
            model = factory(weights=weights if pretrained else None)
        setattr(model, head, nn.Identity())
        return model

    return build


def _drop_head(head: str):
    """``--weights FILE`` for a torchvision checkpoint: the file holds the full classifier; drop its head."""

    def load(model: nn.Module, path: Path) -> None:
        state = remap_legacy_densenet(strip_ddp_prefix(read_state_dict(path)))
        state = {k: v for k, v in state.items() if not k.startswith(head + ".")}
        load_state_dict_strict(model, state, path)

    return load


CONV_TARGETS = PeftTargets(conv=("conv1", "conv2", "conv3"), norm=("bn1", "bn2", "bn3", "downsample.1"))
# the benchmark's resnet_50.yaml / dense121.yaml: modules_target [conv1]; by peft's suffix rule "conv1"
# selects ResNet's stem conv1 and every block's conv1, DenseNet's conv1 of every dense layer
SEED_CONV = ("conv1",)
TV = torchvision.models
_SOURCES_TV = (
    ("preprocessing", "weights.transforms(): pytorch/vision torchvision/models/resnet.py, densenet.py"),
    ("seed targets",
     "cosbidev/Deep-Sick src/configs/PEFT_runs/experiment/models/resnet_18.yaml, resnet_50.yaml, dense121.yaml"),
)


def _register_cnn(name: str, architecture: str, factory, weights, head: str, targets: PeftTargets, *,
                  embed_dim: int, n_params_m: float, published: tuple[float, int, str]) -> None:
    pub_m, delta, note = published
    register(
        BackboneSpec(
            name=name,
            architecture=architecture,
            source=f"torchvision {type(weights).__name__}.{weights.name} (ImageNet-1k)",
            weights_id=weights.url,
            embed_dim=embed_dim,
            n_params_m=n_params_m,
            embedding_kind="global-average-pool",
            default_weights_hint=f"download {weights.url}",
            build=_headless(factory, weights, head),
            preprocessing=upstream_preprocessing(weights),
            targets=targets,
            state_dict_loader=_drop_head(head),
            published_params_m=pub_m,
            published_params_delta=delta,
            published_params_note=note,
            feature_variants=CNN_FEATURES,
            sources=_SOURCES_TV,
        )
    )


_register_cnn(
    "resnet18", "ResNet-18", TV.resnet18, TV.ResNet18_Weights.IMAGENET1K_V1, "fc",
    PeftTargets(conv=("conv1", "conv2"), norm=("bn1", "bn2", "downsample.1"), seed=SEED_CONV),
    embed_dim=512, n_params_m=11.18,
    published=(11.7, 512 * 1000 + 1000, "the full classifier; our embedding model drops the 512x1000 fc head"),
)
# IMAGENET1K_V1: what ``pretrained=True`` loaded in the benchmark's era, and MedCLIP's starting point
# (RyanWangZf/MedCLIP medclip/modeling_medclip.py: ``resnet50(pretrained=True)``)
_register_cnn(
    "resnet50", "ResNet-50", TV.resnet50, TV.ResNet50_Weights.IMAGENET1K_V1, "fc",
    replace(CONV_TARGETS, seed=SEED_CONV),
    embed_dim=2048, n_params_m=23.51, published=(23.5, 0, "the backbone without its fc head (25.6M with it)"),
)
_register_cnn(
    "resnet50-v2", "ResNet-50 (V2 recipe)", TV.resnet50, TV.ResNet50_Weights.IMAGENET1K_V2, "fc", CONV_TARGETS,
    embed_dim=2048, n_params_m=23.51, published=(23.5, 0, "the backbone without its fc head (25.6M with it)"),
)
_register_cnn(
    "densenet121", "DenseNet-121", TV.densenet121, TV.DenseNet121_Weights.IMAGENET1K_V1, "classifier",
    PeftTargets(conv=("conv1", "conv2"), norm=("norm0", "norm1", "norm2", "norm", "norm5"), seed=SEED_CONV),
    embed_dim=1024, n_params_m=6.95,
    published=(7.98, 1024 * 1000 + 1000,
               "torchvision's full classifier (quoted as 7.0-8.0M); we drop the 1024x1000 head"),
)
