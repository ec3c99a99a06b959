"""randlora: RandLoRA (Albert et al. 2025) through peft, a full-rank update from shared random bases.

Option defaults are peft's (peft 0.21, ``peft/tuners/randlora/config.py``).
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from medtransfer.adapt.options import POSITIVE_OR_UNSET, PeftOptions, option, rank_option
from medtransfer.adapt.peft_method import PeftCall, register_peft_method


@dataclass(frozen=True)
class RandLoraOptions(PeftOptions):
    rank: int = rank_option(32, "rank of each shared random basis; peft RandLoraConfig.r 32")
    alpha: float | None = option(None, "scaling; default 20 x rank (peft: 'typically 20 times the rank', 640 for r "
                                 "32)", rule=POSITIVE_OR_UNSET)

    def record(self) -> dict:
        return {"targets": self.targets, "rank": self.rank,
                "alpha": self.alpha if self.alpha is not None else 20.0 * self.rank}


def _config(peft, call: PeftCall):
    o = call.options
    return peft.RandLoraConfig(r=o.rank, randlora_alpha=o.record()["alpha"], target_modules=call.patterns,
                               projection_prng_key=call.config.seed)


register_peft_method(
    name="randlora", description="RandLoRA (peft): full-rank update from shared random bases",
    trains="RandLoRA scaling vectors", make_config=_config, supported=(nn.Linear,), adapter_prefixes=("randlora_",),
    options=RandLoraOptions, paper="Albert et al. 2025, arXiv:2502.00987")
