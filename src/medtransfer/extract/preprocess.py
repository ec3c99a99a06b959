"""Decoded image -> normalized backbone input, as declared by the backbone's ``Preprocessing``."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from medtransfer.backbones.registry import Preprocessing


def to_input(image: np.ndarray, preprocessing: Preprocessing) -> torch.Tensor:
    """A float image in [0, 1] (H x W or H x W x 3) -> 3 x S x S, grayscale replicated to RGB, normalized."""
    tensor = torch.from_numpy(image)
    tensor = tensor.unsqueeze(0).expand(3, -1, -1) if tensor.ndim == 2 else tensor.permute(2, 0, 1)
    size = preprocessing.input_size
    if preprocessing.resize == "center-crop":
        tensor = _resize_shorter(tensor, round(size / preprocessing.crop_fraction))
        top = (tensor.shape[1] - size) // 2
        left = (tensor.shape[2] - size) // 2
        tensor = tensor[:, top : top + size, left : left + size]
    else:
        tensor = _resize(tensor, (size, size))
    mean = torch.tensor(preprocessing.mean).view(3, 1, 1)
    std = torch.tensor(preprocessing.std).view(3, 1, 1)
    return ((tensor - mean) / std).contiguous()


def _resize(tensor: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    if tuple(tensor.shape[1:]) == size:
        return tensor
    return F.interpolate(tensor.unsqueeze(0), size=size, mode="bilinear", antialias=True, align_corners=False)[0]


def _resize_shorter(tensor: torch.Tensor, shorter: int) -> torch.Tensor:
    height, width = tensor.shape[1:]
    scale = shorter / min(height, width)
    return _resize(tensor, (max(shorter, round(height * scale)), max(shorter, round(width * scale))))
