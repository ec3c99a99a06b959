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
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from medtransfer import cache_rows, cache_schema, cache_store
from medtransfer.backbones import get_spec, load_backbone
from medtransfer.backbones.registry import RESIZE_POLICIES, SEED_BACKBONES, LoadedBackbone, Preprocessing
from medtransfer.data.fingerprint import fingerprints
from medtransfer.data.manifest import Manifest, load_manifest
from medtransfer.device import resolve_device, resolve_precision
from medtransfer.errors import MedtransferError
from medtransfer.extract.dataset import ImageDataset
from medtransfer.extract.embed import make_embedder, parse_embeddings
from medtransfer.extract.pixels import (
    PixelBatchDataset,
    PixelCache,
    PixelRowsDataset,
    default_pixel_cache_path,
    fill_pixel_cache,
    normalize_raw,
)
from medtransfer.extract.reuse import IDENTITY_ATTR, recorded_identity, weights_identity


@dataclass(frozen=True, kw_only=True)
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
    model_built: bool = True  # False: the store already held everything, found without building the backbone

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


@dataclass(frozen=True, kw_only=True)
class ExtractOptions:
    """How to extract: what every backbone of one call shares. Pass one to ``extract_features`` /
    ``extract_many``, or keyword overrides (``extract_features(m, "resnet18", s, weights="random")``)."""

    weights: str = "default"  # "default" (published), "random", or a local checkpoint path
    label_column: str = "label"
    batch_size: int = 32  # images per forward pass
    device: str = "auto"  # auto, cpu, cuda, cuda:N
    precision: str = "auto"  # autocast: auto (bf16 on GPU, fp32 on CPU), fp32, bf16, fp16
    num_workers: int | None = None  # DataLoader decode workers; None picks by core count
    embeddings: tuple[str, ...] = ()  # extra kinds stored beside the default (vocabulary.EMBEDDING_KINDS)
    dtype: str = "float16"  # of the stored features
    chunk_rows: int = cache_schema.DEFAULT_CHUNK_ROWS  # rows per chunk: the unit of storage
    commit_rows: int = 64  # new rows are committed at least this often ...
    commit_seconds: float = 30.0  # ... and at least this often: what a kill can lose
    repair: bool = False  # first mark unreadable or non-finite done chunks of the group as not done
    fmt: str | None = None  # zarr, hdf5, or None/auto (by the store's suffix)
    pixel_cache: str | Path | bool | None = None  # a Zarr path, True for <store>.pixels.zarr, None: decode files
    pixel_size: int | None = None  # cached size; None: the largest input size of the backbones
    pixel_dtype: str = "uint16"
    preprocessing: Preprocessing | None = None  # override every backbone's preprocessing (tests, small inputs)
    # "upstream" (each backbone's published evaluation transform), "squash" or "pad" (backbones.RESIZE_POLICIES);
    # part of the group's preprocessing attrs, so another choice is another group, never an overwrite
    resize: str = "upstream"
    frames: str = "refuse"  # multi-frame policy: refuse, first, middle, all (``medtransfer.data.frames``)
    force_dicom: bool = False  # read DICOM files without the 128-byte preamble / file meta (pydicom force=True)
    progress: bool = True

    def checked(self) -> ExtractOptions:
        if self.dtype not in ("float16", "float32"):
            raise MedtransferError(f"feature dtype must be float16 or float32, not {self.dtype!r}")
        if self.batch_size < 1 or self.chunk_rows < 1 or self.commit_rows < 1 or self.commit_seconds <= 0:
            raise MedtransferError("--batch-size, the chunk size and the commit interval must be positive")
        if self.resize not in RESIZE_POLICIES:
            raise MedtransferError(f"unknown --resize {self.resize!r}; use {', '.join(RESIZE_POLICIES)}")
        return replace(self, embeddings=parse_embeddings(self.embeddings))


@dataclass(frozen=True, kw_only=True)
class _Job:
    """One call's resolved inputs, shared by every backbone it runs."""

    manifest: Manifest
    images: cache_rows.Images
    store: Path
    fmt: str
    options: ExtractOptions
    device: torch.device
    autocast_dtype: torch.dtype | None
    workers: int
    cache: PixelCache | None
    lenient: bool  # several backbones: embedding variants that do not apply to one are skipped


