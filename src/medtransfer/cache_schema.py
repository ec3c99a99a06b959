"""The feature store's layout, defined once: a Zarr (v3) group per (backbone, weights, preprocessing).

Layout, readable with plain ``zarr`` and no medtransfer code::

    store.zarr/                          attrs: schema="medtransfer.features/1"
      resnet18__random__224-1a2b3c4d/    one group per (backbone, weights, preprocessing); attrs below
        features   float16 [N, D]        chunked by rows (``chunk_rows``)
        sample_id  str     [N]           the manifest ids, row-aligned with ``features``
        chunk_done bool    [ceil(N / chunk_rows)]   written after each chunk's features: a chunk whose flag
                                         is False holds no valid data (an interrupted run resumes there)

Group attributes: ``schema``, ``backbone``, ``architecture``, ``weights`` (as requested), ``weights_source``
(what they are), ``weights_fingerprint``, ``preprocessing`` (input_size, resize, crop_fraction, mean, std),
``embedding_kind``, ``dim``, ``dtype``, ``n``, ``chunk_rows``, ``created``, ``versions`` (packages),
``complete`` (True once every chunk is written).
"""

from __future__ import annotations

import hashlib
import math
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import zarr

from medtransfer.errors import MedtransferError

SCHEMA = "medtransfer.features/1"
DEFAULT_CHUNK_ROWS = 256


@dataclass(frozen=True)
class GroupInfo:
    key: str
    backbone: str
    weights: str
    weights_source: str
    n: int
    dim: int
    dtype: str
    complete: bool


@dataclass(frozen=True)
class FeatureSet:
    """Features read back from a store, in the store's row order."""

    key: str
    sample_ids: list[str]
    features: np.ndarray  # float32, N x D
    attrs: dict

    def rows_for(self, ids: list[str], what: str = "") -> np.ndarray:
        """Features for ``ids`` in that order; names the missing ids rather than silently dropping them."""
        index = {sample_id: row for row, sample_id in enumerate(self.sample_ids)}
        missing = [sample_id for sample_id in ids if sample_id not in index]
        if missing:
            raise MedtransferError(
                f"{len(missing)} sample(s){' of ' + what if what else ''} have no features in group {self.key} "
                f"(e.g. {missing[:3]}); run `medtransfer extract` on the manifest these splits were made from"
            )
        return self.features[[index[sample_id] for sample_id in ids]]


def weights_tag(weights: str) -> str:
    """A short readable tag for the weights in a group name: default, random, or the checkpoint's stem."""
    if weights in {"default", "random"}:
        return weights
    return re.sub(r"[^A-Za-z0-9._-]+", "-", Path(weights).stem)[:32] or "file"


def group_key(backbone: str, weights: str, weights_fingerprint: str, preprocessing: dict) -> str:
    """``<backbone>__<weights tag>__<input size>-<fingerprint of weights and preprocessing>``."""
    digest = hashlib.sha256(f"{weights_fingerprint}|{sorted(preprocessing.items())}".encode()).hexdigest()[:8]
    safe_backbone = re.sub(r"[^A-Za-z0-9._-]+", "-", backbone)
    return f"{safe_backbone}__{weights_tag(weights)}__{preprocessing.get('input_size', 'x')}-{digest}"


def open_store(path: str | Path, mode: str = "r") -> zarr.Group:
    """Open (or with mode "a", create) a store and check that it is ours and of a schema we read."""
    path = Path(path)
    if mode == "r" and not path.exists():
        raise MedtransferError(f"feature store not found: {path}; create it with `medtransfer extract`")
    try:
        root = zarr.open_group(str(path), mode=mode)
    except Exception as exc:  # zarr raises several types for a folder that is not a store
        raise MedtransferError(f"{path} is not a readable Zarr feature store: {exc}") from exc
    schema = root.attrs.get("schema")
    if schema is None and mode != "r" and not list(root.group_keys()):
        root.attrs["schema"] = SCHEMA
    elif schema != SCHEMA:
        raise MedtransferError(
            f"{path} has feature-store schema {schema!r}; this medtransfer reads {SCHEMA!r} "
            "(re-extract into a new store)"
        )
    return root


