"""Every backbone, registered once; ``load_backbone(name, weights)`` is the one way to build one.

The registry (``backbones.registry``) knows no backbone; each family of entries is one file under
``backbones/families/`` that registers its backbones on import, and importing this package imports them all:
adding a family is adding its file.
"""

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

# isort: split
import medtransfer.backbones.families  # noqa: F401  (registers every entry)

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
