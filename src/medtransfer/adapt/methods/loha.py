"""loha: LoHa, low-rank Hadamard product (Hyeon-Woo et al. 2022), through peft."""

from __future__ import annotations

from torch import nn

from medtransfer.adapt.options import LowRankOptions
from medtransfer.adapt.peft_method import lycoris_config, register_peft_method

register_peft_method(
    name="loha", description="LoHa (peft): low-rank Hadamard product", trains="LoHa factors on the targets",
    make_config=lycoris_config("LoHaConfig"), supported=(nn.Linear, nn.Conv1d, nn.Conv2d), adapter_prefixes=("hada_",),
    options=LowRankOptions,
    paper="Hyeon-Woo et al. 2022, arXiv:2108.06098")
