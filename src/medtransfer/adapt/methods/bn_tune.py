"""bn-tune: BatchNorm affine parameters and running statistics of a CNN (Dutt et al. 2023; ``adapt.vision.bn_tune``)."""

from __future__ import annotations

from medtransfer.adapt.vision import bn_tune
from medtransfer.adapt.vision_method import register_vision_method

register_vision_method(
    name="bn-tune", description="BN-tuning (CNNs): BatchNorm affine parameters and running statistics",
    trains="BatchNorm layers", paper="Dutt et al. 2023, arXiv:2305.08252", apply=bn_tune.apply,
    declares=bn_tune.declares, expected=bn_tune.expected_trainable, options=bn_tune.Options, norm_stats="train")
