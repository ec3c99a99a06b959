"""fact-tk: FacT, shared low-rank factors and one shared core tensor (Jie & Deng 2023; ``adapt.vision.fact``)."""

from __future__ import annotations

from medtransfer.adapt.vision import fact
from medtransfer.adapt.vision_method import register_vision_method

register_vision_method(
    name="fact-tk", description="FacT-TK: shared low-rank factors and one shared core tensor",
    trains="shared U, V, C, P", paper="Jie & Deng 2023, arXiv:2212.03145", apply=fact.apply_tk,
    declares=fact.declares, expected=fact.expected_tk, options=fact.TKOptions)