@dataclass(frozen=True, kw_only=True)
class _Backbone:
    """A loaded backbone ready to embed: its model, embedder, preprocessing and the group it fills."""

    loaded: LoadedBackbone
    embed: Callable[[torch.Tensor], dict[str, torch.Tensor]]
    preprocessing: Preprocessing
    key: str
    dims: dict[str, int]
    attrs: dict


def extract_features(manifest_path: str | Path, backbone: str, store: str | Path,
                     options: ExtractOptions | None = None, **overrides: Any) -> ExtractResult:
    """Embed every image of the manifest with ``backbone``; returns what was computed and how fast."""
    return extract_many(manifest_path, [backbone], store, options, **overrides)[0]


def extract_many(manifest_path: str | Path, backbones: list[str] | tuple[str, ...] | str, store: str | Path,
                 options: ExtractOptions | None = None, *,
                 on_result: Callable[[ExtractResult], None] | None = None, **overrides: Any) -> list[ExtractResult]:
    """Several backbones, one manifest: fingerprints (and the pixel cache) computed once, then each backbone.

    ``options`` (default ``ExtractOptions()``) with ``overrides`` (its field names) replacing fields;
    ``on_result`` is called after each backbone (the CLI prints it).
    """
    options = replace(options or ExtractOptions(), **overrides).checked()
    names = expand_backbones(backbones)
    fmt = cache_store.store_format(store, options.fmt)
    cache_schema.check_store_path(store, fmt)  # a folder that is not a store: refused before any lock or work
    manifest = load_manifest(manifest_path, label_column=options.label_column, min_classes=1,
                             frames=options.frames)
    paths = manifest.table["image"].tolist()
    images = cache_rows.Images(keys=list(manifest.ids), shas=fingerprints(paths), paths=paths)
    torch_device = resolve_device(options.device)
    workers = default_workers() if options.num_workers is None else options.num_workers
    job = _Job(manifest=manifest, images=images, store=Path(store), fmt=fmt, options=options, device=torch_device,
               autocast_dtype=resolve_precision(options.precision, torch_device), workers=workers,
               cache=_fill_pixel_cache(options, names, store, paths, workers), lenient=len(names) > 1)
    results = []
    for name in names:
        results.append(_extract_one(job, name))
        if on_result is not None:
            on_result(results[-1])
    return results


def _fill_pixel_cache(options: ExtractOptions, names: list[str], store: str | Path, paths: list[str],
                      workers: int) -> PixelCache | None:
    if not options.pixel_cache:
        return None
    path = default_pixel_cache_path(store) if options.pixel_cache is True else Path(options.pixel_cache)
    size = options.pixel_size or max((options.preprocessing or get_spec(n).preprocessing).input_size for n in names)
    cache, _ = fill_pixel_cache(path, paths, size=size, dtype=options.pixel_dtype, num_workers=workers,
                                progress=options.progress, force_dicom=options.force_dicom)
    return cache


def _group_attrs(loaded, weights, preprocessing_dict) -> dict:
    return {
        "backbone": loaded.spec.name,
        "architecture": loaded.spec.architecture,
        "weights": weights,
        "weights_source": loaded.weights_source,
        "weights_fingerprint": loaded.weights_fingerprint,
        IDENTITY_ATTR: weights_identity(loaded.spec, weights),
        "preprocessing": preprocessing_dict,
        "embedding_kind": loaded.spec.embedding_kind,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "versions": _versions(),
    }


def _preprocessing(job: _Job, spec) -> tuple[Preprocessing, dict]:
    """The backbone's declared preprocessing under ``--resize``, and the dict its group records (with the pixel
    cache's source when its inputs differ from decoding the files: another group). Needs no model."""
    prep = (job.options.preprocessing or spec.preprocessing).with_policy(job.options.resize)
    prep_dict = prep.as_dict()
    if job.cache is not None and not same_as_decoding(prep, job.cache):
        prep_dict["pixel_source"] = job.cache.source
    return prep, prep_dict


