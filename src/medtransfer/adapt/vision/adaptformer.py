"""AdaptFormer (Chen et al., NeurIPS 2022, arXiv:2205.13535; official code github.com/ShoufaChen/AdaptFormer).

A bottleneck MLP (down -> ReLU -> dropout -> up, times ``scale``) runs in parallel with each block's MLP on the
residual stream the MLP's norm reads (``ffn_option="parallel"``, ``ffn_adapter_layernorm_option="none"``), and
its output is added to the MLP's. Init "lora" (models/adapter.py): down kaiming-uniform(a=sqrt 5), up and both
biases zero, so the backbone's outputs are unchanged at initialisation.
Trainable: layers x (2 x width x bottleneck + bottleneck + width).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from medtransfer.adapt.freezing import freeze
from medtransfer.adapt.options import AT_LEAST_ONE, PROBABILITY, MethodOptions, option
from medtransfer.adapt.vision.anatomy import first_tensor, replace_first, vit_blocks
from medtransfer.backbones.registry import BackboneSpec

PREFIX = "adaptformer"


@dataclass(frozen=True)
class Options(MethodOptions):
    """AdaptFormer's bottleneck width, fixed output scale and dropout."""

    # AdaptFormer main_image.py / vit_image.py: ffn_num 64, ffn_adapter_scalar "0.1", Adapter(dropout=0.1)
    bottleneck: int = option(64, "adapter hidden size (AdaptFormer: 64)", rule=AT_LEAST_ONE)
    scale: float = option(0.1, "fixed scale s of the adapter output (AdaptFormer: 0.1)")
    dropout: float = option(0.1, "dropout after the ReLU (AdaptFormer: 0.1)", rule=PROBABILITY)


class ParallelAdapter(nn.Module):
    def __init__(self, width: int, options: Options):
        super().__init__()
        self.down = nn.Linear(width, options.bottleneck)
        self.up = nn.Linear(options.bottleneck, width)
        self.dropout = nn.Dropout(options.dropout)
        self.scale = options.scale
        nn.init.kaiming_uniform_(self.down.weight, a=math.sqrt(5))
        for tensor in (self.up.weight, self.down.bias, self.up.bias):
            nn.init.zeros_(tensor)
        self._stream: torch.Tensor | None = None

    def capture(self, module: nn.Module, args: tuple) -> None:
        """Pre-hook of the MLP's norm: keep the residual stream for the MLP's hook."""
        self._stream = args[0]

    def forward(self, module: nn.Module, args: tuple, output):
        """Forward hook of the MLP: add the scaled adapter branch."""
        stream, self._stream = self._stream, None
        branch = self.up(self.dropout(torch.relu(self.down(stream)))) * self.scale
        return replace_first(output, first_tensor(output) + branch.to(first_tensor(output).dtype))


def apply(model: nn.Module, spec: BackboneSpec, options: Options) -> nn.Module:
    blocks = vit_blocks(model, spec, "adaptformer")
    freeze(model)
    for block in blocks:
        adapter = ParallelAdapter(block.width, options)
        model.get_submodule(block.name).add_module(PREFIX, adapter)
        model.get_submodule(block.norm_mlp).register_forward_pre_hook(adapter.capture)
        model.get_submodule(block.mlp).register_forward_hook(adapter)
    return model


def declares(name: str, model: nn.Module, spec: BackboneSpec) -> bool:
    return f"{PREFIX}." in name


def expected_trainable(model: nn.Module, spec: BackboneSpec, options: Options) -> int:
    blocks = vit_blocks(model, spec, "adaptformer")
    b = options.bottleneck
    return sum(2 * block.width * b + b + block.width for block in blocks)
