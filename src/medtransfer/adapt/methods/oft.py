"""oft: orthogonal fine-tuning (Qiu et al. 2023) through peft, block-diagonal rotations of each target's input."""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from medtransfer.adapt.options import AT_LEAST_ONE, PROBABILITY, PeftOptions, option
from medtransfer.adapt.peft_method import PeftCall, register_peft_method
from medtransfer.adapt.targets import blockwise_excluded, exact_names


@dataclass(frozen=True)
class OftOptions(PeftOptions):
    """OFT: block-diagonal orthogonal rotations of each target's input."""

    block_size: int = option(32, "size of each orthogonal block; targets whose input size it does not divide "
                             "are left out (named in a warning)", rule=AT_LEAST_ONE)
    dropout: float = option(0.0, "probability of dropping a whole module's rotation in a step", rule=PROBABILITY)


def _config(peft, call: PeftCall):
    o = call.options
    excluded = blockwise_excluded(call.matched, o.block_size, "oft", call.spec)
    return peft.OFTConfig(r=0, oft_block_size=o.block_size, module_dropout=o.dropout, target_modules=call.patterns,
                          exclude_modules=exact_names(excluded))


register_peft_method(
    name="oft", description="OFT (peft): orthogonal fine-tuning, block size 32 (targets whose input it does not "
    "divide are skipped)", trains="OFT rotation blocks on the targets", make_config=_config,
    supported=(nn.Linear, nn.Conv2d), adapter_prefixes=("oft_",), options=OftOptions,
    paper="Qiu et al. 2023, arXiv:2306.07280")
