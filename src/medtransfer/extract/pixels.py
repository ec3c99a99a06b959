"""The pixel cache: every image decoded and resized once, kept as a chunked uint8/uint16 Zarr array.

Later backbones (and ``adapt`` epochs) read these arrays instead of decoding PNG/JPEG/TIFF/DICOM again.
Layout (schema ``medtransfer.pixels/1``), readable with plain ``zarr``::

    pixels.zarr/                     attrs: schema
      s224-uint16/                   one group per (size, dtype); attrs: size, dtype, chunk_rows, n
        pixels     uint16 [N, 3, S, S]   the image squashed to S x S (grayscale replicated to 3 planes,
                                         which Zstd compresses away), scaled from [0, 1] to the dtype's range
        orig_shape int32  [N, 2]         the decoded image's H, W (aspect-aware preprocessing restores it)
        image_sha  str    [N]            content fingerprint of the source file: the row's key
        image_path str    [N]            the file it was decoded from
        chunk_done bool   [ceil(N / chunk_rows)]  written after each chunk's pixels (as in the feature store)

Usage (adapt)::

    cache = open_pixel_cache("features.pixels.zarr", 224)
    batch = cache.load_paths(image_paths)      # uint16 [n, 3, 224, 224]; or cache.load_shas(shas)
    floats = cache.to_float(batch)             # float32 in [0, 1]
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import zarr
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from medtransfer import cache_rows, cache_store
from medtransfer.data.fingerprint import fingerprints
from medtransfer.data.images import load_image
from medtransfer.errors import MedtransferError
from medtransfer.extract.preprocess import resize_square

PIXEL_SCHEMA = "medtransfer.pixels/1"
PIXEL_DTYPES = {"uint8": 255, "uint16": 65535}


def pixel_group_key(size: int, dtype: str) -> str:
    return f"s{size}-{dtype}"


def default_pixel_cache_path(store: str | Path) -> Path:
    store = Path(store)
    return store.with_name(store.name.removesuffix(store.suffix) + ".pixels.zarr")


def _open_root(path: Path, mode: str) -> zarr.Group:
    if mode == "r" and not path.exists():
        raise MedtransferError(f"pixel cache not found: {path}; fill it with `medtransfer extract --pixel-cache`")
    try:
        root = zarr.open_group(str(path), mode=mode)
    except Exception as exc:  # zarr raises several types for a folder that is not a store
        raise MedtransferError(f"{path} is not a readable pixel cache: {exc}") from exc
    schema = root.attrs.get("schema")
    if schema is None and mode != "r" and not list(root.group_keys()):
        root.attrs["schema"] = PIXEL_SCHEMA
    elif schema != PIXEL_SCHEMA:
        raise MedtransferError(f"{path} has pixel-cache schema {schema!r}; this medtransfer reads {PIXEL_SCHEMA!r}")
    return root


@dataclass
class PixelCache:
    """One (size, dtype) group of a pixel cache, read-only."""

    path: Path
    size: int
    dtype: str
    group: zarr.Group
    index: dict[str, int]  # image_sha -> row (valid rows only)
    orig_shape: np.ndarray

    @property
    def max_value(self) -> int:
        return PIXEL_DTYPES[self.dtype]

    @property
    def source(self) -> str:
        """What the feature store records as the inputs' origin (part of the feature group key)."""
        return f"pixel-cache s{self.size} {self.dtype}"

    def rows_for_shas(self, shas: list[str]) -> np.ndarray:
        missing = [sha for sha in shas if sha not in self.index]
        if missing:
            raise MedtransferError(
                f"{len(missing)} image(s) are not in pixel cache {self.path} (size {self.size}); "
                "run `medtransfer extract ... --pixel-cache` on their manifest first"
            )
        return np.asarray([self.index[sha] for sha in shas], dtype=np.int64)

    def load_rows(self, rows: np.ndarray | list[int]) -> np.ndarray:
        """uint8/uint16 [n, 3, S, S] in the order of ``rows``."""
        rows = np.asarray(rows, dtype=np.int64)
        if not len(rows):
            return np.zeros((0, 3, self.size, self.size), dtype=self.dtype)
        order = np.argsort(rows)
        out = np.empty((len(rows), 3, self.size, self.size), dtype=self.dtype)
        out[order] = self.group["pixels"].get_orthogonal_selection((rows[order],))
        return out

    def load_shas(self, shas: list[str]) -> np.ndarray:
        return self.load_rows(self.rows_for_shas(shas))

    def load_paths(self, paths: list[str | Path]) -> np.ndarray:
        """Pixels of these image files (matched by content fingerprint), uint8/uint16 [n, 3, S, S]."""
        return self.load_shas(fingerprints([str(p) for p in paths]))

    def to_float(self, pixels: np.ndarray) -> np.ndarray:
        return pixels.astype(np.float32) / self.max_value


