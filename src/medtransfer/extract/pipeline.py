"""Run a frozen backbone once over a manifest's images and write the embeddings into the feature store.

Chunk by chunk: each finished chunk is flagged done in the store, so a re-run computes only what is missing
(nothing, when the group is complete) and an interrupted run resumes where it stopped.
"""

from __future__ import annotations

import contextlib
import os
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from medtransfer import cache_schema
from medtransfer.backbones import load_backbone
from medtransfer.data.manifest import load_manifest
from medtransfer.errors import MedtransferError
from medtransfer.extract.dataset import ImageDataset


@dataclass(frozen=True)
class ExtractResult:
    backbone: str
    group_key: str
    weights_source: str
    n_images: int
    n_computed: int
    seconds: float

    @property
    def images_per_second(self) -> float:
        return self.n_computed / self.seconds if self.seconds > 0 else float("nan")


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except RuntimeError as exc:
        raise MedtransferError(f"unknown device {device!r}; use auto, cpu, cuda or cuda:N") from exc
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise MedtransferError("--device cuda was asked for but no CUDA GPU is visible; use --device cpu")
    return resolved


def default_workers() -> int:
    """Decode in background workers when there are cores to spare; on 2 cores the model needs both."""
    cpus = os.cpu_count() or 1
    return 0 if cpus <= 2 else min(8, cpus - 1)


def extract_features(
    manifest_path: str | Path,
    backbone: str,
    store: str | Path,
    weights: str = "default",
    label_column: str = "label",
    batch_size: int = 32,
    device: str = "auto",
    num_workers: int | None = None,
    dtype: str = "float16",
    chunk_rows: int = cache_schema.DEFAULT_CHUNK_ROWS,
    progress: bool = True,
) -> ExtractResult:
    """Embed every image of the manifest with ``backbone``; returns what was computed and how fast."""
    manifest = load_manifest(manifest_path, label_column=label_column, min_classes=1)
    loaded = load_backbone(backbone, weights)
    preprocessing = loaded.preprocessing.as_dict()
    key = cache_schema.group_key(backbone, weights, loaded.weights_fingerprint, preprocessing)
    root = cache_schema.open_store(store, mode="a")
    group = cache_schema.create_group(
        root,
        key,
        manifest.ids,
        loaded.spec.embed_dim,
        attrs={
            "backbone": backbone,
            "architecture": loaded.spec.architecture,
            "weights": weights,
            "weights_source": loaded.weights_source,
            "weights_fingerprint": loaded.weights_fingerprint,
            "preprocessing": preprocessing,
            "embedding_kind": loaded.spec.embedding_kind,
            "created": datetime.now(UTC).isoformat(timespec="seconds"),
            "versions": _versions(),
        },
        dtype=dtype,
        chunk_rows=chunk_rows,
    )
    pending = cache_schema.pending_chunks(group)
    rows = [r for c in pending for r in range(c * chunk_rows, min((c + 1) * chunk_rows, len(manifest)))]
    start = time.perf_counter()
    if rows:
        _embed_rows(loaded, manifest.table["image"].tolist(), rows, group, pending, chunk_rows,
                    batch_size, resolve_device(device), default_workers() if num_workers is None else num_workers,
                    progress, manifest.path.name)
    cache_schema.mark_complete(group)
    return ExtractResult(
        backbone=backbone,
        group_key=key,
        weights_source=loaded.weights_source,
        n_images=len(manifest),
        n_computed=len(rows),
        seconds=time.perf_counter() - start,
    )


def _embed_rows(loaded, paths, rows, group, pending, chunk_rows, batch_size, device, num_workers, progress,
                manifest_name) -> None:
    model = loaded.model.to(device)
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    dataset = ImageDataset(paths, rows, loaded.preprocessing)
    loader = DataLoader(dataset, batch_size=batch_size, num_workers=num_workers, pin_memory=device.type == "cuda")
    autocast = (
        torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else contextlib.nullcontext()
    )
    buffer: list[np.ndarray] = []
    chunk_queue = list(pending)
    n_total = len(paths)
    bar = tqdm(total=len(rows), desc=f"extract {loaded.spec.name}", unit="img", disable=not progress)
    with torch.inference_mode(), autocast, bar:
        for batch_rows, images, errors in loader:
            for row, error in zip(batch_rows.tolist(), errors, strict=True):
                if error:
                    raise MedtransferError(f"manifest {manifest_name}, row {row + 2}: {error}")
            images = images.to(device, non_blocking=True)
            if device.type == "cuda":
                images = images.contiguous(memory_format=torch.channels_last)
            buffer.append(model(images).float().cpu().numpy())
            bar.update(len(batch_rows))
            while chunk_queue:
                chunk = chunk_queue[0]
                size = min(chunk_rows, n_total - chunk * chunk_rows)
                if sum(len(b) for b in buffer) < size:
                    break
                stacked = np.concatenate(buffer)
                cache_schema.write_chunk(group, chunk, stacked[:size])
                buffer = [stacked[size:]]
                chunk_queue.pop(0)


def _versions() -> dict[str, str]:
    versions = {}
    for package in ("medtransfer", "torch", "torchvision", "timm", "transformers", "open_clip_torch", "zarr"):
        with contextlib.suppress(metadata.PackageNotFoundError):
            versions[package] = metadata.version(package)
    return versions
