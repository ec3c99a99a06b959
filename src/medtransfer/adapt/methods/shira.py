"""shira: SHiRA (Bhardwaj et al. 2024) through peft, a sparse high-rank adapter on a random mask."""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from medtransfer.adapt.options import PeftOptions, rank_option
from medtransfer.adapt.peft_method import PeftCall, register_peft_method


@dataclass(frozen=True)
class ShiraOptions(PeftOptions):
    rank: int = rank_option(32, "a target gets r x (in + out) sparse entries, as many as LoRA r; peft ShiraConfig.r 32")


def _config(peft, call: PeftCall):
    return peft.ShiraConfig(r=call.options.rank, target_modules=call.patterns, random_seed=call.config.seed)


register_peft_method(
    name="shira", description="SHiRA (peft): sparse high-rank adapter on a random mask",
    trains="sparse weight entries", make_config=_config, supported=(nn.Linear,), adapter_prefixes=("shira_",),
    options=ShiraOptions, paper="Bhardwaj et al. 2024, arXiv:2406.13175")
