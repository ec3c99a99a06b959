"""miss: MiSS, matrix shard sharing (Kang & Yin 2024), through peft (defaults peft 0.21's MissConfig)."""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from medtransfer.adapt.options import PROBABILITY, PeftOptions, option, rank_option
from medtransfer.adapt.peft_method import PeftCall, register_peft_method


@dataclass(frozen=True)
class MissOptions(PeftOptions):
    rank: int = rank_option(64, "shard size along the input; peft MissConfig.r 64, best even")
    dropout: float = option(0.0, "dropout on the adapter (peft default 0)", rule=PROBABILITY)


def _config(peft, call: PeftCall):
    return peft.MissConfig(r=call.options.rank, miss_dropout=call.options.dropout, target_modules=call.patterns)


register_peft_method(
    name="miss", description="MiSS (peft): matrix shard sharing", trains="shared shards", make_config=_config,
    supported=(nn.Linear,), adapter_prefixes=("miss_",), options=MissOptions,
    paper="Kang & Yin 2024, arXiv:2409.15371")
