"""dora: DoRA, weight-decomposed LoRA (Liu et al. 2024), as peft's LoRA with ``use_dora``."""

from __future__ import annotations

from medtransfer.adapt.options import LowRankOptions
from medtransfer.adapt.peft_method import LINEAR_CONV, PeftCall, register_peft_method


def _config(peft, call: PeftCall):
    o = call.options
    return peft.LoraConfig(r=o.rank, lora_alpha=o.resolved_alpha, lora_dropout=o.dropout, target_modules=call.patterns,
                           use_dora=True)


register_peft_method(
    name="dora", description="DoRA: weight-decomposed LoRA (peft use_dora)",
    trains="LoRA A/B + magnitude vectors on the targets", make_config=_config, supported=LINEAR_CONV,
    adapter_prefixes=("lora_A", "lora_B", "lora_magnitude_vector"), options=LowRankOptions,
    paper="Liu et al. 2024, arXiv:2402.09353")
