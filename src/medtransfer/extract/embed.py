"""Which embeddings a backbone yields per image: the default ``features`` plus optional variants.

Variants (stored as ``features_<kind>``), DINOv2's linear-evaluation grid (facebookresearch/dinov2
dinov2/eval/linear.py ``create_linear_input``: class tokens of the last n blocks, n = 1 or 4, after the final
norm, with or without the average-pooled patch tokens of the last block), as the COVID-19 prognosis benchmark
ran it for every ViT (cosbidev/Deep-Sick src/configs/PEFT_runs/experiment/models/*.yaml: n_last_blocks [1, 4],
avgpools [True, False]):

- ``cls`` (n=1), ``cls_mean`` (n=1 + pooled, 2 x width), ``cls4`` (n=4, 4 x width), ``last4`` (n=4 + pooled,
  5 x width); ``mean``: the pooled patch tokens alone;
- ``proj``: a CLIP-style model's class token projected into its image-text space (the old default of
  clip-l, pubmedclip and biomedclip).

Every ViT family (HF, open_clip, timm trunks, MAE) is a ``ViTEmbedder`` naming its block list and final norm;
the last-4 variants read the blocks' outputs through forward hooks in the same forward pass.
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


MULTI_BLOCK = ("cls4", "last4")


def _blocks_and_norm(model: nn.Module) -> tuple[nn.Module, nn.Module | None] | None:
    if hasattr(model, "block_list") and model.block_list() is not None:
        return model.block_list(), model.final_norm()
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
    token_kinds = [k for k in kinds if k in ("cls", "mean", "cls_mean", "proj")]
    has_tokens = hasattr(model, "tokens") and hasattr(model, "num_prefix_tokens")
    if token_kinds and not has_tokens:
        raise MedtransferError(
            f"backbone {backbone!r} has no token sequence, so --embedding {'/'.join(token_kinds)} does not apply "
            "(CNNs give one pooled vector: the default embedding)"
        )
    if "proj" in kinds and not getattr(model, "has_projection", False):
        raise MedtransferError(
            f"backbone {backbone!r} has no image-text projection, so --embedding proj does not apply "
            "(only CLIP-style models: clip-l, clip-l-laion400m, pubmedclip, biomedclip)"
        )
    captured: list[torch.Tensor] = []
    hooks = None
    multi = [k for k in kinds if k in MULTI_BLOCK]
    if multi:
        found = _blocks_and_norm(model)
        if found is None:
            raise MedtransferError(
                f"--embedding {'/'.join(multi)} is not supported for backbone {backbone!r} (no block list: "
                "CNNs and Swin give one pooled vector)"
            )
        blocks, norm = found

        def hook(_module, _inputs, output):
            captured.append(output[0] if isinstance(output, tuple) else output)

        hooks = (blocks, norm, hook)

    def project(vector: torch.Tensor) -> torch.Tensor:
        return model._project(vector) if hasattr(model, "_project") else vector

    def plain(vector: torch.Tensor) -> torch.Tensor:
        """The default embedding's space: projected only when the model itself projects (``project=True``)."""
        return model._maybe_project(vector) if hasattr(model, "_maybe_project") else vector

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
                cls, mean = tokens[:, 0], tokens[:, model.num_prefix_tokens :].mean(dim=1)
                # the grid variants are the transformer's own features (never projected)
                variants = {"cls": cls, "mean": mean, "cls_mean": torch.cat([cls, mean], dim=1)}
                if "proj" in kinds:
                    variants["proj"] = project(cls)
                pooled = {"cls": plain(cls), "mean": plain(mean)}
                pooled["cls_mean"] = torch.cat([pooled["cls"], pooled["mean"]], dim=1)
                pooling = getattr(model, "pooling", "cls").replace("+", "_")
                out["features"] = pooled[pooling] if pooling in pooled else model(images)
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
                raise MedtransferError(f"--embedding {'/'.join(multi)}: backbone {backbone!r} did not run its "
                                       "last 4 blocks")
            normed = [norm(t) if norm is not None else t for t in layers]
            prefix = getattr(model, "num_prefix_tokens", 1)
            class_tokens = torch.cat([t[:, 0] for t in normed], dim=1)
            if "cls4" in kinds:
                out["features_cls4"] = class_tokens
            if "last4" in kinds:
                out["features_last4"] = torch.cat([class_tokens, normed[-1][:, prefix:].mean(dim=1)], dim=1)
        return out

    return embed
