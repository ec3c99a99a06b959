"""The trained model: backbone (possibly peft-wrapped) -> embedding -> standardise -> linear head."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from medtransfer.adapt.methods import HEAD_PREFIX, AdaptMethod


class Head(nn.Module):
    """``linear((x - mean) * scale)``; mean/scale are buffers (identity by default, set from train embeddings
    for ``lp`` and ``lp-ft`` so that the head sees what probe's standardised logistic regression sees)."""

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

    @torch.no_grad()
    def load_logreg(self, logreg, n_classes: int) -> None:
        """Copy a LogisticRegression fitted on standardised embeddings (this head's mean / scale) into it."""
        coef = np.asarray(logreg.coef_, dtype=np.float32)
        intercept = np.asarray(logreg.intercept_, dtype=np.float32)
        classes = np.asarray(logreg.classes_, dtype=int)
        weight = torch.zeros_like(self.linear.weight)
        bias = torch.zeros_like(self.linear.bias)
        if coef.shape[0] == 1:  # binary: one row for classes_[1]; split it symmetrically over the two logits
            weight[classes[1]] = torch.from_numpy(coef[0] / 2)
            weight[classes[0]] = torch.from_numpy(-coef[0] / 2)
            bias[classes[1]], bias[classes[0]] = float(intercept[0] / 2), float(-intercept[0] / 2)
        else:
            for row, cls in enumerate(classes):
                weight[cls] = torch.from_numpy(coef[row])
                bias[cls] = float(intercept[row])
        self.linear.weight.copy_(weight)
        self.linear.bias.copy_(bias)


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

