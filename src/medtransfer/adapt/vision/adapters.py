"""Houlsby sequential bottleneck adapters (Houlsby et al., ICML 2019, arXiv:1902.00751).

Two adapters per block, after the attention output projection and after the MLP, each inside the residual branch:
``h + up(act(down(h)))``. Defaults as adapter-hub's ``DoubleSeqBnConfig`` ("the adapter architecture proposed by
Houlsby et al.", github.com/adapter-hub/adapters src/adapters/configuration/adapter_config.py): reduction
factor 16, swish. The up projection starts at zero, so the backbone's outputs are unchanged at initialisation
(the paper's near-identity init). Houlsby et al. also train the layer norms (section 2.1), so the blocks' norms train.
Trainable: layers x 2 x (2 x width x bottleneck + bottleneck + width) (+ the blocks' norms).
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from medtransfer.adapt.freezing import freeze
from medtransfer.adapt.options import AT_LEAST_ONE, MethodOptions, option
from medtransfer.adapt.vision.anatomy import first_tensor, replace_first, vit_blocks
from medtransfer.backbones.registry import BackboneSpec

PREFIX = "houlsby_"


@dataclass(frozen=True)
class Options(MethodOptions):
    """The adapters' bottleneck, as a reduction of the block width."""

    # adapter-hub DoubleSeqBnConfig (src/adapters/configuration/adapter_config.py): reduction_factor 16
    reduction_factor: int = option(16, "bottleneck = width // reduction_factor (adapter-hub's Houlsby config: 16)",
                                   rule=AT_LEAST_ONE)


class SequentialAdapter(nn.Module):
    def __init__(self, width: int, bottleneck: int):
        super().__init__()
        self.down = nn.Linear(width, bottleneck)
        self.act = nn.SiLU()  # swish
        self.up = nn.Linear(bottleneck, width)
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)

    def forward(self, module: nn.Module, args: tuple, output):
        h = first_tensor(output)
        return replace_first(output, h + self.up(self.act(self.down(h))))


def _bottleneck(width: int, options: Options) -> int:
    return max(1, width // options.reduction_factor)


def _norms(model: nn.Module, blocks) -> list[str]:
    names = []
    for block in blocks:
        for child, module in model.get_submodule(block.name).named_children():
            if isinstance(module, nn.LayerNorm):
                names.append(f"{block.name}.{child}")
    return names


def apply(model: nn.Module, spec: BackboneSpec, options: Options) -> nn.Module:
    blocks = vit_blocks(model, spec, "adapter")
    freeze(model)
    for block in blocks:
        for where, target in (("attn", block.attention), ("mlp", block.mlp)):
            adapter = SequentialAdapter(block.width, _bottleneck(block.width, options))
            model.get_submodule(block.name).add_module(f"{PREFIX}{where}", adapter)
            model.get_submodule(target).register_forward_hook(adapter)
    for name in _norms(model, blocks):  # Houlsby et al. section 2.1: the layer norms are trained too
        model.get_submodule(name).requires_grad_(True)
    return model


def declares(name: str, model: nn.Module, spec: BackboneSpec) -> bool:
    if f".{PREFIX}" in name or name.startswith(PREFIX):
        return True
    return any(name.startswith(norm + ".") for norm in _norms(model, vit_blocks(model, spec, "adapter")))


def expected_trainable(model: nn.Module, spec: BackboneSpec, options: Options) -> int:
    blocks = vit_blocks(model, spec, "adapter")
    total = sum(2 * (2 * b.width * _bottleneck(b.width, options) + _bottleneck(b.width, options) + b.width)
                for b in blocks)
    return total + sum(p.numel() for n in _norms(model, blocks) for p in model.get_submodule(n).parameters())
