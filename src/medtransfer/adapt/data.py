"""Images for training: decoded and preprocessed once per run into an in-memory uint8 store.

Each image goes through extract's own path (``load_image`` + ``to_input`` with the backbone's
``Preprocessing``), minus the mean/std normalisation, so evaluation inputs equal what extract feeds the
backbone (up to 8-bit rounding); the training loop augments on the device, then normalises. Grayscale data
sets (every image gray) are stored with one channel: 224 px costs 50 kB per image.

With ``pixel_cache`` (extract's ``--pixel-cache`` Zarr), images are read from it instead of decoded, through
extract's own ``PixelRowsDataset`` (aspect-aware resizing restored from the cached original shape); when the
cache lacks some image, or has no group at least as large as the input size, the files are decoded.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from medtransfer.backbones.registry import Preprocessing
from medtransfer.errors import MedtransferError
from medtransfer.extract.dataset import ImageDataset


@dataclass
class PixelStore:
    """``pixels``: N x C x S x S uint8 (C = 1 or 3); ``rows``: id -> index into ``pixels``."""

    pixels: torch.Tensor
    rows: dict[str, int]
    source: str  # what a person reads: where the pixels came from

    def index(self, ids: list[str]) -> torch.Tensor:
        return torch.tensor([self.rows[i] for i in ids], dtype=torch.long)

    def batch(self, index: torch.Tensor, device: torch.device | str) -> torch.Tensor:
        """Float B x C x S x S in [0, 1] on ``device`` (the uint8 batch travels, then converts)."""
        chunk = self.pixels[index.to(self.pixels.device)]
        if chunk.device.type == "cpu" and torch.device(device).type == "cuda":
            chunk = chunk.pin_memory().to(device, non_blocking=True)
        return chunk.to(device).float().div_(255.0)

    def to_device_if_small(self, device: torch.device, fraction: float = 0.25) -> None:
        """Move the whole store onto a CUDA device when it takes at most ``fraction`` of its memory."""
        if device.type == "cuda":
            free, _ = torch.cuda.mem_get_info(device)
            if self.pixels.numel() <= fraction * free:
                self.pixels = self.pixels.to(device)


def unnormalized(preprocessing: Preprocessing) -> Preprocessing:
    return replace(preprocessing, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))


def normalize(images: torch.Tensor, preprocessing: Preprocessing,
              stats: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
    """B x C x S x S in [0, 1] -> normalised B x 3 x S x S (one channel is replicated); ``stats``: the
    (mean, std) as 1 x 3 x 1 x 1 tensors on the device, to skip building them per batch."""
    if stats is None:
        stats = (torch.tensor(preprocessing.mean, device=images.device).view(1, 3, 1, 1),
                 torch.tensor(preprocessing.std, device=images.device).view(1, 3, 1, 1))
    mean, std = stats
    return (images - mean) / std  # broadcasting replicates a single gray channel to 3


def _cached_dataset(pixel_cache: str | Path, paths: list[str], preprocessing: Preprocessing,
                    log: Callable[[str], None]):
    """A dataset over extract's pixel cache for ``paths``, or None (with a note) when it cannot serve them all."""
    from medtransfer.data.fingerprint import fingerprints
    from medtransfer.extract.pixels import PixelCacheFolder, PixelRowsDataset

    path = Path(pixel_cache)
    folder = PixelCacheFolder(path)
    sizes = folder.sizes()
    usable = [s for s in sizes if s >= preprocessing.input_size]
    if not usable:
        log(f"pixel cache {path} has no group of >= {preprocessing.input_size} px (has {sizes}); decoding files")
        return None, ""
    cache = folder.open(usable[0])
    shas = fingerprints(paths)
    missing = sum(sha not in cache.index for sha in shas)
    if missing:
        log(f"pixel cache {path} lacks {missing} of {len(paths)} images; decoding the files instead")
        return None, ""
    rows = cache.rows_for_shas(shas).tolist()
    dataset = PixelRowsDataset(cache.path, cache.size, cache.dtype, rows, cache.orig_shape, unnormalized(preprocessing))
    return dataset, f"read from pixel cache {path} ({cache.source})"


def load_pixels(table, ids: list[str], preprocessing: Preprocessing, *, num_workers: int = 0,
                progress: bool = True, pixel_cache: str | Path | None = None,
                log: Callable[[str], None] = print, force_dicom: bool = False) -> PixelStore:
    """Preprocess the manifest rows ``ids`` (``table``: the manifest's table) into a PixelStore."""
    by_id = dict(zip(table["id"].astype(str), table["image"].astype(str), strict=True))
    missing = [i for i in ids if i not in by_id]
    if missing:
        raise MedtransferError(f"the splits file names {len(missing)} ids the manifest lacks (e.g. {missing[0]!r})")
    paths = [by_id[i] for i in ids]
    dataset, source = _cached_dataset(pixel_cache, paths, preprocessing, log) if pixel_cache else (None, "")
    if dataset is None:
        dataset = ImageDataset(paths, list(range(len(ids))), unnormalized(preprocessing), force_dicom=force_dicom)
        source = f"decoded from the image files ({preprocessing.input_size} px, 8-bit in memory)"
    loader = DataLoader(dataset, batch_size=32, num_workers=num_workers, collate_fn=_collate)
    size = preprocessing.input_size
    colour = torch.zeros(len(ids), dtype=torch.bool)
    pixels = torch.empty(len(ids), 3, size, size, dtype=torch.uint8)
    bar = tqdm(total=len(ids), desc="decode images", unit="img", disable=not progress, leave=False)
    with bar:
        for rows, images, errors in loader:
            for row, error in zip(rows, errors, strict=True):
                if error:
                    raise MedtransferError(f"sample {ids[row]!r}: {error}")
            batch = images.clamp(0, 1).mul(255).round().to(torch.uint8)
            pixels[rows] = batch
            colour[rows] = (batch != batch[:, :1]).flatten(1).any(1)
            bar.update(len(rows))
    if not colour.any():
        pixels = pixels[:, :1].clone()
    return PixelStore(pixels=pixels, rows={i: n for n, i in enumerate(ids)}, source=source)


def _collate(items):
    rows = torch.tensor([item[0] for item in items], dtype=torch.long)
    return rows, torch.stack([item[1] for item in items]), [item[2] for item in items]
