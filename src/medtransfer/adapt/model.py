"""The trained model: backbone (possibly peft-wrapped) -> embedding -> standardise -> linear head."""

from __future__ import annotations

import torch
from torch import nn

from medtransfer.adapt.registry import HEAD_PREFIX, AdaptMethod


class Head(nn.Module):
    """``linear((x - mean) * scale)``; mean/scale are buffers (identity by default; set from training embeddings
    before gradient training, and by ``adapt.probe_head.install_linear`` when probe's logreg fitted the head)."""

    def __init__(self, dim: int, n_classes: int):
        super().__init__()
        self.register_buffer("mean", torch.zeros(dim))
        self.register_buffer("scale", torch.ones(dim))
        self.linear = nn.Linear(dim, n_classes)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.linear((features - self.mean) * self.scale)

    @torch.no_grad()
    def standardize_from(self, embeddings: torch.Tensor) -> None:
        self.mean.copy_(embeddings.float().mean(0))
        self.scale.copy_(1.0 / embeddings.float().std(0, unbiased=False).clamp_min(1e-6))


class Classifier(nn.Module):
    def __init__(self, backbone: nn.Module, embed_dim: int, n_classes: int):
        super().__init__()
        self.backbone = backbone
        self.head = Head(embed_dim, n_classes)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.embed(images))

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        features = self.backbone(images)
        if features.ndim != 2:
            raise RuntimeError(f"backbone returned shape {tuple(features.shape)}, expected B x D")
        return features


def set_train_mode(model: Classifier, method: AdaptMethod, train_norms: bool = False) -> None:
    """Train mode, except: a frozen backbone (lp) runs in eval mode, and BatchNorm statistics stay frozen
    unless the method trains norms (fft, lp-ft, ln-tune, or ``train_norms``)."""
    model.train()
    if method.backbone_eval:
        model.backbone.eval()
        return
    if method.norm_stats != "train" and not train_norms:
        for module in model.backbone.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                module.eval()


def parameter_counts(model: nn.Module) -> tuple[int, int]:
    """(trainable, total) parameters, counted as peft's ``get_nb_trainable_parameters`` counts them."""
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return trainable, sum(p.numel() for p in model.parameters())


def trained_state(model: nn.Module, method: AdaptMethod) -> dict[str, torch.Tensor]:
    """What a checkpoint keeps: trainable parameters (adapters + head for PEFT), plus every buffer when the
    method updates statistics (BatchNorm) or the head's standardisation."""
    state = {name: p.detach().to("cpu", copy=True) for name, p in model.named_parameters() if p.requires_grad}
    for name, buffer in model.named_buffers():
        if name.startswith(HEAD_PREFIX) or method.norm_stats == "train":
            state[name] = buffer.detach().to("cpu", copy=True)
    return state

