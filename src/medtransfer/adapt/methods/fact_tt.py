"""fact-tt: FacT, shared low-rank factors with a core per weight (Jie & Deng 2023; ``adapt.vision.fact``)."""

from __future__ import annotations

from medtransfer.adapt.vision import fact
from medtransfer.adapt.vision_method import register_vision_method

register_vision_method(
    name="fact-tt", description="FacT-TT: shared low-rank factors, a core per weight",
    trains="shared U, V + per-weight cores", paper="Jie & Deng 2023, arXiv:2212.03145", apply=fact.apply_tt,
    declares=fact.declares, expected=fact.expected_tt, options=fact.Options)
