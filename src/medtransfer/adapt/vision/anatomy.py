"""Where the transformer blocks of a ViT are, whatever its layout (Hugging Face, open_clip, timm).

Found from the backbone registry's PEFT target patterns (``BackboneSpec.targets``): the parent of an attention
Linear (``attention.q_proj`` / ``attn.qkv``), or the attention target itself when it is a fused module, is the
attention branch, the MLP Linears' parent (``mlp.fc1`` -> ``mlp``) the MLP branch, and their parent the block.
Every supported layout is pre-norm: a block's LayerNorm children, in registration order, are the
pre-attention and the pre-MLP norm (HF ``layernorm_before/after``, open_clip ``ln_1/ln_2``, timm
``norm1/norm2``); the pre-MLP norm's input is the residual stream after attention.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from medtransfer.backbones.registry import BackboneSpec, resolve_targets
from medtransfer.errors import MedtransferError


@dataclass(frozen=True)
class Block:
    name: str
    attention: str  # module whose output is the attention branch (before the residual add)
    mlp: str  # module whose output is the MLP branch
    norm_mlp: str  # LayerNorm in front of the MLP
    width: int


def unsupported(method: str, spec: BackboneSpec, why: str) -> MedtransferError:
    return MedtransferError(f"method {method!r} cannot apply to backbone {spec.name!r} (family {spec.family}): {why}")


def _containers(model: nn.Module, patterns: tuple[str, ...]) -> list[str]:
    """The branch modules: a Linear target's parent (``attn.qkv`` -> ``attn``, ``fc1`` -> ``mlp``), or the
    target itself when it is the whole branch (open_clip's ``attn``, an ``nn.MultiheadAttention``)."""
    out: list[str] = []
    for pattern in patterns:
        for name in resolve_targets(model, (pattern,)):
            is_linear = isinstance(model.get_submodule(name), nn.Linear)
            container = (name.rsplit(".", 1)[0] if "." in name else "") if is_linear else name
            if container not in out:
                out.append(container)
    return out


def _parent(name: str) -> str:
    return name.rsplit(".", 1)[0] if "." in name else ""


def vit_blocks(model: nn.Module, spec: BackboneSpec, method: str) -> list[Block]:
    """The transformer blocks in order; an error naming method and family where there are none."""
    if spec.family != "vit":
        raise unsupported(method, spec, "it needs transformer blocks (a ViT)")
    attention = {_parent(c): c for c in _containers(model, spec.targets.attention)}
    mlps = {_parent(c): c for c in _containers(model, spec.targets.mlp)}
    modules = dict(model.named_modules())
    blocks = []
    for name, mlp in mlps.items():
        if name not in attention:
            continue
        norms = [f"{name}.{child}" if name else child for child, module in modules[name].named_children()
                 if isinstance(module, nn.LayerNorm)]
        if len(norms) < 2:
            raise unsupported(method, spec, f"block {name!r} has {len(norms)} LayerNorm children, expected the "
                                            "pre-attention and the pre-MLP norm")
        norm = modules[norms[1]]
        blocks.append(Block(name=name, attention=attention[name], mlp=mlp, norm_mlp=norms[1],
                            width=int(norm.normalized_shape[-1])))
    if not blocks:
        raise unsupported(method, spec, "no transformer block found from its attention / MLP target patterns")
    return blocks


def first_tensor(value):
    """A module's output tensor: the first element of a tuple output (HF / MultiheadAttention return tuples)."""
    return value[0] if isinstance(value, tuple) else value


def replace_first(value, tensor: torch.Tensor):
    return (tensor, *value[1:]) if isinstance(value, tuple) else tensor


def patch_size(model: nn.Module) -> int:
    """The patch embedding's kernel area (first Conv2d of the model): VPT's prompt initialisation uses it."""
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            return int(module.kernel_size[0] * module.kernel_size[1])
    raise MedtransferError("no patch-embedding convolution found")
