"""FacT: factor-tuning (Jie & Deng, AAAI 2023, arXiv:2212.03145; official code github.com/JieShibo/PETL-ViT FacT/).

Every attention and MLP weight of every block is updated by ``s x (I_b (x) V) C (I_a (x) U)``: ``U`` (width -> r)
and ``V`` (r -> width) are shared by all layers, ``C`` is a small core per weight, and a weight of shape
(b x width) x (a x width) (fused qkv: b = 3; fc1: b = 4; fc2: a = 4) gets a (b r) x (a r) core, exactly as
``fact_tt.py`` / ``fact_tk.py`` give fc1 an r -> 4r and fc2 a 4r -> r core.
- FacT-TT: each weight's core is its own parameter: trainable 2 x width x r + r^2 x sum(a x b).
- FacT-TK: the cores are slices of one shared tensor ``C`` (r x r x r) times per-weight columns of ``P``
  (r x sum(a x b)): trainable 2 x width x r + r^3 + r x sum(a x b).
V starts at zero (``nn.init.zeros_(model.FacTv.weight)``), so the outputs are unchanged at initialisation.
The update is applied in weight space (a parametrization), so it reaches open_clip's fused attention weights too;
the official code's dropout 0.1 on the factor activations has no weight-space equivalent and is not applied.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn.utils import parametrize

from medtransfer.adapt.freezing import freeze
from medtransfer.adapt.options import AT_LEAST_ONE, MethodOptions, option
from medtransfer.adapt.vision.anatomy import unsupported, vit_blocks
from medtransfer.backbones.registry import BackboneSpec, resolve_targets

SHARED = "fact"  # the shared factors' module, added to the backbone's root
CORE = "fact_core"


@dataclass(frozen=True)
class Options(MethodOptions):
    """FacT-TT's factor rank and update scale."""

    # FacT/configs/tt/*.yaml (e.g. patch_camelyon.yaml): rank 8, scale 10.0; configs/tk/*.yaml: rank 32, scale 10.0
    rank: int = option(8, "factor rank r (FacT-TT configs: 8; part of the label, e.g. fact-tt-r8)", rule=AT_LEAST_ONE)
    scale: float = option(10.0, "scale s of the update (FacT configs: 10.0)")


@dataclass(frozen=True)
class TKOptions(Options):
    """FacT-TK: as FacT-TT, with its configs' larger rank."""

    rank: int = option(32, "factor rank r (FacT-TK configs: 32; part of the label, e.g. fact-tk-r32)",
                       rule=AT_LEAST_ONE)


class SharedFactors(nn.Module):
    def __init__(self, width: int, rank: int, slices: int, tensor: bool):
        super().__init__()
        self.u = nn.Parameter(torch.empty(rank, width))  # FacTu = nn.Linear(768, dim): default Linear init
        nn.init.kaiming_uniform_(self.u, a=math.sqrt(5))
        self.v = nn.Parameter(torch.zeros(width, rank))  # FacTv: zeros
        if tensor:  # fact_tk.py: FacTc (dim^3) and FacTp (dim x 12 L), xavier-uniform
            self.c = nn.Parameter(torch.empty(rank, rank, rank))
            self.p = nn.Parameter(torch.empty(rank, slices))
            nn.init.xavier_uniform_(self.c)
            nn.init.xavier_uniform_(self.p)


