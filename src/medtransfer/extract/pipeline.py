"""Run frozen backbones once over a manifest's images and fill the feature store (Zarr or HDF5).

Per backbone: rows already in the store for the same image content are reused (same id: nothing to do;
another id, e.g. another study sharing images: copied), only the rest is computed, chunk by chunk, each chunk
flagged done after its data. Re-running computes nothing; an interrupted run resumes at the first chunk not
done. With a pixel cache, images are decoded once for all backbones.
"""

from __future__ import annotations

import contextlib
import os
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from medtransfer import cache_schema, cache_store
from medtransfer.backbones import load_backbone
from medtransfer.backbones.registry import SEED_BACKBONES, Preprocessing
from medtransfer.data.manifest import Manifest, load_manifest
from medtransfer.device import resolve_device, resolve_precision
from medtransfer.errors import MedtransferError
from medtransfer.extract.dataset import ImageDataset
from medtransfer.extract.embed import make_embedder, parse_embeddings
from medtransfer.extract.fingerprint import fingerprints
from medtransfer.extract.pixels import (
    PixelBatchDataset,
    PixelCache,
    PixelRowsDataset,
    default_pixel_cache_path,
    fill_pixel_cache,
    normalize_raw,
)


@dataclass(frozen=True)
class ExtractResult:
    backbone: str
    group_key: str
    weights_source: str
    n_images: int
    n_computed: int
    seconds: float
    n_copied: int = 0
    store_format: str = "zarr"
    embeddings: tuple[str, ...] = field(default_factory=tuple)

    @property
    def images_per_second(self) -> float:
        return self.n_computed / self.seconds if self.seconds > 0 else float("nan")


def default_workers() -> int:
    """Decode in background workers when there are cores to spare; on 2 cores the model needs both."""
    cpus = os.cpu_count() or 1
    return 0 if cpus <= 2 else min(8, cpus - 1)


def expand_backbones(names: list[str] | tuple[str, ...] | str) -> list[str]:
    """``seed`` -> the benchmark's backbones (the registry's ``SEED_BACKBONES``); duplicates dropped."""
    names = [names] if isinstance(names, str) else list(names)
    out: list[str] = []
    for name in names:
        expanded = list(SEED_BACKBONES) if name == "seed" else [name]
        out.extend(n for n in expanded if n not in out)
    if not out:
        raise MedtransferError("no backbone given; use --backbone NAME (repeatable) or --backbone seed")
    return out


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
    fmt: str | None = None,
    precision: str = "auto",
    embeddings: tuple[str, ...] | list[str] = (),
    pixel_cache: str | Path | bool | None = None,
    pixel_size: int | None = None,
    pixel_dtype: str = "uint16",
    preprocessing: Preprocessing | None = None,
    resize: str = "upstream",
) -> ExtractResult:
    """Embed every image of the manifest with ``backbone``; returns what was computed and how fast."""
    return extract_many(
        manifest_path, [backbone], store, weights=weights, label_column=label_column, batch_size=batch_size,
        device=device, num_workers=num_workers, dtype=dtype, chunk_rows=chunk_rows, progress=progress, fmt=fmt,
        precision=precision, embeddings=embeddings, pixel_cache=pixel_cache, pixel_size=pixel_size,
        pixel_dtype=pixel_dtype, preprocessing=preprocessing, resize=resize,
    )[0]


