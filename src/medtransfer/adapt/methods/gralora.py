"""gralora: GraLoRA, granular (block-wise) LoRA (Jung et al. 2025), through peft.

Option defaults are peft's (peft 0.21, ``peft/tuners/gralora/config.py``).
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from medtransfer.adapt.options import AT_LEAST_ONE, POSITIVE, PROBABILITY, PeftOptions, option, rank_option
from medtransfer.adapt.peft_method import PeftCall, register_peft_method


@dataclass(frozen=True)
class GraloraOptions(PeftOptions):
    rank: int = rank_option(32, "total rank, split into k x k blocks; peft GraloraConfig.r 32")
    alpha: float = option(64.0, "scaling alpha, scale alpha / r (peft default 64)", rule=POSITIVE)
    k: int = option(2, "sub-blocks per side (peft default 2, recommended for rank <= 32); must divide rank",
                    rule=AT_LEAST_ONE)
    dropout: float = option(0.0, "dropout on the adapter's input (peft default 0)", rule=PROBABILITY)


def _config(peft, call: PeftCall):
    o = call.options
    return peft.GraloraConfig(r=o.rank, alpha=o.alpha, gralora_k=o.k, gralora_dropout=o.dropout,
                              target_modules=call.patterns)


register_peft_method(
    name="gralora", description="GraLoRA (peft): granular (block-wise) LoRA", trains="GraLoRA blocks",
    make_config=_config, supported=(nn.Linear,), adapter_prefixes=("gralora_",), options=GraloraOptions,
    paper="Jung et al. 2025, arXiv:2505.20355")
