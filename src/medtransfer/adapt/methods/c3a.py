"""c3a: C3A, circular-convolution adaptation (Chen et al. 2024), through peft (defaults peft 0.21's C3AConfig)."""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from medtransfer.adapt.options import AT_LEAST_ONE, PeftOptions, option
from medtransfer.adapt.peft_method import PeftCall, register_peft_method
from medtransfer.adapt.targets import common_divisor


@dataclass(frozen=True)
class C3aOptions(PeftOptions):
    block_size: int = option(256, "circulant block size (peft C3AConfig default 256; the largest divisor of every "
                             "target's sizes up to it is used)", rule=AT_LEAST_ONE)


def _config(peft, call: PeftCall):
    return peft.C3AConfig(block_size=common_divisor(call.matched, call.options.block_size, "c3a", "block_size"),
                          target_modules=call.patterns)


register_peft_method(
    name="c3a", description="C3A (peft): circular-convolution adaptation", trains="circulant kernels",
    make_config=_config, supported=(nn.Linear,), adapter_prefixes=("c3a_",), options=C3aOptions,
    paper="Chen et al. 2024, arXiv:2407.19342")
