"""loha: LoHa, low-rank Hadamard product (Hyeon-Woo et al. 2022), through peft."""

from __future__ import annotations

from torch import nn

from medtransfer.adapt.options import LowRankOptions
from medtransfer.adapt.peft_method import PeftCall, register_peft_method


def _config(peft, call: PeftCall):
    o = call.options
    return peft.LoHaConfig(r=o.rank, alpha=o.resolved_alpha, module_dropout=o.dropout, target_modules=call.patterns)


register_peft_method(
    name="loha", description="LoHa (peft): low-rank Hadamard product", trains="LoHa factors on the targets",
    make_config=_config, supported=(nn.Linear, nn.Conv1d, nn.Conv2d), adapter_prefixes=("hada_",),
    options=LowRankOptions,
    paper="Hyeon-Woo et al. 2022, arXiv:2108.06098")
