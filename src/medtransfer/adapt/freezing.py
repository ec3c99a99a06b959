"""Which backbone parameters train: freeze all, train all, or train the normalisation layers.

Shared by the method files of ``adapt/methods/`` (fft and lp-ft train everything; bitfit, ln-tune and the peft
methods with ``--train-norms`` unfreeze the norms; the vision methods freeze first); imports no method.
"""

from __future__ import annotations

from torch import nn

from medtransfer.adapt.config import AdaptConfig
from medtransfer.adapt.options import MethodOptions
from medtransfer.adapt.targets import check_targets
from medtransfer.backbones.registry import BackboneSpec, resolve_targets

NORM_TYPES = (nn.LayerNorm, nn.GroupNorm, nn.modules.batchnorm._BatchNorm)


def freeze(model: nn.Module) -> None:
    for parameter in model.parameters():
        parameter.requires_grad_(False)


def train_everything(model: nn.Module, spec: BackboneSpec, options: MethodOptions, config: AdaptConfig) -> nn.Module:
    """``apply`` of full fine-tuning (fft, lp-ft): every backbone parameter trains."""
    for parameter in model.parameters():
        parameter.requires_grad_(True)
    return model


def declares_everything(name: str, model: nn.Module, spec: BackboneSpec) -> bool:
    return True


def norm_modules(model: nn.Module, spec: BackboneSpec) -> list[str]:
    """Normalisation modules: the registry's ``targets.norm`` patterns, or else every LayerNorm/GroupNorm/BN."""
    if spec.targets.norm:
        check_targets(model, spec, "ln-tune", spec.targets.norm)
        return resolve_targets(model, spec.targets.norm)
    return [name for name, module in model.named_modules() if isinstance(module, NORM_TYPES)]


def param_names_of(model: nn.Module, module_names: list[str]) -> set[str]:
    """The names of the parameters that these modules hold themselves (not their children's)."""
    names = set()
    for module_name in module_names:
        module = model.get_submodule(module_name)
        names.update(f"{module_name}.{p}" for p, _ in module.named_parameters(recurse=False))
    return names


def unfreeze_norms(model: nn.Module, spec: BackboneSpec) -> None:
    names = param_names_of(model, norm_modules(model, spec))
    for name, parameter in model.named_parameters():
        if name in names:
            parameter.requires_grad_(True)
