"""Visual Prompt Tuning (Jia et al., ECCV 2022, arXiv:2203.12119; official code github.com/KMnP/vpt).

VPT-shallow prepends ``prompt_length`` learnable tokens after the class token at the input of the first block;
VPT-deep does so at every block, replacing the previous block's prompt outputs with that block's own prompts
(``PromptedTransformer.forward_deep_prompt`` in src/models/vit_prompt/vit.py). Prompts carry no position
embedding. Trainable: layers x prompt_length x width (deep) or prompt_length x width (shallow).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from medtransfer.adapt.freezing import freeze
from medtransfer.adapt.options import AT_LEAST_ONE, PROBABILITY, MethodOptions, option
from medtransfer.adapt.vision.anatomy import patch_size, unsupported, vit_blocks
from medtransfer.backbones.registry import BackboneSpec

PREFIX = "vpt_prompts"


@dataclass(frozen=True)
class Options(MethodOptions):
    """VPT's prompt length and prompt dropout."""

    # KMnP/vpt src/configs/config.py: _C.MODEL.PROMPT.NUM_TOKENS = 5, _C.MODEL.PROMPT.DROPOUT = 0.0
    prompt_length: int = option(5, "prompt tokens per block (VPT default 5)", rule=AT_LEAST_ONE)
    prompt_dropout: float = option(0.0, "dropout on the prompt tokens (VPT default 0.0)", rule=PROBABILITY)


class Prompts(nn.Module):
    """One block's prompt tokens; its forward is the block's forward pre-hook (insert or replace prompts)."""

    def __init__(self, length: int, width: int, bound: float, dropout: float, insert: bool):
        super().__init__()
        self.prompt = nn.Parameter(torch.empty(length, width).uniform_(-bound, bound))  # vit.py: xavier uniform
        self.dropout = nn.Dropout(dropout)
        self.insert = insert  # first block: insert after the class token; later blocks: replace

    def forward(self, module: nn.Module, args: tuple, kwargs: dict):
        if args:
            x, rest = args[0], args[1:]
        else:
            key = next(k for k, v in kwargs.items() if torch.is_tensor(v) and v.ndim == 3)
            x, rest = kwargs[key], ()
        prompt = self.dropout(self.prompt).to(x.dtype).expand(x.shape[0], -1, -1)
        tail = x[:, 1:] if self.insert else x[:, 1 + prompt.shape[1]:]
        x = torch.cat([x[:, :1], prompt, tail], dim=1)
        if args:
            return (x, *rest), kwargs
        return args, {**kwargs, key: x}


def _apply(model: nn.Module, spec: BackboneSpec, options: Options, deep: bool, method: str) -> nn.Module:
    blocks = vit_blocks(model, spec, method)
    _check_batch_first(model, spec, method)
    freeze(model)
    # vit.py: val = sqrt(6 / (3 * patch_h * patch_w + prompt_dim)), uniform(-val, val)
    for index, block in enumerate(blocks if deep else blocks[:1]):
        bound = math.sqrt(6.0 / (3 * patch_size(model) + block.width))
        prompts = Prompts(options.prompt_length, block.width, bound, options.prompt_dropout, insert=index == 0)
        module = model.get_submodule(block.name)
        module.add_module(PREFIX, prompts)
        module.register_forward_pre_hook(prompts, with_kwargs=True)
    return model


def _check_batch_first(model: nn.Module, spec: BackboneSpec, method: str) -> None:
    for module in model.modules():
        if getattr(module, "batch_first", True) is False and hasattr(module, "resblocks"):
            raise unsupported(method, spec, "its transformer runs sequence-first; prompts need batch-first tokens")


def apply_shallow(model: nn.Module, spec: BackboneSpec, options: Options) -> nn.Module:
    return _apply(model, spec, options, deep=False, method="vpt-shallow")


def apply_deep(model: nn.Module, spec: BackboneSpec, options: Options) -> nn.Module:
    return _apply(model, spec, options, deep=True, method="vpt-deep")


def declares(name: str, model: nn.Module, spec: BackboneSpec) -> bool:
    return f"{PREFIX}." in name


def expected_shallow(model: nn.Module, spec: BackboneSpec, options: Options) -> int:
    return options.prompt_length * vit_blocks(model, spec, "vpt-shallow")[0].width


def expected_deep(model: nn.Module, spec: BackboneSpec, options: Options) -> int:
    blocks = vit_blocks(model, spec, "vpt-deep")
    return len(blocks) * options.prompt_length * blocks[0].width