class FacTDelta(nn.Module):
    """Parametrization ``W -> W + s (I_b (x) V) C (I_a (x) U)`` of one weight."""

    def __init__(self, shared: SharedFactors, a: int, b: int, scale: float, first_slice: int | None):
        super().__init__()
        object.__setattr__(self, "shared", shared)  # registered once, at the backbone's root
        self.a, self.b, self.scale, self.first_slice = a, b, scale, first_slice
        rank = shared.u.shape[0]
        if first_slice is None:  # TT: its own core, like fact_tt.py's nn.Linear(dim, dim) cores
            core = torch.empty(b * rank, a * rank)
            nn.init.kaiming_uniform_(core, a=math.sqrt(5))
            self.fact_core = nn.Parameter(core)

    def core(self) -> torch.Tensor:
        rank = self.shared.u.shape[0]
        if self.first_slice is None:
            return self.fact_core.view(self.b, rank, self.a, rank)
        n = self.a * self.b
        slices = torch.einsum("ijk,kn->ijn", self.shared.c, self.shared.p[:, self.first_slice:self.first_slice + n])
        # slice (i, j) of block (row bi, column aj) acts as x U^T c (fact_tk.py), i.e. weight c^T U
        return slices.permute(2, 1, 0).reshape(self.b, self.a, rank, rank).permute(0, 2, 1, 3)

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        u, v = self.shared.u, self.shared.v
        delta = torch.einsum("dr,bras,se->bdae", v, self.core(), u)
        delta = delta.reshape(self.b * v.shape[0], self.a * u.shape[1])
        return weight + self.scale * delta.to(weight.dtype)


def _targets(model: nn.Module, spec: BackboneSpec, method: str) -> tuple[int, list[tuple[nn.Module, str, int, int]]]:
    """(width, [(module, weight attribute, a, b)]) for every attention and MLP weight of the blocks."""
    blocks = vit_blocks(model, spec, method)
    width = blocks[0].width
    found = []
    for name in resolve_targets(model, spec.targets.attention + spec.targets.mlp):
        module = model.get_submodule(name)
        if isinstance(module, nn.MultiheadAttention):
            found += [(module, "in_proj_weight", module.in_proj_weight), (module.out_proj, "weight",
                                                                          module.out_proj.weight)]
        elif isinstance(module, nn.Linear):
            found.append((module, "weight", module.weight))
        else:
            raise unsupported(method, spec, f"target {name!r} is a {type(module).__name__}, not a Linear")
    out = []
    for module, attribute, weight in found:
        if weight is None:
            raise unsupported(method, spec, "a MultiheadAttention with separate q/k/v weights")
        rows, cols = weight.shape
        if rows % width or cols % width:
            raise unsupported(method, spec, f"a {tuple(weight.shape)} weight is not made of {width}-wide blocks")
        out.append((module, attribute, cols // width, rows // width))
    return width, out


def _apply(model: nn.Module, spec: BackboneSpec, options: Options, tensor: bool, method: str) -> nn.Module:
    width, targets = _targets(model, spec, method)
    freeze(model)
    shared = SharedFactors(width, options.rank, sum(a * b for _, _, a, b in targets), tensor)
    model.add_module(SHARED, shared)
    first = 0
    for module, attribute, a, b in targets:
        delta = FacTDelta(shared, a, b, options.scale, first if tensor else None)
        parametrize.register_parametrization(module, attribute, delta)
        first += a * b
    return model


def apply_tt(model: nn.Module, spec: BackboneSpec, options: Options) -> nn.Module:
    return _apply(model, spec, options, tensor=False, method="fact-tt")


def apply_tk(model: nn.Module, spec: BackboneSpec, options: Options) -> nn.Module:
    return _apply(model, spec, options, tensor=True, method="fact-tk")


def declares(name: str, model: nn.Module, spec: BackboneSpec) -> bool:
    return name.startswith(f"{SHARED}.") or name.endswith(f".{CORE}")


def expected_tt(model: nn.Module, spec: BackboneSpec, options: Options) -> int:
    width, targets = _targets(model, spec, "fact-tt")
    return 2 * width * options.rank + options.rank**2 * sum(a * b for _, _, a, b in targets)


def expected_tk(model: nn.Module, spec: BackboneSpec, options: Options) -> int:
    width, targets = _targets(model, spec, "fact-tk")
    r = options.rank
    return 2 * width * r + r**3 + r * sum(a * b for _, _, a, b in targets)
