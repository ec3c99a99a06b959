"""vpt-shallow: visual prompt tuning, prompt tokens at the input only (Jia et al. 2022; ``adapt.vision.vpt``)."""

from __future__ import annotations

from medtransfer.adapt.vision import vpt
from medtransfer.adapt.vision_method import register_vision_method

register_vision_method(
    name="vpt-shallow", description="VPT-shallow: prompt tokens after the class token at the input",
    trains="input prompt tokens", paper="Jia et al. 2022, arXiv:2203.12119", apply=vpt.apply_shallow,
    declares=vpt.declares, expected=vpt.expected_shallow, options=vpt.Options)