def _load(job: _Job, name: str) -> _Backbone:
    """Load the backbone, pick its embedder (variants that do not apply skipped when several backbones run)
    and name its group: weights + preprocessing (+ the pixel cache when its inputs differ from decoding)."""
    loaded = load_backbone(name, job.options.weights)
    prep, prep_dict = _preprocessing(job, loaded.spec)
    kinds = job.options.embeddings
    try:
        embed = make_embedder(loaded.model, kinds, name)
    except MedtransferError:
        if not job.lenient:
            raise
        kinds = tuple(k for k in kinds if _applies(loaded.model, k, name))
        tqdm.write(f"{name}: embedding variants other than {', '.join(kinds) or 'the default'} do not apply; skipped")
        embed = make_embedder(loaded.model, kinds, name)
    return _Backbone(
        loaded=loaded, embed=embed, preprocessing=prep,
        key=cache_schema.group_key(name, job.options.weights, loaded.weights_fingerprint, prep_dict),
        dims=_output_dims(embed, prep, kinds, loaded.spec.embed_dim),
        attrs=_group_attrs(loaded, job.options.weights, prep_dict),
    )


def _extract_one(job: _Job, name: str) -> ExtractResult:
    """Plan the group's rows from its index and the manifest, apply the plan, then compute what is left; a
    group that already holds everything is found without building the backbone (``extract.reuse``)."""
    start = time.perf_counter()
    reused = _reuse_without_building(job, name, start)
    if reused is not None:
        return reused
    backbone = _load(job, name)
    start = time.perf_counter()
    with cache_store.writer_lock(job.store), cache_schema.open_store(job.store, "a", job.fmt) as store:
        _note_other_preprocessing(store, backbone, name, job.options.weights)
        group = cache_schema.create_group(store, backbone.key, backbone.dims, backbone.attrs, job.options.dtype,
                                          job.options.chunk_rows)
        identity = backbone.attrs[IDENTITY_ATTR]
        if group.attrs.get(IDENTITY_ATTR) != identity:  # a group from before the identity (or a copied file)
            group.update_attrs({IDENTITY_ATTR: identity})
        cache_schema.check_chunks(group, repair=job.options.repair)  # damaged chunks first: repair reads them
        with cache_rows.storage_errors(job.store):
            cache_schema.repair_group(group)
        plan = _plan(group, job)
        filler = cache_rows.ChunkFiller(plan, cache_schema.apply_plan(group, plan),
                                        lambda chunk, data: cache_schema.write_chunk(group, chunk, data, plan=plan),
                                        commit_rows=job.options.commit_rows,
                                        commit_seconds=job.options.commit_seconds)
        filler.flush()
        if plan.compute:
            _run_model(job, backbone, _dataset(job, plan, backbone.preprocessing), rows=plan.compute,
                       filler=filler, where=_locator(job.manifest, group, plan))
        filler.finish(backbone.key)
        cache_schema.mark_complete(group)
        embeddings_present = tuple(group.attrs.get("embeddings", ()))
    return ExtractResult(
        backbone=name, group_key=backbone.key, weights_source=backbone.loaded.weights_source,
        n_images=len(job.manifest), n_computed=len(plan.compute), seconds=time.perf_counter() - start,
        n_copied=len(plan.copy), store_format=job.fmt, embeddings=embeddings_present,
    )


