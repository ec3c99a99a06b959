"""boft: butterfly orthogonal fine-tuning (Liu et al. 2024) through peft."""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from medtransfer.adapt.options import AT_LEAST_ONE, PROBABILITY, PeftOptions, option
from medtransfer.adapt.peft_method import PeftCall, register_peft_method
from medtransfer.adapt.targets import blockwise_excluded, exact_names


@dataclass(frozen=True)
class BoftOptions(PeftOptions):
    """BOFT: butterfly-factorised orthogonal rotations."""

    block_size: int = option(4, "size of each butterfly block; targets whose input size it does not divide are "
                             "left out (named in a warning)", rule=AT_LEAST_ONE)
    butterfly_factor: int = option(1, "number of butterfly factors (1: plain block-diagonal OFT)", rule=AT_LEAST_ONE)
    dropout: float = option(0.0, "probability of dropping a whole block in a step", rule=PROBABILITY)


def _config(peft, call: PeftCall):
    o = call.options
    excluded = blockwise_excluded(call.matched, o.block_size, "boft", call.spec)
    return peft.BOFTConfig(boft_block_size=o.block_size, boft_n_butterfly_factor=o.butterfly_factor,
                           boft_dropout=o.dropout, target_modules=call.patterns, exclude_modules=exact_names(excluded))


register_peft_method(
    name="boft", description="BOFT (peft): butterfly orthogonal fine-tuning, block size 4",
    trains="BOFT blocks and scales on the targets", make_config=_config, supported=(nn.Linear, nn.Conv2d),
    adapter_prefixes=("boft_",), options=BoftOptions,
    paper="Liu et al. 2024, arXiv:2311.06243")
