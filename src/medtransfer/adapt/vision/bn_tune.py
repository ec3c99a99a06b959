"""BN-tuning for CNNs: only the BatchNorm layers adapt, their affine parameters by gradient and their running
statistics by the new data (as in the medical PEFT benchmark of Dutt et al., arXiv:2305.08252, which lists
BatchNorm tuning among its CNN methods). Trainable: 2 x channels of every affine BatchNorm layer.
"""

from __future__ import annotations

from torch import nn

from medtransfer.adapt.freezing import freeze
from medtransfer.adapt.options import MethodOptions
from medtransfer.adapt.vision.anatomy import unsupported
from medtransfer.backbones.registry import BackboneSpec

BN = nn.modules.batchnorm._BatchNorm


Options = MethodOptions  # BN-tuning has no hyperparameters of its own


def _norms(model: nn.Module) -> list[str]:
    return [n for n, m in model.named_modules() if isinstance(m, BN) and m.affine]


def apply(model: nn.Module, spec: BackboneSpec, options: Options) -> nn.Module:
    names = _norms(model)
    if not names:
        raise unsupported("bn-tune", spec, "it has no affine BatchNorm layer")
    freeze(model)
    for name in names:
        model.get_submodule(name).requires_grad_(True)
    return model


def declares(name: str, model: nn.Module, spec: BackboneSpec) -> bool:
    return any(name.startswith(n + ".") for n in _norms(model))


def expected_trainable(model: nn.Module, spec: BackboneSpec, options: Options) -> int:
    return sum(2 * model.get_submodule(n).num_features for n in _norms(model))
