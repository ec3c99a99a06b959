"""adapter: Houlsby sequential bottleneck adapters (Houlsby et al. 2019; ``adapt.vision.adapters``)."""

from __future__ import annotations

from medtransfer.adapt.vision import adapters
from medtransfer.adapt.vision_method import register_vision_method

register_vision_method(
    name="adapter", description="Houlsby adapters: sequential bottlenecks after attention and MLP (+ layer norms)",
    trains="sequential adapters + block LayerNorms", paper="Houlsby et al. 2019, arXiv:1902.00751",
    apply=adapters.apply, declares=adapters.declares, expected=adapters.expected_trainable, options=adapters.Options)
