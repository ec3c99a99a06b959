"""Every backbone, registered once; ``load_backbone(name, weights)`` is the one way to build one."""

# each family module registers its entries on import, in the order `medtransfer backbones` lists them
from medtransfer.backbones import torchvision_cnns  # noqa: F401

# isort: split
from medtransfer.backbones import hf_vits, open_clip_models  # noqa: F401

# isort: split
from medtransfer.backbones import medclip  # noqa: F401

# isort: split
from medtransfer.backbones import mae, open_specs  # noqa: F401
from medtransfer.backbones.registry import (
    DEFAULT_TARGET_PRESET,
    REGISTRY,
    RESIZE_POLICIES,
    TARGET_PRESETS,
    BackboneSpec,
    LoadedBackbone,
    PeftTargets,
    Preprocessing,
    backbone_markdown,
    backbone_table,
    count_parameters,
    get_spec,
    load_backbone,
    matches_target,
    preset_patterns,
    register,
    resolve_targets,
)
from medtransfer.backbones.vit import ViTEmbedder

__all__ = [
    "DEFAULT_TARGET_PRESET",
    "REGISTRY",
    "RESIZE_POLICIES",
    "TARGET_PRESETS",
    "BackboneSpec",
    "LoadedBackbone",
    "PeftTargets",
    "Preprocessing",
    "ViTEmbedder",
    "backbone_markdown",
    "backbone_table",
    "count_parameters",
    "get_spec",
    "load_backbone",
    "matches_target",
    "preset_patterns",
    "register",
    "resolve_targets",
]
