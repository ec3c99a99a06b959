"""ln-tune: only the normalisation layers train (LayerNorm; BatchNorm with its statistics for CNNs)."""

from __future__ import annotations

from torch import nn

from medtransfer.adapt.config import AdaptConfig
from medtransfer.adapt.freezing import freeze, norm_modules, param_names_of, unfreeze_norms
from medtransfer.adapt.options import MethodOptions
from medtransfer.adapt.peft_method import PEFT_LR
from medtransfer.adapt.registry import register_method
from medtransfer.backbones.registry import BackboneSpec
from medtransfer.errors import MedtransferError


def _apply(model: nn.Module, spec: BackboneSpec, options: MethodOptions, config: AdaptConfig) -> nn.Module:
    freeze(model)
    if not norm_modules(model, spec):
        raise MedtransferError(f"method 'ln-tune' cannot apply to backbone {spec.name!r} "
                               f"(family {spec.family}): it has no norm layers")
    unfreeze_norms(model, spec)
    return model


def _declares(name: str, model: nn.Module, spec: BackboneSpec) -> bool:
    return name in param_names_of(model, norm_modules(model, spec))


register_method(
    name="ln-tune", description="normalisation layers only (LayerNorm; BatchNorm for CNNs, statistics too)",
    trains="norm-layer weights and biases + head", default_lr=PEFT_LR, apply=_apply,
    declares=_declares, norm_stats="train",
    paper="Zhao et al. 2024, arXiv:2312.11420")