@dataclass(frozen=True)
class PixelCacheFolder:
    """A pixel-cache folder as a whole: which (size, dtype) groups it holds, and opening one of them."""

    path: Path

    def group_keys(self) -> list[str]:
        return sorted(_open_root(Path(self.path), "r").group_keys())

    def sizes(self) -> list[int]:
        """The image sizes held (any dtype), ascending: what a reader picks its group from."""
        return sorted({int(m.group(1)) for key in self.group_keys() if (m := _GROUP_KEY.fullmatch(key))})

    def open(self, size: int, dtype: str | None = None) -> PixelCache:
        return open_pixel_cache(self.path, size, dtype)


_GROUP_KEY = re.compile(r"s(\d+)-(?:" + "|".join(PIXEL_DTYPES) + ")")


def open_pixel_cache(path: str | Path, size: int, dtype: str | None = None) -> PixelCache:
    """Open the (size, dtype) group of a pixel cache; ``dtype`` None picks the one present (uint16 first)."""
    path = Path(path)
    root = _open_root(path, "r")
    for candidate in [dtype] if dtype else ["uint16", "uint8"]:
        key = pixel_group_key(size, candidate)
        if key in root:
            index = cache_rows.read_index(cache_store.Group(root[key], "zarr", key, path), "image_sha")
            valid = {str(index.shas[row]): row for row in np.flatnonzero(index.valid).tolist()}
            return PixelCache(path, size, candidate, root[key], valid, np.asarray(root[key]["orig_shape"][:]))
    present = sorted(root.group_keys())
    raise MedtransferError(
        f"pixel cache {path} has no {size}-px group (it has: {', '.join(present) or 'none'}); "
        f"run `medtransfer extract ... --pixel-cache {path} --pixel-size {size}`"
    )


class _DecodeDataset(Dataset):
    def __init__(self, paths: list[str], size: int, max_value: int, dtype: str, force_dicom: bool = False):
        self.paths, self.size, self.max_value, self.dtype = paths, size, max_value, dtype
        self.force_dicom = force_dicom

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, item: int):
        try:
            image = load_image(self.paths[item], force_dicom=self.force_dicom)
            square = resize_square(image, self.size)
            pixels = torch.from_numpy(
                np.rint(square.numpy() * self.max_value).astype(np.int32)
            )
            return item, pixels, torch.tensor(image.shape[:2], dtype=torch.int32), ""
        except MedtransferError as exc:
            return item, torch.zeros(3, self.size, self.size, dtype=torch.int32), torch.zeros(2, dtype=torch.int32), \
                str(exc)


