"""vblora: VB-LoRA (Li et al. 2024) through peft, LoRA factors composed from one shared vector bank.

Option defaults are peft's (peft 0.21, ``peft/tuners/vblora/config.py``).
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from medtransfer.adapt.options import AT_LEAST_ONE, PeftOptions, option, rank_option
from medtransfer.adapt.peft_method import PeftCall, register_peft_method
from medtransfer.adapt.targets import common_divisor


@dataclass(frozen=True)
class VBLoraOptions(PeftOptions):
    """VB-LoRA: every LoRA factor is a top-k mix of vectors from one shared bank."""

    rank: int = rank_option(4, "peft VBLoRAConfig.r 4")
    num_vectors: int = option(256, "vectors in the shared bank (peft default 256)", rule=AT_LEAST_ONE)
    vector_length: int = option(256, "length of each bank vector (peft default 256; the largest divisor of every "
                                "target's sizes up to it is used)", rule=AT_LEAST_ONE)
    topk: int = option(2, "bank vectors mixed per sub-vector (peft default 2)", rule=AT_LEAST_ONE)


def _config(peft, call: PeftCall):
    o = call.options
    length = common_divisor(call.matched, o.vector_length, "vblora", "vector_length")
    return peft.VBLoRAConfig(r=o.rank, target_modules=call.patterns, vector_length=length, num_vectors=o.num_vectors,
                             topk=min(o.topk, o.num_vectors))


register_peft_method(
    name="vblora", description="VB-LoRA (peft): LoRA factors composed from a shared vector bank",
    trains="vector bank + logits", make_config=_config, supported=(nn.Linear,), adapter_prefixes=("vblora_",),
    options=VBLoraOptions, paper="Li et al. 2024, arXiv:2405.15179")
