"""One wrapper for every ViT-like backbone: tokens from the underlying model, then a declared pooling.

The underlying model is kept as the submodule ``backbone`` so its own module names (``qkv``, ``q_proj``,
``fc1``...) stay visible to PEFT target patterns. Family modules supply two small functions: how to get the
final-normalised token sequence, and (for CLIP-style models) how to project a pooled vector into the
image-embedding space. They also name the block list and the final norm (``blocks`` / ``norm`` paths), from
which extract reads DINOv2's linear-evaluation grid (class tokens of the last n blocks, with or without the
average-pooled patch tokens; facebookresearch/dinov2 dinov2/eval/linear.py ``create_linear_input``).

The default embedding is the vision transformer's own feature (the final-normed class token, 1,024-d for a
ViT-L, 768-d for a ViT-B), as DINOv2's linear evaluation and the linear-probe literature use; a CLIP-style
projection into the image-text space is applied only when ``project=True`` (``--embedding proj``).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from medtransfer.errors import MedtransferError

POOLINGS = ("cls", "mean", "cls+mean", "pooler")

TokensFn = Callable[[nn.Module, torch.Tensor], torch.Tensor]
ProjectFn = Callable[[nn.Module, torch.Tensor], torch.Tensor]


class ViTEmbedder(nn.Module):
    """``forward(x: B x 3 x H x W) -> B x out_dim``.

    pooling: "cls" (class token), "mean" (mean of the patch tokens, prefix/register tokens excluded),
    "cls+mean" (both, concatenated: 2 x dim), or "pooler" (the model's own pooled output via
    ``pooled_fn``, e.g. Swin's average pool). ``project_fn`` (CLIP-style models) maps each pooled vector
    into the image-embedding space.
    """

    def __init__(
        self,
        backbone: nn.Module,
        tokens_fn: TokensFn | None,
        *,
        token_dim: int,
        num_prefix_tokens: int = 1,
        pooling: str = "cls",
        project_fn: ProjectFn | None = None,
        project_dim: int | None = None,
        pooled_fn: TokensFn | None = None,
        project: bool = False,
        blocks: str = "",
        norm: str = "",
        projection: str = "",
    ) -> None:
        super().__init__()
        if pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {POOLINGS}, not {pooling!r}")
        if pooling == "pooler" and pooled_fn is None:
            raise ValueError("pooling='pooler' needs pooled_fn")
        self.backbone = backbone
        self._tokens_fn = tokens_fn
        self._project_fn = project_fn
        self._pooled_fn = pooled_fn
        self.pooling = pooling
        self.num_prefix_tokens = num_prefix_tokens
        self.token_dim = token_dim
        self.project = project and project_fn is not None
        self.project_dim = project_dim if project_fn is not None and project_dim else None
        self.blocks_path, self.norm_path = blocks, norm
        self.projection_path = projection  # where ``project_fn``'s weights live on ``backbone`` (drop_projection)
        dim = self.project_dim if self.project and self.project_dim else token_dim
        self.out_dim = 2 * dim if pooling == "cls+mean" else dim

    def tokens(self, x: torch.Tensor) -> torch.Tensor:
        """B x N x token_dim, after the model's final norm; prefix (class, register) tokens first."""
        if self._tokens_fn is None:
            raise MedtransferError(
                "this backbone exposes only a pooled embedding, no token sequence: cls/mean/cls_mean/last4 "
                "embeddings are not available for it"
            )
        return self._tokens_fn(self.backbone, x)

    @property
    def has_projection(self) -> bool:
        return self._project_fn is not None

    def _project(self, v: torch.Tensor) -> torch.Tensor:
        return self._project_fn(self.backbone, v) if self._project_fn is not None else v

    def _maybe_project(self, v: torch.Tensor) -> torch.Tensor:
        return self._project(v) if self.project else v

    def drop_projection(self) -> None:
        """Remove the image-text projection when this embedder does not use it (``project=False``): adapt trains
        the pre-projection feature, so the projection's weights would be dead, counted as trainable by full
        fine-tuning and never given a gradient. Kept when ``project=True`` or when its place is not declared."""
        if self.project or not self.projection_path:
            return
        *parents, name = self.projection_path.split(".")
        owner = self.backbone
        for part in parents:
            owner = getattr(owner, part)
        current = getattr(owner, name, None)
        if isinstance(current, nn.Parameter) or current is None:
            setattr(owner, name, None)
        else:
            setattr(owner, name, nn.Identity())
        self._project_fn, self.project_dim = None, None

    def _module(self, path: str) -> nn.Module | None:
        target: nn.Module | None = self.backbone
        for part in path.split(".") if path else ():
            target = getattr(target, part, None)
        return target if path and isinstance(target, nn.Module) else None

    def block_list(self) -> nn.ModuleList | nn.Sequential | None:
        """The transformer blocks in order (their outputs are the per-block token sequences)."""
        blocks = self._module(self.blocks_path)
        return blocks if isinstance(blocks, nn.ModuleList | nn.Sequential) else None

    def final_norm(self) -> nn.Module | None:
        """The norm ``tokens`` applies after the last block (applied to earlier blocks' outputs too)."""
        return self._module(self.norm_path)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.pooling == "pooler":
            return self._maybe_project(self._pooled_fn(self.backbone, x))
        t = self.tokens(x)
        cls = t[:, 0]
        if self.pooling == "cls":
            return self._maybe_project(cls)
        mean = t[:, self.num_prefix_tokens :].mean(dim=1)
        if self.pooling == "mean":
            return self._maybe_project(mean)
        return torch.cat([self._maybe_project(cls), self._maybe_project(mean)], dim=1)

    def extra_repr(self) -> str:
        return f"pooling={self.pooling!r}, project={self.project}, out_dim={self.out_dim}"


def without_unused_projection(model: nn.Module) -> nn.Module:
    """``model`` with a CLIP-style projection it does not use removed (``ViTEmbedder.drop_projection``)."""
    if isinstance(model, ViTEmbedder):
        model.drop_projection()
    return model
