"""Which embeddings a backbone yields per image: the default ``features`` plus optional variants.

Variants (stored as ``features_<kind>``): ``cls`` (class token), ``mean`` (mean of the patch tokens),
``cls_mean`` (both, concatenated) -- for ViT backbones built as ``ViTEmbedder`` (anything with ``tokens(x)``);
``last4``: DINOv2's linear-eval input, the class tokens of the last 4 blocks (after the final norm) and the
mean of the last block's patch tokens, concatenated (5 x width) -- for timm-style (``blocks``/``norm``) and
Hugging Face-style (``encoder.layer``/``layernorm``) ViTs, through forward hooks.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from medtransfer.errors import MedtransferError
from medtransfer.vocabulary import EMBEDDING_KINDS

Embedder = Callable[[torch.Tensor], dict[str, torch.Tensor]]


def parse_embeddings(kinds: list[str] | tuple[str, ...] | None) -> tuple[str, ...]:
    out: list[str] = []
    for kind in kinds or ():
        for part in str(kind).replace("+", "_").split(","):
            part = part.strip()
            if part in ("", "default", "features"):
                continue
            if part not in EMBEDDING_KINDS:
                raise MedtransferError(f"unknown embedding {part!r}; use {', '.join(EMBEDDING_KINDS)}")
            if part not in out:
                out.append(part)
    return tuple(out)


def _blocks_and_norm(model: nn.Module) -> tuple[nn.Module, nn.Module | None] | None:
    inner = getattr(model, "backbone", model)
    for path, norm_name in (("blocks", "norm"), ("encoder.layer", "layernorm"), ("vit.encoder.layer", "vit.layernorm")):
        target = inner
        for part in path.split("."):
            target = getattr(target, part, None)
            if target is None:
                break
        if isinstance(target, nn.ModuleList | nn.Sequential) and len(target) >= 4:
            norm = inner
            for part in norm_name.split("."):
                norm = getattr(norm, part, None)
            return target, norm if isinstance(norm, nn.Module) else None
    return None


def make_embedder(model: nn.Module, kinds: tuple[str, ...], backbone: str) -> Embedder:
    """A function images -> {"features": B x D, "features_<kind>": ...} running the model once per batch."""
    token_kinds = [k for k in kinds if k in ("cls", "mean", "cls_mean")]
    has_tokens = hasattr(model, "tokens") and hasattr(model, "num_prefix_tokens")
    if token_kinds and not has_tokens:
        raise MedtransferError(
            f"backbone {backbone!r} has no token sequence, so --embedding {'/'.join(token_kinds)} does not apply "
            "(CNNs give one pooled vector: the default embedding)"
        )
    captured: list[torch.Tensor] = []
    hooks = None
    if "last4" in kinds:
        found = _blocks_and_norm(model)
        if found is None:
            raise MedtransferError(
                f"--embedding last4 is not supported for backbone {backbone!r} (no timm- or HF-style block list)"
            )
        blocks, norm = found

        def hook(_module, _inputs, output):
            captured.append(output[0] if isinstance(output, tuple) else output)

        hooks = (blocks, norm, hook)

    def project(vector: torch.Tensor) -> torch.Tensor:
        return model._project(vector) if hasattr(model, "_project") else vector

    def embed(images: torch.Tensor) -> dict[str, torch.Tensor]:
        out: dict[str, torch.Tensor] = {}
        handles = []
        if hooks is not None:
            blocks, _, hook = hooks
            captured.clear()
            handles = [block.register_forward_hook(hook) for block in list(blocks)[-4:]]
        try:
            if token_kinds:
                tokens = model.tokens(images)
                cls = project(tokens[:, 0])
                mean = project(tokens[:, model.num_prefix_tokens :].mean(dim=1))
                variants = {"cls": cls, "mean": mean, "cls_mean": torch.cat([cls, mean], dim=1)}
                pooling = getattr(model, "pooling", "cls").replace("+", "_")
                out["features"] = variants[pooling] if pooling in variants else model(images)
                for kind in token_kinds:
                    out[f"features_{kind}"] = variants[kind]
            else:
                out["features"] = model(images)
        finally:
            for handle in handles:
                handle.remove()
        if hooks is not None:
            _, norm, _ = hooks
            layers = captured[-4:]
            if len(layers) != 4:
                raise MedtransferError(f"--embedding last4: backbone {backbone!r} did not run its last 4 blocks")
            normed = [norm(t) if norm is not None else t for t in layers]
            prefix = getattr(model, "num_prefix_tokens", 1)
            parts = [t[:, 0] for t in normed] + [normed[-1][:, prefix:].mean(dim=1)]
            out["features_last4"] = torch.cat(parts, dim=1)
        return out

    return embed