def fill_pixel_cache(
    path: str | Path,
    image_paths: list[str],
    *,
    size: int,
    dtype: str = "uint16",
    chunk_rows: int = 16,
    num_workers: int = 0,
    progress: bool = True,
    after_chunk: Callable[[int], None] | None = None,
    force_dicom: bool = False,
) -> tuple[PixelCache, int]:
    """Decode and resize the images not yet cached (by content); returns the cache and how many were decoded.

    Resumable like the feature store (the same ``cache_rows`` plan and writer): rows are appended with their
    pixels, each chunk's flag is written after them. ``after_chunk(chunk)`` runs after each commit (tests, progress).
    """
    if dtype not in PIXEL_DTYPES:
        raise MedtransferError(f"pixel cache dtype must be uint8 or uint16, not {dtype!r}")
    if size < 8:
        raise MedtransferError(f"pixel size {size} is too small; use the backbones' input size (e.g. 224)")
    path = Path(path)
    shas = fingerprints([str(p) for p in image_paths])  # memoized: free when the caller has just hashed them
    with cache_store.writer_lock(path):
        group = _pixel_group(_open_root(path, "a"), path, size=size, dtype=dtype, chunk_rows=chunk_rows)
        cache_rows.repair(group, key_array="image_sha", data_arrays=list(PIXEL_ARRAYS))
        plan = cache_rows.plan_rows(cache_rows.read_index(group, "image_sha"),
                                    cache_rows.Images(keys=shas, shas=shas, paths=[str(p) for p in image_paths]))
        ready = cache_rows.apply_plan(group, plan, key_array="image_sha", data_arrays=list(PIXEL_ARRAYS))

        def commit(chunk: int, arrays: dict[str, np.ndarray]) -> None:
            cache_rows.commit_chunk(group, chunk, arrays, plan=plan, key_array="image_sha")
            if after_chunk is not None:
                after_chunk(chunk)

        filler = cache_rows.ChunkFiller(plan, ready, commit)
        filler.flush()
        if plan.compute:
            _decode_rows([plan.files[r] for r in plan.compute], plan.compute, filler, size=size, dtype=dtype,
                         num_workers=num_workers, progress=progress, force_dicom=force_dicom)
        filler.finish(f"pixel cache {path}")
    return open_pixel_cache(path, size, dtype), len(plan.compute)


PIXEL_ARRAYS = ("pixels", "orig_shape")


def _pixel_group(root: zarr.Group, path: Path, *, size: int, dtype: str, chunk_rows: int) -> cache_store.Group:
    """The (size, dtype) group, created empty when absent (then ``chunk_rows`` applies)."""
    key = pixel_group_key(size, dtype)
    if key not in root:
        group = root.create_group(key)
        group.create_array("pixels", shape=(0, 3, size, size), chunks=(chunk_rows, 3, size, size), dtype=dtype,
                           fill_value=0)
        group.create_array("orig_shape", shape=(0, 2), chunks=(4096, 2), dtype="int32", fill_value=0)
        for name in ("image_sha", "image_path"):
            group.create_array(name, shape=(0,), chunks=(4096,), dtype=str, fill_value="")
        group.create_array("chunk_done", shape=(0,), chunks=(1024,), dtype=bool, fill_value=False)
        group.attrs.update({"schema": PIXEL_SCHEMA, "size": size, "dtype": dtype, "chunk_rows": chunk_rows,
                            "n": 0})
    return cache_store.Group(root[key], "zarr", key, path)


def _decode_rows(paths: list[str], rows: list[int], filler: cache_rows.ChunkFiller, *, size: int, dtype: str,
                 num_workers: int, progress: bool, force_dicom: bool = False) -> None:
    """Decode ``paths`` (the files of ``rows``) into the filler, which commits each chunk once complete."""
    loader = DataLoader(_DecodeDataset(paths, size, PIXEL_DTYPES[dtype], dtype, force_dicom),
                        batch_size=filler.plan.chunk_rows,
                        num_workers=num_workers)
    start = time.perf_counter()
    with tqdm(total=len(rows), desc=f"decode -> pixel cache {size}px", unit="img", disable=not progress) as bar:
        for items, pixels, shapes, errors in loader:
            for error in errors:
                if error:
                    raise MedtransferError(f"{error} (the pixel cache stays valid; fix or drop it and rerun)")
            pixels_np, shapes_np = pixels.numpy().astype(dtype), shapes.numpy()
            for i, item in enumerate(items.tolist()):
                filler.add(rows[item], {"pixels": pixels_np[i], "orig_shape": shapes_np[i]})
            bar.update(len(items))
            bar.set_postfix_str(f"{bar.n / max(time.perf_counter() - start, 1e-9):.1f} img/s")
            filler.flush()