def extract_many(
    manifest_path: str | Path,
    backbones: list[str] | tuple[str, ...] | str,
    store: str | Path,
    weights: str = "default",
    label_column: str = "label",
    batch_size: int = 32,
    device: str = "auto",
    num_workers: int | None = None,
    dtype: str = "float16",
    chunk_rows: int = cache_schema.DEFAULT_CHUNK_ROWS,
    progress: bool = True,
    fmt: str | None = None,
    precision: str = "auto",
    embeddings: tuple[str, ...] | list[str] = (),
    pixel_cache: str | Path | bool | None = None,
    pixel_size: int | None = None,
    pixel_dtype: str = "uint16",
    preprocessing: Preprocessing | None = None,
    on_result=None,
    resize: str = "upstream",
) -> list[ExtractResult]:
    """Several backbones, one manifest: fingerprints (and the pixel cache) computed once, then each backbone.

    ``pixel_cache``: a Zarr path, True for ``<store>.pixels.zarr``, or None/False to decode per backbone.
    ``pixel_size``: the cached size (default: the largest input size of the backbones).
    ``preprocessing``: override every backbone's preprocessing (tests, small inputs).
    ``resize``: "upstream" (each backbone's published evaluation transform), "squash" or "pad" (see
    ``backbones.RESIZE_POLICIES``); part of the group's preprocessing, so another choice is another group.
    """
    if dtype not in ("float16", "float32"):
        raise MedtransferError(f"feature dtype must be float16 or float32, not {dtype!r}")
    if batch_size < 1 or chunk_rows < 1:
        raise MedtransferError("--batch-size and the chunk size must be positive")
    names = expand_backbones(backbones)
    kinds = parse_embeddings(embeddings)
    fmt = cache_store.store_format(store, fmt)
    manifest = load_manifest(manifest_path, label_column=label_column, min_classes=1)
    paths = manifest.table["image"].tolist()
    shas = fingerprints(paths)
    torch_device = resolve_device(device)
    autocast_dtype = resolve_precision(precision, torch_device)
    workers = default_workers() if num_workers is None else num_workers
    cache: PixelCache | None = None
    cache_path = None
    if pixel_cache:
        from medtransfer.backbones import get_spec

        cache_path = default_pixel_cache_path(store) if pixel_cache is True else Path(pixel_cache)
        size = pixel_size or max(
            (preprocessing or get_spec(n).preprocessing).input_size for n in names
        )
        cache, _ = fill_pixel_cache(cache_path, paths, shas, size, pixel_dtype, num_workers=workers,
                                    progress=progress)
    results = []
    for name in names:
        result = _extract_one(
            manifest, paths, shas, name, Path(store), fmt, weights, batch_size, torch_device, autocast_dtype,
            workers, dtype, chunk_rows, progress, kinds, cache, preprocessing, lenient=len(names) > 1, resize=resize,
        )
        results.append(result)
        if on_result is not None:
            on_result(result)
    return results


def _group_attrs(loaded, weights, preprocessing_dict) -> dict:
    return {
        "backbone": loaded.spec.name,
        "architecture": loaded.spec.architecture,
        "weights": weights,
        "weights_source": loaded.weights_source,
        "weights_fingerprint": loaded.weights_fingerprint,
        "preprocessing": preprocessing_dict,
        "embedding_kind": loaded.spec.embedding_kind,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "versions": _versions(),
    }


def _read_rows(array, rows: list[int]) -> np.ndarray:
    """Rows (ascending, unique) of a zarr array or h5py dataset."""
    if hasattr(array, "get_orthogonal_selection"):
        return np.asarray(array.get_orthogonal_selection((np.asarray(rows, dtype=np.int64),)))
    return np.asarray(array[rows])


