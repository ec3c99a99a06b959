"""lokr: LoKr, low-rank Kronecker product (Yeh et al. 2024), through peft."""

from __future__ import annotations

from torch import nn

from medtransfer.adapt.options import LowRankOptions
from medtransfer.adapt.peft_method import lycoris_config, register_peft_method

register_peft_method(
    name="lokr", description="LoKr (peft): low-rank Kronecker product", trains="LoKr factors on the targets",
    make_config=lycoris_config("LoKrConfig"), supported=(nn.Linear, nn.Conv1d, nn.Conv2d), adapter_prefixes=("lokr_",),
    options=LowRankOptions,
    paper="Yeh et al. 2024, arXiv:2309.14859")