class PixelRowsDataset(Dataset):
    """Rows of a pixel cache as backbone inputs; keeps the last chunk read, so sequential reads decode once."""

    def __init__(self, path: Path, size: int, dtype: str, pixel_rows: list[int], orig_shapes: np.ndarray,
                 preprocessing):
        self.path, self.size, self.dtype = path, size, dtype
        self.pixel_rows = pixel_rows
        self.orig_shapes = orig_shapes
        self.preprocessing = preprocessing
        self._array = None
        self._chunk_rows = 0
        self._cached: tuple[int, np.ndarray] | None = None

    def __len__(self) -> int:
        return len(self.pixel_rows)

    def _block(self, row: int) -> np.ndarray:
        if self._array is None:
            group = zarr.open_group(str(self.path), mode="r")[pixel_group_key(self.size, self.dtype)]
            self._array = group["pixels"]
            self._chunk_rows = group.attrs["chunk_rows"]
        chunk = row // self._chunk_rows
        if self._cached is None or self._cached[0] != chunk:
            start = chunk * self._chunk_rows
            self._cached = (chunk, np.asarray(self._array[start : start + self._chunk_rows]))
        return self._cached[1][row - chunk * self._chunk_rows]

    def __getitem__(self, item: int):
        from medtransfer.extract.preprocess import chw_to_input

        row = self.pixel_rows[item]
        block = self._block(row)
        if np.array_equal(block[0], block[1]) and np.array_equal(block[0], block[2]):
            block = block[:1]  # a gray image: one plane through the resize (as when decoding the file)
        pixels = torch.from_numpy(block.astype(np.float32)) / PIXEL_DTYPES[self.dtype]
        shape = tuple(int(v) for v in self.orig_shapes[row])
        return item, chw_to_input(pixels, self.preprocessing, original_hw=shape), ""

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_array"], state["_cached"] = None, None
        return state


class PixelBatchDataset(Dataset):
    """Whole batches of raw pixel-cache rows (no per-image work): item b -> (items, raw B x 3 x S x S, errors).

    Used when the cached size is the backbone's input size and no aspect-aware resize is needed; the scaling
    to [0, 1] and the normalisation then run batched on the device (see ``normalize_raw``). uint16 travels as
    int16 (same bits, half the bytes of int32) and is widened on the device.
    """

    def __init__(self, path: Path, size: int, dtype: str, pixel_rows: list[int], batch_size: int):
        self.path, self.size, self.dtype = path, size, dtype
        self.pixel_rows = np.asarray(pixel_rows, dtype=np.int64)
        self.batch_size = batch_size
        self._array = None

    def __len__(self) -> int:
        return math.ceil(len(self.pixel_rows) / self.batch_size)

    def __getitem__(self, batch: int):
        if self._array is None:
            self._array = zarr.open_group(str(self.path), mode="r")[pixel_group_key(self.size, self.dtype)]["pixels"]
        lo = batch * self.batch_size
        rows = self.pixel_rows[lo : lo + self.batch_size]
        if len(rows) and np.all(np.diff(rows) == 1):
            block = np.asarray(self._array[int(rows[0]) : int(rows[-1]) + 1])
        else:
            order = np.argsort(rows)
            block = np.empty((len(rows), 3, self.size, self.size), dtype=self.dtype)
            block[order] = self._array.get_orthogonal_selection((rows[order],))
        raw = torch.from_numpy(block.view(np.int16) if self.dtype == "uint16" else block)
        return torch.arange(lo, lo + len(rows)), raw, [""] * len(rows)

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_array"] = None
        return state


def normalize_raw(raw: torch.Tensor, dtype: str, mean, std) -> torch.Tensor:
    """Raw pixel-cache batch (on any device) -> normalized float32 backbone input."""
    values = (raw.to(torch.int32) & 0xFFFF) if dtype == "uint16" else raw
    x = values.float() / PIXEL_DTYPES[dtype]
    mean_t = torch.tensor(mean, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
    std_t = torch.tensor(std, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
    return (x - mean_t) / std_t
