"""ImageNet CNNs from torchvision: the published benchmark's baselines."""

from __future__ import annotations

from collections.abc import Callable

import torchvision
from torch import nn

from medtransfer.backbones.hub import download_guard
from medtransfer.backbones.registry import BackboneSpec, PeftTargets, Preprocessing, register

CNN_PREPROCESSING = Preprocessing(input_size=224, resize="squash")


def _headless(factory: Callable[..., nn.Module], weights_enum, head: str) -> Callable[[bool], nn.Module]:
    """Build the torchvision model and replace its classifier so forward returns the pooled embedding."""

    def build(pretrained: bool) -> nn.Module:
        weights = weights_enum.DEFAULT if pretrained else None
        with download_guard(f"torchvision {weights_enum.__name__}.DEFAULT", url=weights.url if weights else None):
            model = factory(weights=weights)
        setattr(model, head, nn.Identity())
        return model

    return build


CONV_TARGETS = PeftTargets(conv=("conv1", "conv2", "conv3"))

register(
    BackboneSpec(
        name="resnet18",
        architecture="ResNet-18",
        source="torchvision ResNet18_Weights.IMAGENET1K_V1 (ImageNet-1k)",
        embed_dim=512,
        n_params_m=11.2,
        embedding_kind="global-average-pool",
        build=_headless(torchvision.models.resnet18, torchvision.models.ResNet18_Weights, "fc"),
        preprocessing=CNN_PREPROCESSING,
        targets=PeftTargets(conv=("conv1", "conv2")),
    )
)
register(
    BackboneSpec(
        name="resnet50",
        architecture="ResNet-50",
        source="torchvision ResNet50_Weights.IMAGENET1K_V2 (ImageNet-1k)",
        embed_dim=2048,
        n_params_m=23.5,
        embedding_kind="global-average-pool",
        build=_headless(torchvision.models.resnet50, torchvision.models.ResNet50_Weights, "fc"),
        preprocessing=CNN_PREPROCESSING,
        targets=CONV_TARGETS,
    )
)
register(
    BackboneSpec(
        name="densenet121",
        architecture="DenseNet-121",
        source="torchvision DenseNet121_Weights.IMAGENET1K_V1 (ImageNet-1k)",
        embed_dim=1024,
        n_params_m=7.0,
        embedding_kind="global-average-pool",
        build=_headless(torchvision.models.densenet121, torchvision.models.DenseNet121_Weights, "classifier"),
        preprocessing=CNN_PREPROCESSING,
        targets=PeftTargets(conv=("conv1", "conv2")),
    )
)
