"""ssf: scale and shift after every operation (Lian et al. 2022; ``adapt.vision.ssf``)."""

from __future__ import annotations

from medtransfer.adapt.vision import ssf
from medtransfer.adapt.vision_method import register_vision_method

register_vision_method(
    name="ssf", description="SSF: scale and shift after every operation", trains="per-channel scales and shifts",
    paper="Lian et al. 2022, arXiv:2210.08823", apply=ssf.apply, declares=ssf.declares,
    expected=ssf.expected_trainable, options=ssf.Options)
