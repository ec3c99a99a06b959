"""adaptformer: a parallel bottleneck adapter beside each MLP (Chen et al. 2022; ``adapt.vision.adaptformer``)."""

from __future__ import annotations

from medtransfer.adapt.vision import adaptformer
from medtransfer.adapt.vision_method import register_vision_method

register_vision_method(
    name="adaptformer", description="AdaptFormer: parallel bottleneck adapter beside each MLP, scale 0.1",
    trains="parallel MLP adapters", paper="Chen et al. 2022, arXiv:2205.13535", apply=adaptformer.apply,
    declares=adaptformer.declares, expected=adaptformer.expected_trainable, options=adaptformer.Options)
