"""lp: linear probe, a head on the frozen backbone (probe's logreg on its embeddings, or trained by gradient)."""

from __future__ import annotations

from torch import nn

from medtransfer.adapt.config import AdaptConfig
from medtransfer.adapt.freezing import freeze
from medtransfer.adapt.options import LinearProbeOptions, MethodOptions
from medtransfer.adapt.registry import register_method
from medtransfer.backbones.registry import BackboneSpec
from medtransfer.errors import MedtransferError


def _apply(model: nn.Module, spec: BackboneSpec, options: MethodOptions, config: AdaptConfig) -> nn.Module:
    if isinstance(options, LinearProbeOptions) and options.solver == "probe-logreg" and config.augment == "cxr":
        raise MedtransferError("lp's probe-logreg solver fits fixed embeddings, and --augment cxr changes them "
                               "every epoch: use --augment none, or --option solver=gradient")
    freeze(model)
    return model


def _declares_none(name: str, model: nn.Module, spec: BackboneSpec) -> bool:
    return False


register_method(
    name="lp", description="linear probe: probe's logreg fitted on the frozen backbone's embeddings (adapt's "
    "own forward pass and preprocessing), or trained by gradient (--option solver=gradient)",
    trains="head only", default_lr=3e-2, apply=_apply, declares=_declares_none, backbone_eval=True,
    default_augment="none", refit_with_val=True, options=LinearProbeOptions,
    # solver=gradient: the head trains on embeddings computed once, so epochs are cheap: train to convergence
    # (stopping on validation loss); 20 epochs at 1e-3 left it 0.17 MCC short of probe's logreg
    config_defaults={"epochs": 100, "early_stopping": "loss"},
    paper="linear probe (baseline)")
