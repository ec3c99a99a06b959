"""delora: DeLoRA, decoupled low-rank adaptation with a bounded norm (Bini et al. 2025), through peft.

Option defaults are peft's (peft 0.21, ``peft/tuners/delora/config.py``).
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from medtransfer.adapt.options import POSITIVE, PROBABILITY, PeftOptions, option, rank_option
from medtransfer.adapt.peft_method import PeftCall, register_peft_method


@dataclass(frozen=True)
class DeloraOptions(PeftOptions):
    rank: int = rank_option(8, "peft DeloraConfig.r 8")
    bound: float = option(15.0, "initial bound lambda on the update's Frobenius norm (peft delora_lambda 15)",
                          rule=POSITIVE)
    dropout: float = option(0.0, "probability of dropping a whole module's update (peft default 0)", rule=PROBABILITY)


def _config(peft, call: PeftCall):
    o = call.options
    return peft.DeloraConfig(r=o.rank, delora_lambda=o.bound, module_dropout=o.dropout, target_modules=call.patterns)


register_peft_method(
    name="delora", description="DeLoRA (peft): decoupled low-rank adaptation (bounded norm)",
    trains="DeLoRA factors + norms", make_config=_config, supported=(nn.Linear,), adapter_prefixes=("delora_",),
    options=DeloraOptions, paper="Bini et al. 2025, arXiv:2503.18225")