def _reuse_without_building(job: _Job, name: str, start: float) -> ExtractResult | None:
    """The result of a run that has nothing to do, found from the registry's declared preprocessing and the
    weights' cheap identity (``extract.reuse``) with no model built; None when the backbone must be built (no
    such group, a row to add or copy, a variant missing, ``--repair``)."""
    spec = get_spec(name)
    identity = weights_identity(spec, job.options.weights)
    if identity is None or job.options.repair or not job.store.exists():
        return None
    _, prep_dict = _preprocessing(job, spec)
    kinds = job.options.embeddings
    if job.lenient:  # several backbones: variants the backbone does not declare are skipped, as _load skips them
        kinds = tuple(k for k in kinds if k in spec.feature_variants)
    with cache_store.writer_lock(job.store), cache_schema.open_store(job.store, "a", job.fmt) as store:
        matches = [key for key in store.group_names() if _same_group(store[key].attrs, spec, job, identity, prep_dict)]
        if len(matches) != 1:
            return None
        group = store[matches[0]]
        cache_schema.require_consistent(group)  # arrays altered outside medtransfer: refused, not reused
        if not all(f"features_{kind}" in group for kind in kinds) or not group.attrs.get("complete", False):
            return None
        cache_schema.check_chunks(group, repair=False)  # every done chunk read back, as the build path does
        with cache_rows.storage_errors(job.store):
            cache_schema.repair_group(group)
        plan = _plan(group, job)
        if plan.compute or plan.copy or plan.append or plan.pending or not cache_schema.mark_complete(group):
            return None
        if IDENTITY_ATTR not in group.attrs:  # a group written before the identity: record it for next time
            group.update_attrs({IDENTITY_ATTR: identity})
        attrs = group.attrs
        return ExtractResult(
            backbone=name, group_key=matches[0], weights_source=attrs.get("weights_source", ""),
            n_images=len(job.manifest), n_computed=0, seconds=time.perf_counter() - start, store_format=job.fmt,
            embeddings=tuple(attrs.get("embeddings", ())), model_built=False,
        )


def _same_group(attrs: dict, spec, job: _Job, identity: str, prep_dict: dict) -> bool:
    """A group of this backbone, weights and preprocessing whose weights have this identity."""
    return (attrs.get("backbone") == spec.name and attrs.get("weights") == job.options.weights
            and attrs.get("dtype") == job.options.dtype and attrs.get("dim") == spec.embed_dim
            and dict(attrs.get("preprocessing", {})) == _json_like(prep_dict)
            and recorded_identity(attrs, spec) == identity)


