"""Chest-X-ray-appropriate augmentation, batched on the training device.

Small random-resized crops (area 80-100 %, aspect 0.9-1.1), small rotations (+-10 degrees), brightness and
contrast (+-10 %); no horizontal flip by default (the heart is on the left; a flip makes a dextrocardia
image). One ``affine_grid`` + ``grid_sample`` per batch does crop, rotation and resize together, so
augmentation costs a fraction of a forward pass on a GPU. Random draws come from a CPU generator seeded
per run, so a run is repeatable and ``--resume`` continues the same stream.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class AugmentSpec:
    scale: tuple[float, float] = (0.8, 1.0)  # area of the crop, as a fraction of the image
    ratio: tuple[float, float] = (0.9, 1.1)  # aspect ratio of the crop
    degrees: float = 10.0
    brightness: float = 0.1
    contrast: float = 0.1
    hflip: bool = False


def _uniform(n: int, low: float, high: float, generator: torch.Generator) -> torch.Tensor:
    return low + (high - low) * torch.rand(n, generator=generator)


def augment_batch(images: torch.Tensor, spec: AugmentSpec, generator: torch.Generator) -> torch.Tensor:
    """``images``: B x C x S x S floats in [0, 1] (before normalisation) -> augmented, same shape, in [0, 1]."""
    n = images.shape[0]
    area = _uniform(n, *spec.scale, generator)
    log_ratio = _uniform(n, math.log(spec.ratio[0]), math.log(spec.ratio[1]), generator)
    ratio = torch.exp(log_ratio)
    width = torch.sqrt(area * ratio).clamp(max=1.0)  # fraction of the image's width the crop spans
    height = torch.sqrt(area / ratio).clamp(max=1.0)
    # the crop's centre, in [-1, 1] coordinates, such that the crop stays inside the image
    cx = (1 - width) * (2 * torch.rand(n, generator=generator) - 1)
    cy = (1 - height) * (2 * torch.rand(n, generator=generator) - 1)
    angle = _uniform(n, -spec.degrees, spec.degrees, generator) * math.pi / 180
    cos, sin = torch.cos(angle), torch.sin(angle)
    flip = torch.where(torch.rand(n, generator=generator) < 0.5, -1.0, 1.0) if spec.hflip else torch.ones(n)
    theta = torch.stack([
        torch.stack([cos * width * flip, -sin * height, cx], dim=1),
        torch.stack([sin * width * flip, cos * height, cy], dim=1),
    ], dim=1)
    brightness = _uniform(n, -spec.brightness, spec.brightness, generator)
    contrast = _uniform(n, 1 - spec.contrast, 1 + spec.contrast, generator)

    device, dtype = images.device, images.dtype
    grid = F.affine_grid(theta.to(device, dtype), list(images.shape), align_corners=False)
    out = F.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=False)
    mean = out.mean(dim=(1, 2, 3), keepdim=True)
    out = (out - mean) * contrast.to(device, dtype).view(-1, 1, 1, 1) + mean
    out = out + brightness.to(device, dtype).view(-1, 1, 1, 1)
    return out.clamp_(0, 1)
