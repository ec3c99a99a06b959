"""vpt-deep: visual prompt tuning, new prompt tokens at every block (Jia et al. 2022; ``adapt.vision.vpt``)."""

from __future__ import annotations

from medtransfer.adapt.vision import vpt
from medtransfer.adapt.vision_method import register_vision_method

register_vision_method(
    name="vpt-deep", description="VPT-deep: new prompt tokens at every block", trains="per-block prompt tokens",
    paper="Jia et al. 2022, arXiv:2203.12119", apply=vpt.apply_deep, declares=vpt.declares,
    expected=vpt.expected_deep, options=vpt.Options)
