"""Every backbone, registered once; ``load_backbone(name, weights)`` is the one way to build one."""

from medtransfer.backbones import torchvision_cnns  # noqa: F401  (registers its entries)
from medtransfer.backbones.registry import (
    REGISTRY,
    BackboneSpec,
    LoadedBackbone,
    PeftTargets,
    Preprocessing,
    count_parameters,
    get_spec,
    load_backbone,
    register,
)

__all__ = [
    "REGISTRY",
    "BackboneSpec",
    "LoadedBackbone",
    "PeftTargets",
    "Preprocessing",
    "count_parameters",
    "get_spec",
    "load_backbone",
    "register",
]
