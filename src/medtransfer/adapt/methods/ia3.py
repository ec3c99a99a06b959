"""ia3: (IA)^3 (Liu et al. 2022) through peft, learned rescaling of the targets' activations."""

from __future__ import annotations

from torch import nn

from medtransfer.adapt.peft_method import PeftCall, register_peft_method


def _config(peft, call: PeftCall):
    spec = call.spec
    feedforward = [p for p in spec.targets.mlp if p in call.patterns] if spec.family == "vit" else []
    return peft.IA3Config(target_modules=call.patterns, feedforward_modules=feedforward)


register_peft_method(
    name="ia3", description="(IA)^3 (peft): learned rescaling of target activations", trains="IA3 scaling vectors",
    make_config=_config, supported=(nn.Linear, nn.Conv2d, nn.Conv3d), adapter_prefixes=("ia3_l",),
    paper="Liu et al. 2022, arXiv:2205.05638")
