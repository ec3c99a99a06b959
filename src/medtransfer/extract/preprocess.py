"""Decoded image -> normalized backbone input, as declared by the backbone's ``Preprocessing``."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from medtransfer.backbones.registry import Preprocessing

_GRAY = (0.299, 0.587, 0.114)


def as_chw(image: np.ndarray | torch.Tensor) -> torch.Tensor:
    """H x W or H x W x 3 float in [0, 1] -> 1 x H x W or 3 x H x W.

    Grayscale stays one channel through resizing (3x less work) and is replicated to RGB at the end.
    """
    tensor = torch.from_numpy(image) if isinstance(image, np.ndarray) else image
    return tensor.unsqueeze(0) if tensor.ndim == 2 else tensor.permute(2, 0, 1)


def to_input(image: np.ndarray, preprocessing: Preprocessing) -> torch.Tensor:
    """A float image in [0, 1] (H x W or H x W x 3) -> 3 x S x S, grayscale replicated to RGB, normalized."""
    return chw_to_input(as_chw(image), preprocessing)


def chw_to_input(tensor: torch.Tensor, preprocessing: Preprocessing,
                 original_hw: tuple[int, int] | None = None) -> torch.Tensor:
    """3 x H x W float in [0, 1] -> normalized 3 x S x S.

    ``original_hw``: the tensor is a squashed copy (pixel cache) of an image of that shape; for aspect-aware
    resizing (center-crop, pad-square) its aspect ratio is restored first.
    """
    size = preprocessing.input_size
    mode = getattr(preprocessing, "interpolation", "bilinear")
    if getattr(preprocessing, "channels", "rgb") == "grayscale" and tensor.shape[0] == 3:
        weights = torch.tensor(_GRAY, dtype=tensor.dtype).view(3, 1, 1)
        tensor = (tensor * weights).sum(0, keepdim=True)
    if tensor.shape[0] == 3 and tensor.stride(0) == 0:  # an expanded gray image: resize one plane
        tensor = tensor[:1]
    if original_hw is not None and preprocessing.resize != "squash":
        height, width = original_hw
        side = tensor.shape[1]
        scale = side / max(height, width)
        tensor = _resize(tensor, (max(1, round(height * scale)), max(1, round(width * scale))), mode)
    if preprocessing.resize == "center-crop":
        tensor = _resize_shorter(tensor, round(size / preprocessing.crop_fraction), mode)
        top, left = (_crop_offset(side - size, getattr(preprocessing, "crop_offset", "round"))
                     for side in tensor.shape[1:])
        tensor = tensor[:, top : top + size, left : left + size]
    elif preprocessing.resize == "pad-square":
        height, width = tensor.shape[1:]
        side = max(height, width)
        top, left = (side - height) // 2, (side - width) // 2
        tensor = F.pad(tensor, (left, side - width - left, top, side - height - top))
        tensor = _resize(tensor, (size, size), mode)
    else:
        tensor = _resize(tensor, (size, size), mode)
    if tensor.shape[0] == 1:
        tensor = tensor.expand(3, -1, -1)
    mean = torch.tensor(preprocessing.mean, dtype=tensor.dtype).view(3, 1, 1)
    std = torch.tensor(preprocessing.std, dtype=tensor.dtype).view(3, 1, 1)
    return ((tensor - mean) / std).contiguous()


def resize_square(image: np.ndarray, size: int) -> torch.Tensor:
    """Decoded image -> 3 x size x size float in [0, 1] (squashed, antialiased): what the pixel cache stores."""
    return _resize(as_chw(image), (size, size), "bilinear").clamp(0.0, 1.0).expand(3, -1, -1)


def _resize(tensor: torch.Tensor, size: tuple[int, int], mode: str = "bilinear") -> torch.Tensor:
    if tuple(tensor.shape[1:]) == size:
        return tensor
    out = F.interpolate(tensor.unsqueeze(0).float(), size=size, mode=mode, antialias=True, align_corners=False)[0]
    return out.clamp_(0.0, 1.0) if mode == "bicubic" else out


def _crop_offset(excess: int, rule: str) -> int:
    """Top / left of a centred crop that leaves ``excess`` pixels: torchvision rounds half of it (Python's
    round, half to even), Hugging Face floors it (``Preprocessing.crop_offset``)."""
    return int(round(excess / 2.0)) if rule == "round" else excess // 2


def resized_shorter_size(height: int, width: int, shorter: int) -> tuple[int, int]:
    """(h, w) with the shorter side ``shorter`` and the longer one truncated, as torchvision's ``resize``
    (``transforms/functional.py`` ``_compute_resized_output_size``: ``int(size * long / short)``) and Hugging
    Face's ``get_resize_output_image_size`` (``transformers/image_transforms.py``, the same ``int``) size it."""
    if height <= width:
        return shorter, int(shorter * width / height)
    return int(shorter * height / width), shorter


def _resize_shorter(tensor: torch.Tensor, shorter: int, mode: str = "bilinear") -> torch.Tensor:
    return _resize(tensor, resized_shorter_size(*tensor.shape[1:], shorter), mode)