def _extract_one(manifest: Manifest, paths, shas, name, store_path, fmt, weights, batch_size, device,
                 autocast_dtype, workers, dtype, chunk_rows, progress, kinds, cache, preprocessing_override,
                 lenient=False, resize="upstream"):
    loaded = load_backbone(name, weights)
    prep = (preprocessing_override or loaded.preprocessing).with_policy(resize)
    prep_dict = prep.as_dict()
    if cache is not None and not same_as_decoding(prep, cache):
        prep_dict["pixel_source"] = cache.source  # other inputs than decoding the files: another group
    key = cache_schema.group_key(name, weights, loaded.weights_fingerprint, prep_dict)
    try:
        embed = make_embedder(loaded.model, kinds, name)
    except MedtransferError:
        if not lenient:
            raise
        # several backbones: variants that do not apply to this one (tokens of a CNN) are skipped, with a note
        kinds = tuple(k for k in kinds if _applies(loaded.model, k, name))
        tqdm.write(f"{name}: embedding variants other than {', '.join(kinds) or 'the default'} do not apply; skipped")
        embed = make_embedder(loaded.model, kinds, name)
    dims = _output_dims(embed, prep, kinds, loaded.spec.embed_dim)
    start = time.perf_counter()
    with cache_store.writer_lock(store_path), cache_schema.open_store(store_path, "a", fmt) as store:
        _note_other_preprocessing(store, key, name, weights, loaded.weights_fingerprint, prep_dict)
        group = cache_schema.create_group(store, key, dims, _group_attrs(loaded, weights, prep_dict), dtype,
                                          chunk_rows)
        chunk_rows = group.attrs["chunk_rows"]
        arrays = cache_schema.feature_arrays(group)
        stored_ids = cache_store.strings(group["sample_id"][:])
        stored_shas = cache_store.strings(group["image_sha"][:])
        valid = cache_schema.valid_row_mask(group)
        n_old = len(stored_ids)
        latest: dict[str, int] = {str(i): row for row, i in enumerate(stored_ids)}
        by_sha: dict[str, int] = {}
        for row in np.flatnonzero(valid).tolist():
            by_sha.setdefault(str(stored_shas[row]), row)
        stored_paths = cache_store.strings(group["image_path"][:])
        _refuse_id_collisions(manifest, shas, paths, latest, valid, stored_shas, stored_paths, store_path)
        new, refresh = [], {}
        for i, sha, path in zip(manifest.ids, shas, paths, strict=True):
            row = latest.get(i)
            if row is None or (valid[row] and str(stored_shas[row]) != sha):
                new.append((i, sha, path))
            elif not valid[row]:  # left pending by an interrupted run: point it at the image as it is now
                refresh[row] = (sha, path)
        manifest_ids = set(manifest.ids)
        stale = [r for r in np.flatnonzero(~valid).tolist() if str(stored_ids[r]) not in manifest_ids]
        if stale:  # pending rows of another manifest: fingerprint their files again (they may have changed)
            with contextlib.suppress(MedtransferError):
                for r, sha in zip(stale, fingerprints([str(stored_paths[r]) for r in stale]), strict=True):
                    refresh[r] = (sha, str(stored_paths[r]))
        refresh = {r: v for r, v in refresh.items() if v[0] != str(stored_shas[r])}
        if refresh:
            refresh_rows = sorted(refresh)
            for offset, column in enumerate(("image_sha", "image_path")):
                array = group[column]
                for r in refresh_rows:
                    array[r] = refresh[r][offset]
            stored_shas = cache_store.strings(group["image_sha"][:])
        preserved: dict[int, dict[str, np.ndarray]] = {}
        if new and n_old % chunk_rows and valid[n_old - 1]:
            lo = (n_old // chunk_rows) * chunk_rows  # the partial last chunk is reopened: keep its rows
            old = {a: np.asarray(group[a][lo:n_old], dtype=np.float32) for a in arrays}
            preserved = {lo + k: {a: old[a][k] for a in arrays} for k in range(n_old - lo)}
        if new:
            cache_schema.append_rows(group, [x[0] for x in new], [x[1] for x in new], [x[2] for x in new])
        pending = cache_schema.pending_chunks(group)
        n = group["sample_id"].shape[0]
        rows = [r for c in pending for r in range(c * chunk_rows, min((c + 1) * chunk_rows, n))]
        all_shas = cache_store.strings(group["image_sha"][:]) if new else stored_shas
        ready: dict[int, dict[str, np.ndarray]] = {}
        copy_from: dict[int, int] = {}
        compute: list[int] = []
        for row in rows:
            if row in preserved:
                ready[row] = preserved[row]
            elif str(all_shas[row]) in by_sha:
                copy_from[row] = by_sha[str(all_shas[row])]
            else:
                compute.append(row)
        if copy_from:
            sources = sorted(set(copy_from.values()))
            position = {src: k for k, src in enumerate(sources)}
            copied = {a: np.asarray(_read_rows(group[a], sources), dtype=np.float32) for a in arrays}
            for row, src in copy_from.items():
                ready[row] = {a: copied[a][position[src]] for a in arrays}
        writer = _ChunkWriter(group, pending, chunk_rows, n, ready, arrays)
        writer.flush()
        if compute:
            all_paths = cache_store.strings(group["image_path"][:])
            dataset = _dataset(compute, all_paths, all_shas, prep, cache, workers, progress, batch_size)
            manifest_row = {sample_id: k for k, sample_id in enumerate(manifest.ids)}
            ids_now = cache_store.strings(group["sample_id"][:])

            def where(row: int) -> str:
                sample_id = str(ids_now[row])
                if sample_id in manifest_row:
                    return f"manifest {manifest.path.name}, row {manifest_row[sample_id] + 2}: "
                return f"store row {row} (id {sample_id!r}, from an earlier manifest): "

            _run_model(loaded, embed, dataset, compute, writer, batch_size, device, autocast_dtype, workers,
                       progress, store_path, prep, where)
        writer.flush()
        if writer.queue:
            raise MedtransferError(f"internal error: chunks {writer.queue[:3]} of {key} were left unwritten")
        cache_schema.mark_complete(group)
        embeddings_present = tuple(group.attrs.get("embeddings", ()))
    return ExtractResult(
        backbone=name, group_key=key, weights_source=loaded.weights_source, n_images=len(manifest),
        n_computed=len(compute), seconds=time.perf_counter() - start, n_copied=len(copy_from), store_format=fmt,
        embeddings=embeddings_present,
    )


def _note_other_preprocessing(store, key, name, weights, weights_fingerprint, prep_dict) -> None:
    """A store written before a backbone's preprocessing changed (or with another --resize) holds a group for
    the same weights under another key: say so. That group is left intact (never mixed with the new rows)."""
    if key in store.group_names():
        return
    for other in store.group_names():
        attrs = store[other].attrs
        if (attrs.get("backbone") != name or attrs.get("weights") != weights
                or attrs.get("weights_fingerprint") != weights_fingerprint):
            continue
        old = dict(attrs.get("preprocessing", {}))
        changed = sorted(k for k in set(old) | set(prep_dict) if old.get(k) != prep_dict.get(k))
        detail = ", ".join(f"{k}: {old.get(k)!r} -> {prep_dict.get(k)!r}" for k in changed)
        tqdm.write(
            f"{name}: store group {other} holds the same weights with other preprocessing ({detail}); it is left "
            f"intact and the new features go to {key}. probe needs one group per backbone: delete the old "
            "group or extract into a new store"
        )


def _applies(model, kind, name) -> bool:
    try:
        make_embedder(model, (kind,), name)
    except MedtransferError:
        return False
    return True


def _output_dims(embed, prep, kinds, embed_dim) -> dict[str, int]:
    if not kinds:
        return {"features": embed_dim}
    with torch.inference_mode():
        out = embed(torch.zeros(1, 3, prep.input_size, prep.input_size))
    return {k: int(v.shape[1]) for k, v in out.items()}


def _dataset(compute, all_paths, all_shas, prep, cache, workers, progress, batch_size):
    if cache is None:
        return ImageDataset([str(all_paths[r]) for r in compute], list(range(len(compute))), prep)
    missing = [r for r in compute if str(all_shas[r]) not in cache.index]
    if missing:  # rows left pending by an earlier run of another manifest: add their images to the cache
        cache, _ = fill_pixel_cache(cache.path, [str(all_paths[r]) for r in missing],
                                    [str(all_shas[r]) for r in missing], cache.size, cache.dtype,
                                    num_workers=workers, progress=progress)
    pixel_rows = cache.rows_for_shas([str(all_shas[r]) for r in compute]).tolist()
    if raw_ok(prep, cache.size):
        return PixelBatchDataset(cache.path, cache.size, cache.dtype, pixel_rows, batch_size)
    return PixelRowsDataset(cache.path, cache.size, cache.dtype, pixel_rows, cache.orig_shape, prep)


def same_as_decoding(prep: Preprocessing, cache: PixelCache) -> bool:
    """Inputs from the pixel cache equal those from the files up to 16-bit rounding (so the group is shared):
    cached at the input size, squashed, bilinear, uint16."""
    return (raw_ok(prep, cache.size) and cache.dtype == "uint16"
            and getattr(prep, "interpolation", "bilinear") == "bilinear")


def raw_ok(prep: Preprocessing, cached_size: int) -> bool:
    """Pixel-cache rows need no per-image work for this preprocessing: scale + normalize batched on the device."""
    return (prep.resize == "squash" and cached_size == prep.input_size
            and getattr(prep, "channels", "rgb") == "rgb")


class _ChunkWriter:
    """Collects finished rows; writes each pending chunk (in order) as soon as all its rows are there."""

    def __init__(self, group, pending, chunk_rows, n, ready, arrays):
        self.group, self.queue, self.chunk_rows, self.n = group, list(pending), chunk_rows, n
        self.ready, self.arrays = ready, arrays

    def add(self, row: int, values: dict[str, np.ndarray]) -> None:
        self.ready[row] = values

    def flush(self) -> None:
        while self.queue:
            chunk = self.queue[0]
            lo, hi = chunk * self.chunk_rows, min((chunk + 1) * self.chunk_rows, self.n)
            if any(r not in self.ready for r in range(lo, hi)):
                return
            data = {a: np.stack([self.ready[r][a] for r in range(lo, hi)]) for a in self.arrays}
            cache_schema.write_chunk(self.group, chunk, data)
            for r in range(lo, hi):
                del self.ready[r]
            self.queue.pop(0)


def _run_model(loaded, embed, dataset, compute, writer, batch_size, device, autocast_dtype, workers, progress,
               store_path, prep, where) -> None:
    model = loaded.model.to(device)
    channels_last = device.type == "cuda"
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    raw = isinstance(dataset, PixelBatchDataset)
    loader = DataLoader(dataset, batch_size=None if raw else batch_size, num_workers=workers,
                        pin_memory=device.type == "cuda", prefetch_factor=4 if workers else None)
    mean, std = prep.mean, prep.std
    autocast = (
        torch.autocast(device.type, dtype=autocast_dtype) if autocast_dtype is not None else contextlib.nullcontext()
    )
    bar = tqdm(total=len(compute), desc=f"extract {loaded.spec.name}", unit="img", disable=not progress)
    start = time.perf_counter()
    with torch.inference_mode(), autocast, bar:
        for items, images, errors in loader:
            for item, error in zip(items.tolist(), errors, strict=True):
                if error:
                    raise MedtransferError(f"{where(compute[item])}{error}; the store {store_path} is left valid: "
                                           "fix or remove the image and run again")
            images = images.to(device, non_blocking=True)
            if raw:
                images = normalize_raw(images, dataset.dtype, mean, std)
            if channels_last:
                images = images.contiguous(memory_format=torch.channels_last)
            out = {a: v.float().cpu().numpy() for a, v in embed(images).items()}
            for k, item in enumerate(items.tolist()):
                writer.add(compute[item], {a: out[a][k] for a in writer.arrays})
            writer.flush()
            bar.update(len(items))
            bar.set_postfix_str(f"{bar.n / max(time.perf_counter() - start, 1e-9):.1f} img/s")


def _versions() -> dict[str, str]:
    versions = {}
    for package in ("medtransfer", "torch", "torchvision", "timm", "transformers", "open_clip_torch", "zarr", "h5py"):
        with contextlib.suppress(metadata.PackageNotFoundError):
            versions[package] = metadata.version(package)
    return versions


def _refuse_id_collisions(manifest, shas, paths, latest, valid, stored_shas, stored_paths, store_path) -> None:
    """An id whose stored row came from another file with other content is another study's sample: appending
    would make the newest row win for both studies, silently giving the first one wrong features."""
    clashes = [
        (sample_id, str(stored_paths[row]))
        for sample_id, sha, path in zip(manifest.ids, shas, paths, strict=True)
        if (row := latest.get(sample_id)) is not None and valid[row]
        and str(stored_shas[row]) != sha and str(stored_paths[row]) != str(path)
    ]
    if clashes:
        sample_id, other = clashes[0]
        raise MedtransferError(
            f"{len(clashes)} id(s) of manifest {manifest.path.name} are already in store {store_path} for other "
            f"images (e.g. id {sample_id!r} came from {other}): ids must be unique across the studies sharing a "
            "store; give the manifest an `id` column that tells the studies apart, or use another --store"
        )
