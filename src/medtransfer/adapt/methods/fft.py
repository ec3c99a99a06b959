"""fft: full fine-tuning, every backbone parameter trains (the baseline the parameter-efficient methods face)."""

from __future__ import annotations

from medtransfer.adapt.freezing import declares_everything, train_everything
from medtransfer.adapt.peft_method import FFT_LR
from medtransfer.adapt.registry import register_method

register_method(
    name="fft", description="full fine-tuning", trains="every backbone parameter + head",
    default_lr=FFT_LR, apply=train_everything, declares=declares_everything, norm_stats="train",
    paper="full fine-tuning (baseline)")
