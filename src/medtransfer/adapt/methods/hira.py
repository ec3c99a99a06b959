"""hira: HiRA, Hadamard high-rank adaptation (Huang et al. 2025), through peft (defaults peft 0.21's HiraConfig)."""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from medtransfer.adapt.options import PROBABILITY, PeftOptions, option, rank_option
from medtransfer.adapt.peft_method import PeftCall, register_peft_method


@dataclass(frozen=True)
class HiraOptions(PeftOptions):
    rank: int = rank_option(32, "rank of the Hadamard factors; peft HiraConfig.r 32")
    dropout: float = option(0.0, "dropout on the adapter's input (peft default 0)", rule=PROBABILITY)


def _config(peft, call: PeftCall):
    return peft.HiraConfig(r=call.options.rank, target_modules=call.patterns, hira_dropout=call.options.dropout)


register_peft_method(
    name="hira", description="HiRA (peft): Hadamard high-rank adaptation", trains="HiRA factors",
    make_config=_config, supported=(nn.Linear, nn.Conv2d), adapter_prefixes=("hira_",), options=HiraOptions,
    paper="Huang et al. 2025, ICLR (openreview TwJrTz9cRS)")
