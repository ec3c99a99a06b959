"""lora: LoRA (Hu et al. 2022) through peft, and its rank presets lora-r4, lora-r8, lora-r16."""

from __future__ import annotations

from medtransfer.adapt.options import LowRankOptions
from medtransfer.adapt.peft_method import LORA_TYPES, PeftCall, register_peft_method
from medtransfer.adapt.rank_presets import register_rank_presets


def _config(peft, call: PeftCall):
    o = call.options
    return peft.LoraConfig(r=o.rank, lora_alpha=o.resolved_alpha, lora_dropout=o.dropout, target_modules=call.patterns)


LORA = register_peft_method(
    name="lora", description="LoRA (peft), alpha = 2 x rank unless given", trains="LoRA A/B on the targets",
    make_config=_config, supported=LORA_TYPES, adapter_prefixes=("lora_A", "lora_B"), options=LowRankOptions,
    paper="Hu et al. 2022, arXiv:2106.09685")
register_rank_presets(LORA)
