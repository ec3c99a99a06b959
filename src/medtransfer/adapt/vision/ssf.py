"""SSF: scaling and shifting features (Lian et al., NeurIPS 2022, arXiv:2210.08823; github.com/dongzelian/SSF).

A learned per-channel scale and shift after every operation with weights: each Linear (qkv / q,k,v, proj, fc1,
fc2, and any projection), LayerNorm, the patch-embedding convolution, and for CNNs every Conv2d and BatchNorm2d.
open_clip's fused ``nn.MultiheadAttention`` computes its projections from ``in_proj_*`` / ``out_proj.*`` inside
one call, so there the scale and shift are folded into those weights (``W' = s W``, ``b' = s b + t``), which SSF's
re-parameterisation shows is the same function. Init as the official ``init_ssf_scale_shift``: scale ~ N(1, 0.02),
shift ~ N(0, 0.02); ``init_std=0`` starts at the identity. Trainable: 2 x (output channels of every such module).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn.utils import parametrize

from medtransfer.adapt.freezing import freeze
from medtransfer.adapt.options import MethodOptions, option
from medtransfer.adapt.vision.anatomy import unsupported
from medtransfer.backbones.registry import BackboneSpec

PREFIX = "ssf"
OPERATIONS = (nn.Linear, nn.LayerNorm, nn.Conv2d, nn.modules.batchnorm._BatchNorm)


@dataclass(frozen=True)
class Options(MethodOptions):
    """SSF's initialisation spread (0: start at the identity)."""

    # SSF models/vision_transformer.py init_ssf_scale_shift: normal_(scale, mean=1, std=.02), normal_(shift, std=.02)
    init_std: float = option(0.02, "std of the N(1, s) scale / N(0, s) shift init (SSF: 0.02; 0 = identity)",
                             rule=(lambda v: v >= 0, "must be at least 0"))


class ScaleShift(nn.Module):
    """Channel-wise ``x * scale + shift`` on a module's output (channels last for Linear/LayerNorm, dim 1 else)."""

    def __init__(self, channels: int, channel_dim: int, init_std: float):
        super().__init__()
        self.scale = nn.Parameter(torch.ones(channels))
        self.shift = nn.Parameter(torch.zeros(channels))
        if init_std:
            nn.init.normal_(self.scale, mean=1.0, std=init_std)
            nn.init.normal_(self.shift, std=init_std)
        self.channel_dim = channel_dim

    def forward(self, module: nn.Module, args: tuple, output: torch.Tensor) -> torch.Tensor:
        shape = [1] * output.ndim
        shape[self.channel_dim if self.channel_dim >= 0 else output.ndim + self.channel_dim] = -1
        return output * self.scale.view(shape).to(output.dtype) + self.shift.view(shape).to(output.dtype)


class _FoldScale(nn.Module):
    def __init__(self, owner: ScaleShift):
        super().__init__()
        object.__setattr__(self, "owner", owner)  # parameters live in the ScaleShift (one name per tensor)

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        return weight * self.owner.scale.view(-1, *([1] * (weight.ndim - 1))).to(weight.dtype)


class _FoldShift(_FoldScale):
    def forward(self, bias: torch.Tensor) -> torch.Tensor:
        return bias * self.owner.scale.to(bias.dtype) + self.owner.shift.to(bias.dtype)


def _channels(module: nn.Module) -> tuple[int, int]:
    if isinstance(module, nn.Linear):
        return module.out_features, -1
    if isinstance(module, nn.LayerNorm):
        return int(module.normalized_shape[-1]), -1
    if isinstance(module, nn.Conv2d):
        return module.out_channels, 1
    return module.num_features, 1  # BatchNorm


def _plan(model: nn.Module) -> tuple[list[str], list[str]]:
    """(modules hooked, MultiheadAttention modules folded); Linear children of an MHA are folded with it."""
    mha = [n for n, m in model.named_modules() if isinstance(m, nn.MultiheadAttention)]
    inside = tuple(f"{n}." for n in mha)
    hooked = [n for n, m in model.named_modules()
              if isinstance(m, OPERATIONS) and not n.startswith(inside) and _has_weights(m)]
    return hooked, mha


def _has_weights(module: nn.Module) -> bool:
    return any(True for _ in module.parameters(recurse=False)) or isinstance(module, nn.modules.batchnorm._BatchNorm)


def _fold(mha: nn.MultiheadAttention, init_std: float, spec: BackboneSpec) -> None:
    if mha.in_proj_weight is None or mha.in_proj_bias is None or mha.out_proj.bias is None:
        raise unsupported("ssf", spec, "a MultiheadAttention without fused, biased projections")
    for owner_module, weight, bias, channels in (
            (mha, "in_proj_weight", "in_proj_bias", mha.in_proj_weight.shape[0]),
            (mha.out_proj, "weight", "bias", mha.out_proj.out_features)):
        owner = ScaleShift(channels, -1, init_std)
        owner_module.add_module(PREFIX if owner_module is mha.out_proj else f"{PREFIX}_in_proj", owner)
        parametrize.register_parametrization(owner_module, weight, _FoldScale(owner))
        parametrize.register_parametrization(owner_module, bias, _FoldShift(owner))


def apply(model: nn.Module, spec: BackboneSpec, options: Options) -> nn.Module:
    hooked, mha = _plan(model)
    if not hooked and not mha:
        raise unsupported("ssf", spec, "no Linear, LayerNorm, Conv2d or BatchNorm module")
    freeze(model)
    for name in hooked:
        module = model.get_submodule(name)
        channels, dim = _channels(module)
        scale_shift = ScaleShift(channels, dim, options.init_std)
        module.add_module(PREFIX, scale_shift)
        module.register_forward_hook(scale_shift)
    for name in mha:
        _fold(model.get_submodule(name), options.init_std, spec)
    return model


def declares(name: str, model: nn.Module, spec: BackboneSpec) -> bool:
    return name.rsplit(".", 1)[-1] in ("scale", "shift") and (f"{PREFIX}." in name or f"{PREFIX}_in_proj." in name)


def expected_trainable(model: nn.Module, spec: BackboneSpec, options: Options) -> int:
    hooked, mha = _plan(model)
    total = sum(2 * _channels(model.get_submodule(n))[0] for n in hooked)
    for name in mha:
        module = model.get_submodule(name)
        total += 2 * (3 * module.embed_dim + module.embed_dim)
    return total