def create_group(
    root: zarr.Group,
    key: str,
    sample_ids: list[str],
    dim: int,
    attrs: dict,
    dtype: str = "float16",
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
) -> zarr.Group:
    """Create an empty group (all chunks marked not done) or return the existing one if it matches."""
    if key in root:
        group = root[key]
        stored_ids = group["sample_id"][:].tolist()
        if stored_ids != list(sample_ids) or group.attrs.get("dim") != dim:
            raise MedtransferError(
                f"group {key} exists in the store for other samples; use another --store or delete the group"
            )
        return group
    n = len(sample_ids)
    group = root.create_group(key)
    group.create_array("features", shape=(n, dim), chunks=(chunk_rows, dim), dtype=dtype, fill_value=0)
    ids = group.create_array("sample_id", shape=(n,), chunks=(max(n, 1),), dtype=str)
    ids[:] = np.asarray(sample_ids, dtype=str)
    group.create_array("chunk_done", shape=(math.ceil(n / chunk_rows),), dtype=bool, fill_value=False)
    group.attrs.update(
        {**attrs, "schema": SCHEMA, "n": n, "dim": dim, "dtype": dtype, "chunk_rows": chunk_rows, "complete": False}
    )
    return group


def pending_chunks(group: zarr.Group) -> list[int]:
    return np.flatnonzero(~group["chunk_done"][:]).tolist()


def write_chunk(group: zarr.Group, chunk_index: int, features: np.ndarray) -> None:
    """Write one chunk's rows, then flag it done: a crash between the two leaves the chunk to be recomputed."""
    chunk_rows = group.attrs["chunk_rows"]
    start = chunk_index * chunk_rows
    if not np.isfinite(features).all():
        raise MedtransferError(f"the backbone produced NaN/inf features for rows {start}..{start + len(features)}")
    group["features"][start : start + len(features)] = features.astype(group.attrs["dtype"])
    group["chunk_done"][chunk_index] = True


def mark_complete(group: zarr.Group) -> None:
    if not pending_chunks(group):
        group.attrs["complete"] = True


def list_groups(path: str | Path) -> list[GroupInfo]:
    root = open_store(path)
    infos = []
    for key in sorted(root.group_keys()):
        attrs = dict(root[key].attrs)
        infos.append(
            GroupInfo(
                key=key,
                backbone=attrs.get("backbone", "?"),
                weights=attrs.get("weights", "?"),
                weights_source=attrs.get("weights_source", "?"),
                n=int(attrs.get("n", 0)),
                dim=int(attrs.get("dim", 0)),
                dtype=str(attrs.get("dtype", "?")),
                complete=bool(attrs.get("complete", False)),
            )
        )
    return infos


def find_group(path: str | Path, backbone: str, weights: str | None = None) -> str:
    """The key of the one complete group for ``backbone`` (and ``weights``); a clear error otherwise."""
    infos = list_groups(path)
    matches = [i for i in infos if i.backbone == backbone and (weights is None or i.weights == weights)]
    if not matches:
        present = sorted({i.backbone for i in infos}) or ["none"]
        raise MedtransferError(
            f"backbone {backbone!r} is not in store {path} (it holds: {', '.join(present)}); "
            f"run `medtransfer extract MANIFEST --backbone {backbone} --store {path}`"
        )
    complete = [i for i in matches if i.complete]
    if not complete:
        raise MedtransferError(
            f"the features of {backbone!r} in {path} are incomplete (an interrupted extract?); run extract again"
        )
    if len(complete) > 1:
        raise MedtransferError(
            f"store {path} holds {len(complete)} feature groups for {backbone!r} "
            f"({', '.join(i.key for i in complete)}); choose one with --weights"
        )
    return complete[0].key


def read_features(path: str | Path, key: str) -> FeatureSet:
    group = open_store(path)[key]
    return FeatureSet(
        key=key,
        sample_ids=group["sample_id"][:].tolist(),
        features=np.asarray(group["features"][:], dtype=np.float32),
        attrs=dict(group.attrs),
    )
