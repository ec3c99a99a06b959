"""fourierft: FourierFT (Gao et al. 2024) through peft, sparse spectral coefficients of the weight update.

Option defaults are peft's ViT settings (peft 0.21, ``peft/tuners/fourierft/config.py``).
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from medtransfer.adapt.options import AT_LEAST_ONE, POSITIVE, PeftOptions, option
from medtransfer.adapt.peft_method import PeftCall, register_peft_method
from medtransfer.errors import MedtransferError


@dataclass(frozen=True)
class FourierFTOptions(PeftOptions):
    """FourierFT: ``n_frequency`` trained spectral coefficients per target weight, scaled."""

    # peft FourierFTConfig help: "For image classification tasks with Vit-large models, adopting 'n_frequency': 3000
    # can almost achieve similar results as 'r': 16 in LoRA"; scaling "300.0 for both ViT-base and ViT-large"
    n_frequency: int = option(3000, "trained frequencies per target (peft's ViT setting 3000)", rule=AT_LEAST_ONE)
    scaling: float = option(300.0, "scale of the update (peft's ViT setting 300)", rule=POSITIVE)


def _config(peft, call: PeftCall):
    o = call.options
    smallest = min(m.in_features * m.out_features for m in call.matched.values())
    if o.n_frequency > smallest:
        raise MedtransferError(f"method 'fourierft' cannot apply to backbone {call.spec.name!r} "
                               f"(family {call.spec.family}): n_frequency "
                               f"{o.n_frequency} exceeds a target's {smallest} weights; give --option n_frequency=N")
    return peft.FourierFTConfig(target_modules=call.patterns, n_frequency=o.n_frequency, scaling=o.scaling,
                                random_loc_seed=call.config.seed + 777)


register_peft_method(
    name="fourierft", description="FourierFT (peft): sparse spectral coefficients of the weight update",
    trains="Fourier coefficients", make_config=_config, supported=(nn.Linear,), adapter_prefixes=("fourierft_",),
    options=FourierFTOptions, paper="Gao et al. 2024, arXiv:2405.03003")