def _json_like(value):
    """A dict as a store's attributes give it back (tuples as lists)."""
    if isinstance(value, dict):
        return {k: _json_like(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_like(v) for v in value]
    return value


def _note_other_preprocessing(store, backbone: _Backbone, name: str, weights: str) -> None:
    """A store written before a backbone's preprocessing changed (or with another --resize) holds a group for
    the same weights under another key: say which preprocessing fields differ. That group is left intact
    (never mixed with the new rows)."""
    if backbone.key in store.group_names():
        return
    new = backbone.attrs["preprocessing"]
    for other in store.group_names():
        attrs = store[other].attrs
        if (attrs.get("backbone") != name or attrs.get("weights") != weights
                or attrs.get("weights_fingerprint") != backbone.loaded.weights_fingerprint):
            continue
        old = dict(attrs.get("preprocessing", {}))
        changed = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
        detail = ", ".join(f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in changed)
        tqdm.write(
            f"{name}: store group {other} holds the same weights with other preprocessing ({detail}); it is left "
            f"intact and the new features go to {backbone.key}. probe needs one group per backbone: delete the "
            "old group or extract into a new store"
        )


def _plan(group, job: _Job) -> cache_rows.RowPlan:
    """The rows plan for this group and manifest; pending rows of another manifest have their files hashed
    again first (they may have changed), and ids held for other images are refused."""
    index = cache_schema.row_index(group)
    stale = cache_rows.stale_rows(index, job.images.keys)
    rehashed: dict[int, str] = {}
    if stale:
        with contextlib.suppress(MedtransferError):
            rehashed = dict(zip(stale, fingerprints([str(index.paths[r]) for r in stale]), strict=True))
    plan = cache_rows.plan_rows(index, job.images, rehashed=rehashed)
    if plan.clashes:
        sample_id, other = plan.clashes[0]
        raise MedtransferError(
            f"{len(plan.clashes)} id(s) of manifest {job.manifest.path.name} are already in store {job.store} for "
            f"other images (e.g. id {sample_id!r} came from {other}): ids must be unique across the studies "
            "sharing a store; give the manifest an `id` column that tells the studies apart, or use another --store"
        )
    return plan


def _locator(manifest: Manifest, group, plan: cache_rows.RowPlan) -> Callable[[int], str]:
    """Store row -> where a person finds its image: the manifest row, or the store row of an earlier manifest."""
    manifest_row = {sample_id: k for k, sample_id in enumerate(manifest.ids)}
    ids_now = [*cache_store.strings(group["sample_id"][:]).tolist(), *(key for key, _, _ in plan.append)]

    def where(row: int) -> str:
        sample_id = str(ids_now[row])
        if sample_id in manifest_row:
            return f"manifest {manifest.path.name}, row {manifest_row[sample_id] + 2}: "
        return f"store row {row} (id {sample_id!r}, from an earlier manifest): "

    return where


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


def _dataset(job: _Job, plan: cache_rows.RowPlan, prep: Preprocessing):
    """The inputs of the plan's rows to compute (new rows are not in the group yet: their files come from the plan)."""
    rows = plan.compute
    all_paths = plan.files
    if job.cache is None:
        return ImageDataset([str(all_paths[r]) for r in rows], list(range(len(rows))), prep,
                            force_dicom=job.options.force_dicom)
    all_shas = plan.shas
    cache = job.cache
    missing = [r for r in rows if str(all_shas[r]) not in cache.index]
    if missing:  # rows left pending by an earlier run of another manifest: add their images to the cache
        cache, _ = fill_pixel_cache(cache.path, [str(all_paths[r]) for r in missing], size=cache.size,
                                    dtype=cache.dtype, num_workers=job.workers, progress=job.options.progress,
                                    force_dicom=job.options.force_dicom)
    pixel_rows = cache.rows_for_shas([str(all_shas[r]) for r in rows]).tolist()
    if raw_ok(prep, cache.size):
        return PixelBatchDataset(cache.path, cache.size, cache.dtype, pixel_rows, job.options.batch_size)
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


def _run_model(job: _Job, backbone: _Backbone, dataset, *, rows: list[int], filler: cache_rows.ChunkFiller,
               where: Callable[[int], str]) -> None:
    """Embed ``dataset`` (the images of store ``rows``, in order) and hand each row to the filler."""
    device = job.device
    model = backbone.loaded.model.to(device)
    channels_last = device.type == "cuda"
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    raw = isinstance(dataset, PixelBatchDataset)
    loader = DataLoader(dataset, batch_size=None if raw else job.options.batch_size, num_workers=job.workers,
                        pin_memory=device.type == "cuda", prefetch_factor=4 if job.workers else None)
    mean, std = backbone.preprocessing.mean, backbone.preprocessing.std
    autocast = (
        torch.autocast(device.type, dtype=job.autocast_dtype) if job.autocast_dtype is not None
        else contextlib.nullcontext()
    )
    bar = tqdm(total=len(rows), desc=f"extract {backbone.loaded.spec.name}", unit="img",
               disable=not job.options.progress)
    start = time.perf_counter()
    with torch.inference_mode(), autocast, bar:
        for items, images, errors in loader:
            for item, error in zip(items.tolist(), errors, strict=True):
                if error:
                    raise MedtransferError(f"{where(rows[item])}{error}; the store {job.store} is left valid: "
                                           "fix or remove the image and run again")
            images = images.to(device, non_blocking=True)
            if raw:
                images = normalize_raw(images, dataset.dtype, mean, std)
            if channels_last:
                images = images.contiguous(memory_format=torch.channels_last)
            out = {a: v.float().cpu().numpy() for a, v in backbone.embed(images).items()}
            for k, item in enumerate(items.tolist()):
                filler.add(rows[item], {a: v[k] for a, v in out.items()})
            filler.flush()
            bar.update(len(items))
            bar.set_postfix_str(f"{bar.n / max(time.perf_counter() - start, 1e-9):.1f} img/s")


def _versions() -> dict[str, str]:
    versions = {}
    for package in ("medtransfer", "torch", "torchvision", "timm", "transformers", "open_clip_torch", "zarr", "h5py"):
        with contextlib.suppress(metadata.PackageNotFoundError):
            versions[package] = metadata.version(package)
    return versions
