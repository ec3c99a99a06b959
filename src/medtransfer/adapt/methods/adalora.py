"""adalora: AdaLoRA (Zhang et al. 2023) through peft, SVD-form LoRA whose rank budget is pruned over the run.

Option defaults are peft's (peft 0.21, ``peft/tuners/adalora/config.py``). The budget is scheduled over the run's
optimizer steps by :func:`adalora_step` (``train.fit`` calls a method's ``step_hook``).
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from medtransfer.adapt.options import AT_LEAST_ONE, POSITIVE, PROBABILITY, PeftOptions, option, rank_option
from medtransfer.adapt.peft_method import PeftCall, register_peft_method
from medtransfer.errors import MedtransferError


@dataclass(frozen=True)
class AdaLoraOptions(PeftOptions):
    """AdaLoRA: SVD-form LoRA whose rank budget shrinks from ``init_rank`` to ``rank`` over training."""

    rank: int = rank_option(8, "target rank after pruning; peft AdaLoraConfig.target_r 8")
    init_rank: int = option(12, "rank every target starts with (peft AdaLoraConfig.init_r 12)", rule=AT_LEAST_ONE)
    alpha: float = option(8.0, "scaling alpha (peft LoraConfig.lora_alpha default 8)", rule=POSITIVE)
    dropout: float = option(0.0, "dropout on the adapter's input (peft default 0)", rule=PROBABILITY)
    # peft/tuners/adalora/config.py docstring example: tinit=10, tfinal=20 of total_step=100 (fractions 0.1, 0.2)
    warmup_fraction: float = option(0.1, "share of the run's steps before pruning starts (peft's example: 10/100)",
                                    rule=PROBABILITY)
    final_fraction: float = option(0.2, "share of the run's last steps with the budget fixed (peft's example: "
                                   "20/100)", rule=PROBABILITY)


def _config(peft, call: PeftCall):
    o = call.options
    if o.init_rank < o.rank:
        raise MedtransferError(f"adalora: --option init_rank ({o.init_rank}) must be at least rank ({o.rank})")
    if o.warmup_fraction + o.final_fraction >= 1:
        raise MedtransferError("adalora: warmup_fraction + final_fraction must be below 1")
    # total_step is a placeholder until the first step: the hook sets the run's real step count
    return peft.AdaLoraConfig(target_r=o.rank, init_r=o.init_rank, lora_alpha=o.alpha, lora_dropout=o.dropout,
                              target_modules=call.patterns, total_step=100, tinit=round(100 * o.warmup_fraction),
                              tfinal=round(100 * o.final_fraction))


def adalora_step(backbone: nn.Module, step: int, total_steps: int) -> None:
    """After each optimizer step, before the gradients are cleared (peft's ``update_and_allocate`` rule): the
    budget schedule follows this run's step count (warmup and final shares of it, as the options say)."""
    peft_config = backbone.peft_config["default"]  # the RankAllocator holds this same object
    if peft_config.total_step != total_steps:
        warmup, final = peft_config.tinit / peft_config.total_step, peft_config.tfinal / peft_config.total_step
        peft_config.total_step = total_steps
        peft_config.tinit = int(warmup * total_steps)
        peft_config.tfinal = int(final * total_steps)
    backbone.base_model.update_and_allocate(step)


register_peft_method(
    name="adalora", description="AdaLoRA (peft): SVD-form LoRA with a rank budget pruned over the run's steps",
    trains="AdaLoRA P, Lambda, Q", make_config=_config, supported=(nn.Linear, nn.Conv2d),
    adapter_prefixes=("lora_",), options=AdaLoraOptions, paper="Zhang et al. 2023, arXiv:2303.10512",
    step_hook=adalora_step)
