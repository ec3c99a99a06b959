"""Every family's input against its upstream processor on odd-sized images (issue 25, point 6): the resized
size truncates the long side (torchvision ``_compute_resized_output_size``, transformers
``get_resize_output_image_size``: ``int``) and the crop offset is rounded as each upstream rounds it
(torchvision ``center_crop``: ``int(round(.. / 2.0))``; transformers ``center_crop``: ``// 2``). Upstream
processors are built offline from their configs: torchvision transforms (CNNs, DINOv2's eval transform, MAE
families), open_clip's ``image_transform`` (open_clip families), transformers' image processors (HF ViTs)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torchvision import transforms as T

from medtransfer.backbones import get_spec
from medtransfer.extract.preprocess import chw_to_input, resized_shorter_size

SHAPES = [(700, 560), (301, 223), (223, 301), (131, 97), (97, 131)]  # (height, width)
TORCHVISION = ["resnet18", "resnet50", "resnet50-v2", "densenet121", "dinov2-s", "mrm", "cxr-mae"]
OPEN_CLIP = ["biomedclip", "clip-l-laion400m"]
HUGGING_FACE = ["rad-dino", "clip-l", "pubmedclip"]


def rrmse(ours: torch.Tensor, upstream: torch.Tensor) -> float:
    return float((ours - upstream).norm() / upstream.norm())


def smooth_image(height: int, width: int, seed: int = 0) -> np.ndarray:
    """A colour image in [0, 1] with structure at every scale a one-pixel shift would show."""
    rng = np.random.default_rng(seed)
    coarse = torch.as_tensor(rng.random((1, 3, max(4, height // 6), max(4, width // 6))), dtype=torch.float32)
    image = F.interpolate(coarse, size=(height, width), mode="bilinear", align_corners=False)[0]
    return image.permute(1, 2, 0).numpy().clip(0, 1)


def as_pil(image: np.ndarray) -> tuple[Image.Image, np.ndarray]:
    """The 8-bit image an upstream processor takes, and the same pixels as floats for ours."""
    pil = Image.fromarray((image * 255).round().astype(np.uint8))
    return pil, np.asarray(pil, dtype=np.float32) / 255


def ours(name: str, image: np.ndarray) -> torch.Tensor:
    return chw_to_input(torch.from_numpy(image).permute(2, 0, 1).contiguous(), get_spec(name).preprocessing)


def test_resized_sizes_truncate_the_long_side_as_torchvision():
    from torchvision.transforms.functional import _compute_resized_output_size

    for height, width in [*SHAPES, (560, 700), (518, 777)]:
        for shorter in (224, 232, 256, 518):
            assert resized_shorter_size(height, width, shorter) == tuple(
                _compute_resized_output_size((height, width), [shorter]))


@pytest.mark.parametrize("name", TORCHVISION)
def test_torchvision_families_equal_torchvision_transforms(name):
    prep = get_spec(name).preprocessing
    mode = {"bilinear": T.InterpolationMode.BILINEAR, "bicubic": T.InterpolationMode.BICUBIC}[prep.interpolation]
    # the eval transforms as published: on a PIL image, then to a tensor
    upstream = T.Compose([T.Resize(round(prep.input_size / prep.crop_fraction), interpolation=mode),
                          T.CenterCrop(prep.input_size), T.ToTensor(), T.Normalize(prep.mean, prep.std)])
    for height, width in SHAPES:
        pil, quantized = as_pil(smooth_image(height, width))
        assert rrmse(ours(name, quantized), upstream(pil)) <= 0.01, (name, height, width)


@pytest.mark.parametrize("name", OPEN_CLIP)
def test_open_clip_families_equal_open_clip_preprocess(name):
    from open_clip.transform import image_transform

    prep = get_spec(name).preprocessing
    upstream = image_transform(prep.input_size, is_train=False, mean=prep.mean, std=prep.std,
                               interpolation=prep.interpolation)
    for height, width in SHAPES:
        pil, quantized = as_pil(smooth_image(height, width))
        assert rrmse(ours(name, quantized), upstream(pil)) <= 0.01, (name, height, width)


@pytest.mark.parametrize("name", HUGGING_FACE)
def test_hugging_face_vits_equal_their_image_processor(name):
    from transformers import BitImageProcessor, CLIPImageProcessor

    prep = get_spec(name).preprocessing
    config = dict(do_resize=True, size={"shortest_edge": prep.input_size}, resample=Image.Resampling.BICUBIC,
                  do_center_crop=True, crop_size={"height": prep.input_size, "width": prep.input_size},
                  do_rescale=True, do_normalize=True, image_mean=list(prep.mean), image_std=list(prep.std),
                  do_convert_rgb=True)
    processor = (BitImageProcessor if name == "rad-dino" else CLIPImageProcessor)(**config)
    for height, width in SHAPES:
        pil, quantized = as_pil(smooth_image(height, width))
        reference = processor(images=pil, return_tensors="pt")["pixel_values"][0]
        assert rrmse(ours(name, quantized), reference) <= 0.01, (name, height, width)
