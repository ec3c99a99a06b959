"""bitfit: only the backbone's biases train (Zaken et al. 2022)."""

from __future__ import annotations

from torch import nn

from medtransfer.adapt.config import AdaptConfig
from medtransfer.adapt.freezing import freeze, unfreeze_norms
from medtransfer.adapt.options import MethodOptions
from medtransfer.adapt.peft_method import PEFT_LR
from medtransfer.adapt.registry import register_method
from medtransfer.backbones.registry import BackboneSpec
from medtransfer.errors import MedtransferError


def _is_bias(name: str, spec: BackboneSpec) -> bool:
    suffix = spec.targets.bias_suffix
    return name == suffix or name.endswith("." + suffix)


def _apply(model: nn.Module, spec: BackboneSpec, options: MethodOptions, config: AdaptConfig) -> nn.Module:
    freeze(model)
    found = 0
    for name, parameter in model.named_parameters():
        if _is_bias(name, spec):
            parameter.requires_grad_(True)
            found += 1
    if not found:
        raise MedtransferError(
            f"method 'bitfit' cannot apply to backbone {spec.name!r} (family {spec.family}): it has no parameter named "
            f"*.{spec.targets.bias_suffix}"
        )
    if config.train_norms:
        unfreeze_norms(model, spec)
    return model


def _declares(name: str, model: nn.Module, spec: BackboneSpec) -> bool:
    return _is_bias(name, spec)


register_method(
    name="bitfit", description="BitFit: biases only", trains="every *.bias + head", default_lr=PEFT_LR,
    apply=_apply, declares=_declares,
    paper="Zaken et al. 2022, arXiv:2106.10199")
