"""hra: Householder reflection adaptation (Yuan et al. 2024) through peft (defaults peft 0.21's HRAConfig)."""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from medtransfer.adapt.options import PeftOptions, rank_option
from medtransfer.adapt.peft_method import PeftCall, register_peft_method


@dataclass(frozen=True)
class HraOptions(PeftOptions):
    rank: int = rank_option(8, "Householder reflections per target; peft HRAConfig.r 8, best even")


def _config(peft, call: PeftCall):
    return peft.HRAConfig(r=call.options.rank, target_modules=call.patterns)


register_peft_method(
    name="hra", description="HRA (peft): Householder reflection adaptation", trains="Householder vectors",
    make_config=_config, supported=(nn.Linear, nn.Conv2d), adapter_prefixes=("hra_",), options=HraOptions,
    paper="Yuan et al. 2024, arXiv:2405.17484")
