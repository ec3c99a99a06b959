"""lp-ft: the linear probe initialises the head, then full fine-tuning (Kumar et al. 2022)."""

from __future__ import annotations

from medtransfer.adapt.freezing import declares_everything, train_everything
from medtransfer.adapt.peft_method import FFT_LR
from medtransfer.adapt.registry import register_method

register_method(
    name="lp-ft", description="linear probe (logreg, C tuned on val) initialises the head, then full fine-tuning",
    trains="every backbone parameter + head (initialised from the probe)", default_lr=FFT_LR,
    apply=train_everything, declares=declares_everything, norm_stats="train", head_init="probe",
    paper="Kumar et al. 2022, arXiv:2202.10054")
