"""ImageNet CNNs from torchvision: the published benchmark's baselines."""

from __future__ import annotations

from collections.abc import Callable
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

CNN_PREPROCESSING = Preprocessing(input_size=224, resize="squash")


def _headless(factory: Callable[..., nn.Module], weights_enum, head: str) -> Callable[[bool], nn.Module]:
    """Build the torchvision model and replace its classifier so forward returns the pooled embedding."""

    def build(pretrained: bool) -> nn.Module:
        weights = weights_enum.DEFAULT if pretrained else None
        with download_guard(
            f"torchvision {weights_enum.__name__}.DEFAULT",
            url=weights.url if weights else None,
            hint=f"download {weights.url} (into {torch.hub.get_dir()}/checkpoints/ it is used automatically)"
            if weights
            else "",
        ):
            model = factory(weights=weights)
        setattr(model, head, nn.Identity())
        return model

    return build


def _drop_head(head: str):
    """``--weights FILE`` for a torchvision checkpoint: the file holds the full classifier; drop its head."""

    def load(model: nn.Module, path: Path) -> None:
        state = strip_ddp_prefix(read_state_dict(path))
        state = {k: v for k, v in state.items() if not k.startswith(head + ".")}
        load_state_dict_strict(model, state, path)

    return load


CONV_TARGETS = PeftTargets(conv=("conv1", "conv2", "conv3"), norm=("bn1", "bn2", "bn3", "downsample.1"))

register(
    BackboneSpec(
        name="resnet18",
        architecture="ResNet-18",
        source="torchvision ResNet18_Weights.IMAGENET1K_V1 (ImageNet-1k)",
        embed_dim=512,
        n_params_m=11.18,
        embedding_kind="global-average-pool",
        default_weights_hint=f"download {torchvision.models.ResNet18_Weights.DEFAULT.url}",
        build=_headless(torchvision.models.resnet18, torchvision.models.ResNet18_Weights, "fc"),
        preprocessing=CNN_PREPROCESSING,
        targets=PeftTargets(conv=("conv1", "conv2"), norm=("bn1", "bn2", "downsample.1")),
        state_dict_loader=_drop_head("fc"),
        published_params_m=11.7,
        published_params_delta=512 * 1000 + 1000,
        published_params_note="the full classifier; our embedding model drops the 512x1000 fc head",
    )
)
register(
    BackboneSpec(
        name="resnet50",
        architecture="ResNet-50",
        source="torchvision ResNet50_Weights.IMAGENET1K_V2 (ImageNet-1k)",
        embed_dim=2048,
        n_params_m=23.51,
        embedding_kind="global-average-pool",
        default_weights_hint=f"download {torchvision.models.ResNet50_Weights.DEFAULT.url}",
        build=_headless(torchvision.models.resnet50, torchvision.models.ResNet50_Weights, "fc"),
        preprocessing=CNN_PREPROCESSING,
        targets=CONV_TARGETS,
        state_dict_loader=_drop_head("fc"),
        published_params_m=23.5,
        published_params_note="the backbone without its fc head (25.6M with it)",
    )
)
register(
    BackboneSpec(
        name="densenet121",
        architecture="DenseNet-121",
        source="torchvision DenseNet121_Weights.IMAGENET1K_V1 (ImageNet-1k)",
        embed_dim=1024,
        n_params_m=6.95,
        embedding_kind="global-average-pool",
        default_weights_hint=f"download {torchvision.models.DenseNet121_Weights.DEFAULT.url}",
        build=_headless(torchvision.models.densenet121, torchvision.models.DenseNet121_Weights, "classifier"),
        preprocessing=CNN_PREPROCESSING,
        targets=PeftTargets(conv=("conv1", "conv2"), norm=("norm0", "norm1", "norm2", "norm", "norm5")),
        state_dict_loader=_drop_head("classifier"),
        published_params_m=7.98,
        published_params_delta=1024 * 1000 + 1000,
        published_params_note="torchvision's full classifier (quoted as 7.0-8.0M); we drop the 1024x1000 head",
    )
)
