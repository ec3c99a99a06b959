"""The feature store's layout, defined once: one group per (backbone, weights, preprocessing), Zarr or HDF5.

Layout (schema ``medtransfer.features/2``), readable with plain ``zarr`` or ``h5py`` and no medtransfer code::

    store.zarr/  (or store.h5)           attrs: schema="medtransfer.features/2"
      resnet18__random__224-1a2b3c4d/    one group per (backbone, weights, preprocessing); attrs below
        features     float16 [N, D]      the default embedding; chunked by rows (``chunk_rows``)
        features_<kind> float16 [N, Dk]  optional extra embeddings, kind in cls, mean, cls_mean, last4
                                         (listed in the group attribute ``embeddings``)
        sample_id    str  [N]            the manifest id each row was computed for
        image_sha    str  [N]            content fingerprint of the image file (blake2b-128 of its bytes)
        image_path   str  [N]            the file the row was computed from (for verify and resume)
        chunk_done   bool [ceil(N / chunk_rows)]   written *after* a chunk's data: rows of a chunk whose flag
                                         is False hold no valid data and are never read back

Rows only ever grow: a manifest with new images appends rows (and chunks); an id whose image changed gets a
new row and the last *valid* row of an id wins. Rows whose image content (``image_sha``) is already in the
group are copied rather than recomputed, so another study sharing images reuses them.

Group attributes: ``schema``, ``backbone``, ``architecture``, ``weights`` (as requested), ``weights_source``
(what they are), ``weights_fingerprint``, ``weights_identity`` (``extract.reuse``), ``preprocessing``
(input_size, resize, ..., and ``pixel_source`` when the inputs came from a pixel cache), ``embedding_kind``,
``embeddings`` (the ``features_<kind>`` arrays present), ``dim``, ``dtype``, ``n`` (rows), ``chunk_rows``,
``created``, ``versions`` (packages), ``complete`` (True when every chunk is done).

HDF5 stores (``.h5``/``.hdf5``) hold the same groups and arrays (strings as UTF-8 variable-length strings);
their attributes are JSON text (``json.loads`` each value). A writer holds ``<store>.lock`` (pid inside).
``cache_store`` hides how the two formats differ.
"""

from __future__ import annotations

import errno
import hashlib
import math
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import zarr

from medtransfer import cache_rows, cache_store
from medtransfer.cache_rows import storage_errors
from medtransfer.cache_store import Group, Store, store_format, strings
from medtransfer.data.fingerprint import file_fingerprint
from medtransfer.errors import MedtransferError
from medtransfer.registry import did_you_mean, squash_name
from medtransfer.vocabulary import EMBEDDING_KINDS

SCHEMA = "medtransfer.features/2"
SCHEMA_FAMILY = "medtransfer.features/"
DEFAULT_CHUNK_ROWS = 256
ROW_ARRAYS = ("sample_id", "image_sha", "image_path")


def open_store(path: str | Path, mode: str = "r", fmt: str | None = None) -> Store:
    """Open (or with mode "a", create) a store and check that it is ours and of the schema we read."""
    path = Path(path)
    fmt = store_format(path, fmt)
    if mode == "r" and not path.exists():
        raise MedtransferError(f"feature store not found: {path}; create it with `medtransfer extract`")
    try:
        if fmt == "zarr":
            if path.is_file():
                raise MedtransferError(f"{path} is a file, not a Zarr folder (an HDF5 store needs a .h5 suffix)")
            if mode != "r":
                check_store_path(path, fmt)
            root = zarr.open_group(str(path), mode=mode)
        else:
            import h5py

            work = None
            if mode != "r":  # write a working copy, published atomically (see ``cache_store.Store``)
                path.parent.mkdir(parents=True, exist_ok=True)
                work = cache_store.hdf5_work_path(path)
                work.unlink(missing_ok=True)  # left by a killed writer: the store itself is as of its last checkpoint
                if path.exists():
                    shutil.copy2(path, work)
            root = h5py.File(work or path, mode)
    except MedtransferError:
        raise
    except OSError as exc:
        if fmt == "hdf5" and mode != "r":  # a working copy that did not fit: nothing partial is left behind
            cache_store.hdf5_work_path(path).unlink(missing_ok=True)
        if exc.errno == errno.ENOSPC:
            raise MedtransferError(f"cannot write to store {path}: the disk is full; nothing was written -- free "
                                   "space and run the same command again") from None
        raise MedtransferError(f"{path} is not a readable {fmt} feature store: {exc}") from exc
    except Exception as exc:  # zarr/h5py raise several types for something that is not a store
        raise MedtransferError(f"{path} is not a readable {fmt} feature store: {exc}") from exc
    if fmt == "hdf5" and mode != "r":
        import h5py

        store = Store(path, fmt, root, writable=True, work_path=work, reopen=lambda p: h5py.File(p, "a"))
    else:
        store = Store(path, fmt, root, writable=mode != "r")
    schema = store.attrs.get("schema")
    if schema is None and mode != "r" and not store.group_names():
        Group(root, fmt, "/").update_attrs({"schema": SCHEMA})
    elif schema != SCHEMA:
        store.close()
        if isinstance(schema, str) and schema.startswith(SCHEMA_FAMILY):
            raise MedtransferError(
                f"{path} was written with feature-store schema {schema!r}; this medtransfer reads {SCHEMA!r}. "
                "Re-extract into a new store (the old one stays readable by the medtransfer that wrote it)"
            )
        raise MedtransferError(f"{path} is not a medtransfer feature store (schema attribute: {schema!r})")
    return store


def check_store_path(path: str | Path, fmt: str | None = None) -> None:
    """Before a writer takes its lock: refuse a path that is neither a new path nor a store of the format (a
    folder of other files would get a zarr.json stamped into it, a lock file beside it)."""
    path = Path(path)
    if store_format(path, fmt) == "zarr" and path.is_dir() and any(path.iterdir()) \
            and not (path / "zarr.json").exists() and not (path / ".zgroup").exists():
        raise MedtransferError(f"{path} is a folder with files in it but not a feature store (no zarr.json); "
                               "give --store a new path or an existing store")


# --------------------------------------------------------------------------------------------- groups
@dataclass(frozen=True, kw_only=True)
class GroupInfo:
    key: str
    backbone: str
    weights: str
    weights_source: str
    n: int
    dim: int
    dtype: str
    complete: bool
    embeddings: tuple[str, ...] = ()
    n_valid: int = 0
    bytes_on_disk: int = 0
    preprocessing: dict = field(default_factory=dict)


@dataclass(frozen=True)
class FeatureSet:
    """Features read back from a store: the valid rows, one per sample id (the last valid row of an id)."""

    key: str
    sample_ids: list[str]
    features: np.ndarray  # float32, N x D
    attrs: dict
    image_sha: list[str] = field(default_factory=list)

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


def feature_array(embedding: str | None) -> str:
    if embedding in (None, "", "default", "features"):
        return "features"
    if embedding not in EMBEDDING_KINDS:
        raise MedtransferError(f"unknown embedding {embedding!r}; use one of default, {', '.join(EMBEDDING_KINDS)}")
    return f"features_{embedding}"


def create_group(
    store: Store,
    key: str,
    dims: dict[str, int],
    attrs: dict,
    dtype: str = "float16",
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
) -> Group:
    """Create an empty group with the feature arrays ``dims`` (name -> width) or return the existing one.

    An existing group gets any feature array it lacks (extra embeddings asked later): its rows are then
    pending again and are computed (or copied) on this run.
    """
    if key in store and _unfinished_creation(store[key]):
        store.delete_group(key)  # a kill while the group was being created: it holds nothing, start again
    if key in store:
        group = store[key]
        require_consistent(group)
        existing = group.attrs
        if existing.get("dim") != dims["features"] or existing.get("dtype") != dtype:
            raise MedtransferError(
                f"group {key} in {store.path} has dim {existing.get('dim')} / {existing.get('dtype')}, "
                f"not {dims['features']} / {dtype}; use another --store"
            )
        added = [name for name in dims if name not in group]
        for name in added:
            n = group["features"].shape[0]
            group.create_array(name, (n, dims[name]), (existing["chunk_rows"], dims[name]), dtype)
        if added:
            n_chunks = group["chunk_done"].shape[0]
            if n_chunks:
                group["chunk_done"][:] = np.zeros(n_chunks, dtype=bool)
            group.update_attrs({"complete": False, "embeddings": _embeddings(group)})
        return group
    group = store.create_group(key)
    for name, dim in dims.items():
        group.create_array(name, (0, dim), (chunk_rows, dim), dtype)
    for name in ROW_ARRAYS:
        group.create_array(name, (0,), (4096,), str)
    group.create_array("chunk_done", (0,), (1024,), "bool")
    group.update_attrs(  # written last: a group without them was interrupted while being created
        {**attrs, "schema": SCHEMA, "n": 0, "dim": dims["features"], "dtype": dtype, "chunk_rows": chunk_rows,
         "complete": False, "embeddings": _embeddings(group)}
    )
    group.flush()
    return group


def _unfinished_creation(group: Group) -> bool:
    """A group whose creation a kill interrupted: attributes (written last) or arrays missing, no chunk done."""
    attrs = group.attrs
    layout_ok = all(name in group for name in ("features", *ROW_ARRAYS, "chunk_done"))
    if attrs.get("dim") is not None and "chunk_rows" in attrs and layout_ok:
        return False
    try:
        return "chunk_done" not in group or not np.asarray(group["chunk_done"][:], dtype=bool).any()
    except Exception:  # an unreadable flag array in a half-made group: nothing in it can be trusted
        return True


def repair_group(group: Group) -> list[str]:
    """Undo what a kill left half-written in ``group`` (see ``cache_rows.repair``); returns what was done."""
    return cache_rows.repair(group, key_array="sample_id", data_arrays=feature_arrays(group))


def read_array(group: Group, name: str, selection=slice(None)) -> np.ndarray:
    """``group[name][selection]``; a chunk that cannot be decoded (truncated, zstd errors) -> one clear line
    naming the store, the group, the rows of the damaged chunk and the repair."""
    try:
        return np.asarray(group[name][selection])
    except MedtransferError:
        raise
    except Exception as exc:  # zarr/numcodecs/h5py raise many types for a damaged chunk
        rows = _damaged_rows(group[name])
        if rows and name == "chunk_done":
            per = int(group.attrs.get("chunk_rows", 1))
            where = (f"the done flags of chunks {rows.start}-{rows.stop - 1} (rows {rows.start * per}-"
                     f"{rows.stop * per - 1})")
        else:
            where = f"rows {rows.start}-{rows.stop - 1} of array {name}" if rows else f"array {name}"
        raise MedtransferError(
            f"store {group.store_path}, group {group.key}: {where} cannot be read (a damaged chunk: "
            f"{_reason(exc).removeprefix('unreadable (')}; run `medtransfer cache verify {group.store_path} --repair` "
            "so that the next extract recomputes those rows"
        ) from None


def _damaged_rows(array) -> range | None:
    """The rows of the first storage chunk of ``array`` that does not decode (None: none found on a re-read)."""
    step = _storage_chunk(array)
    for start in range(0, int(array.shape[0]), step):
        stop = min(int(array.shape[0]), start + step)
        try:
            np.asarray(array[start:stop])
        except Exception:  # the damaged chunk, whatever the codec raised
            return range(start, stop)
    return None


@dataclass(frozen=True)
class ChunkProblem:
    """A done chunk that cannot be trusted: unreadable data or flags, non-finite values, or lost row keys."""

    array: str
    chunk: int  # in rows of ``chunk_rows`` (data, flags) or the column's own storage chunk (row columns)
    rows: range
    reason: str


def chunk_problems(group: Group) -> list[ChunkProblem]:
    """Read every stored chunk that matters: the row columns, the flags and the data of each done chunk."""
    chunk_rows = int(group.attrs["chunk_rows"])
    problems: list[ChunkProblem] = []
    for name in (*ROW_ARRAYS, "chunk_done"):
        array = group[name]
        step = _storage_chunk(array)
        for start in range(0, array.shape[0], step):
            stop = min(array.shape[0], start + step)
            try:
                np.asarray(array[start:stop])
            except Exception as exc:  # a damaged chunk of a row column or of the flags
                problems.append(ChunkProblem(name, start // step, range(start, stop), _reason(exc)))
    flags_bad = [p for p in problems if p.array == "chunk_done"]
    done = np.zeros(group["chunk_done"].shape[0], dtype=bool)
    if not flags_bad:
        done = np.asarray(group["chunk_done"][:], dtype=bool)
    for name in feature_arrays(group):
        array = group[name]
        for chunk in np.flatnonzero(done).tolist():
            start, stop = chunk * chunk_rows, min(array.shape[0], (chunk + 1) * chunk_rows)
            try:
                values = np.asarray(array[start:stop], dtype=np.float32)
            except Exception as exc:
                problems.append(ChunkProblem(name, chunk, range(start, stop), _reason(exc)))
                continue
            bad = np.flatnonzero(~np.isfinite(values).all(axis=1))
            if len(bad):
                row = start + int(bad[0])
                problems.append(ChunkProblem(name, chunk, range(start, stop),
                                             f"NaN/inf in {len(bad)} row(s) (e.g. row {row})"))
    return problems


def _storage_chunk(array) -> int:
    chunks = getattr(array, "chunks", None) or getattr(getattr(array, "_ds", None), "chunks", None)
    return int(chunks[0]) if chunks else max(1, int(array.shape[0]))


def _reason(exc: Exception) -> str:
    text = str(exc).splitlines()[0][:120] if str(exc) else ""
    return f"unreadable ({type(exc).__name__}{': ' + text if text else ''})"


def repair_chunks(group: Group, problems: list[ChunkProblem]) -> list[str]:
    """Mark the chunks of ``problems`` not done, so the next extract recomputes exactly their rows.

    A damaged row column (ids, fingerprints, files) loses the keys of its rows: the group is cut back to the
    first such row (everything after it is recomputed). Damaged flags are written again as not done.
    """
    chunk_rows = int(group.attrs["chunk_rows"])
    actions: list[str] = []
    cut = min((p.rows.start for p in problems if p.array in ROW_ARRAYS), default=None)
    for problem in problems:
        if problem.array == "chunk_done":
            group["chunk_done"][problem.rows.start:problem.rows.stop] = np.zeros(len(problem.rows), dtype=bool)
            actions.append(f"chunk flags {problem.rows.start}-{problem.rows.stop - 1} rewritten as not done")
    for problem in problems:
        if problem.array in ROW_ARRAYS or problem.array == "chunk_done":
            continue
        if problem.chunk < group["chunk_done"].shape[0]:
            group["chunk_done"][problem.chunk] = False
            actions.append(f"chunk {problem.chunk} ({problem.array}, {problem.reason}) marked not done")
    if cut is not None:
        n_chunks = math.ceil(cut / chunk_rows)
        for name in (*ROW_ARRAYS, *feature_arrays(group)):
            array = group[name]
            array.resize((cut, *array.shape[1:]))
        group["chunk_done"].resize((n_chunks,))
        if cut % chunk_rows and n_chunks:
            group["chunk_done"][n_chunks - 1] = False
        actions.append(f"rows from {cut} on dropped (their ids were unreadable); the next extract appends them")
        group.update_attrs({"n": cut})
    if actions:
        group.update_attrs({"complete": False})
    group.flush()
    return actions


def check_chunks(group: Group, *, repair: bool) -> list[str]:
    """Before reusing a group: every done chunk must read back finite. Damaged ones -> ``repair`` marks them
    not done (recomputed by this run), else one clear line naming them and ``--repair``."""
    problems = chunk_problems(group)
    if not problems:
        return []
    if repair:
        with storage_errors(group.store_path):
            return repair_chunks(group, problems)
    first = problems[0]
    raise MedtransferError(
        f"store {group.store_path}, group {group.key}: {len(problems)} damaged chunk(s), e.g. {first.array} "
        f"rows {first.rows.start}-{first.rows.stop - 1}: {first.reason}; run again with --repair (or "
        f"`medtransfer cache verify {group.store_path} --repair`) to recompute exactly those rows"
    )


FEATURE_DTYPES = ("float16", "float32")  # what ``create_group`` writes (``extract --precision`` picks one)


def layout_contradictions(group: Group) -> list[str]:
    """Where the arrays contradict the group's attributes (dtype, width, rank) or each other: a store rewritten
    outside medtransfer (features re-cast to int8, an array 7 wide where ``dim`` says 512). Empty: consistent."""
    attrs, found = group.attrs, []
    dtype, dim = str(attrs.get("dtype")), attrs.get("dim")
    if dtype not in FEATURE_DTYPES:
        found.append(f"the group's dtype attribute is {dtype!r}, not one of {', '.join(FEATURE_DTYPES)}")
    for name in feature_arrays(group):
        if name not in group:
            found.append(f"array {name} (listed in its embeddings) is missing")
            continue
        array = group[name]
        shape, stored = tuple(array.shape), str(array.dtype)
        if len(shape) != 2:
            found.append(f"array {name} has shape {shape}, not rows x width")
        elif stored != dtype:
            found.append(f"array {name} is {stored} but the group's attributes say {dtype}")
        elif name == "features" and shape[1] != dim:
            found.append(f"array features is {shape[1]} wide but the group's attributes say dim {dim}")
        elif shape[1] < 1:
            found.append(f"array {name} has no columns")
    for name in ROW_ARRAYS:
        if name in group and len(group[name].shape) != 1:
            found.append(f"array {name} has shape {tuple(group[name].shape)}, not one value per row")
    if "chunk_done" in group and np.dtype(group["chunk_done"].dtype) != np.dtype(bool):
        found.append(f"array chunk_done is {group['chunk_done'].dtype}, not bool")
    return found


def require_consistent(group: Group) -> None:
    """Refuse (one line) a group whose arrays contradict its attributes, before any of it is read or reused."""
    found = layout_contradictions(group)
    if found:
        raise MedtransferError(
            f"store {group.store_path}, group {group.key}: {found[0]}; the store was changed outside medtransfer and "
            f"is not trusted -- `medtransfer cache verify {group.store_path} --repair` drops the group (the next "
            "extract computes it again)"
        )


def _embeddings(group: Group) -> list[str]:
    return [name.removeprefix("features_") for name in group.array_names() if name.startswith("features_")]


def feature_arrays(group: Group) -> list[str]:
    return ["features"] + [f"features_{kind}" for kind in group.attrs.get("embeddings", [])]


def chunk_done(group: Group) -> np.ndarray:
    return np.asarray(read_array(group, "chunk_done"), dtype=bool)


def valid_row_mask(group: Group) -> np.ndarray:
    """True for the rows whose chunk is flagged done (everything else is never read back)."""
    n = min(group[name].shape[0] for name in (*ROW_ARRAYS, *feature_arrays(group)))
    done = chunk_done(group)
    return np.repeat(done, group.attrs["chunk_rows"])[:n] if n else np.zeros(0, dtype=bool)


def pending_chunks(group: Group) -> list[int]:
    return np.flatnonzero(~chunk_done(group)).tolist()


def append_rows(group: Group, sample_ids: list[str], shas: list[str], paths: list[str]) -> range:
    """Append rows (ids, fingerprints, paths; no data yet) and their not-done chunk flags (see
    ``cache_rows.append_rows``: a partly filled last chunk is cleared first and rewritten)."""
    with storage_errors(group.store_path):
        return cache_rows.append_rows(group, list(zip(sample_ids, shas, paths, strict=True)), key_array="sample_id",
                                      data_arrays=feature_arrays(group), attrs={"complete": False})


def row_index(group: Group) -> cache_rows.RowIndex:
    """What the group holds (ids, fingerprints, files, chunk flags), for ``cache_rows.plan_rows``."""
    return cache_rows.read_index(group, "sample_id")


def apply_plan(group: Group, plan: cache_rows.RowPlan) -> dict[int, cache_rows.Row]:
    """Write a plan's row columns to a feature group; returns the kept and copied rows' features."""
    return cache_rows.apply_plan(group, plan, key_array="sample_id", data_arrays=feature_arrays(group),
                                 attrs={"complete": False})


def write_chunk(group: Group, chunk_index: int, arrays: dict[str, np.ndarray], where: str = "", *,
                plan: cache_rows.RowPlan | None = None) -> None:
    """Write one chunk's rows of every feature array (appending ``plan``'s new rows it reaches), then flag it
    done (the flag is the commit)."""
    chunk_rows = group.attrs["chunk_rows"]
    start = chunk_index * chunk_rows
    for name, values in arrays.items():
        bad = ~np.isfinite(values).all(axis=1)
        if bad.any():
            row = start + int(np.flatnonzero(bad)[0])
            image = plan.files[row] if plan is not None else group["image_path"][row]
            raise MedtransferError(
                f"the backbone produced NaN/inf features ({name}) for {int(bad.sum())} row(s) of store "
                f"{group.store_path}, group {group.key}, e.g. image {image}{where}; nothing was written "
                "for that chunk (try --precision fp32)"
            )
    dtype = group.attrs["dtype"]
    cache_rows.commit_chunk(group, chunk_index, {name: v.astype(dtype) for name, v in arrays.items()},
                            write=store_rows, plan=plan, key_array="sample_id")


def store_rows(group: Group, name: str, start: int, values: np.ndarray) -> None:
    cache_rows.store_rows(group, name, start, values)


def mark_complete(group: Group) -> bool:
    complete = not pending_chunks(group)
    group.update_attrs({"complete": complete})
    group.flush()
    return complete


def group_info(group: Group) -> GroupInfo:
    attrs = group.attrs
    try:
        valid = valid_row_mask(group)
    except KeyError:  # a half-made group (arrays or attributes missing): nothing valid
        valid = np.zeros(0, dtype=bool)
    return GroupInfo(
        key=group.key,
        backbone=attrs.get("backbone", "?"),
        weights=attrs.get("weights", "?"),
        weights_source=attrs.get("weights_source", "?"),
        n=int(attrs.get("n", 0)),
        dim=int(attrs.get("dim", 0)),
        dtype=str(attrs.get("dtype", "?")),
        complete=bool(attrs.get("complete", False)) and len(valid) > 0 and bool(valid.all())
        and len(valid) == int(attrs.get("n", -1)),
        embeddings=tuple(attrs.get("embeddings", ())),
        n_valid=int(valid.sum()),
        bytes_on_disk=group.nbytes_stored(),
        preprocessing=dict(attrs.get("preprocessing", {})),
    )


def list_groups(path: str | Path) -> list[GroupInfo]:
    with open_store(path) as store:
        return [group_info(store[key]) for key in store.group_names()]


def orphan_folders(path: str | Path) -> list[str]:
    with open_store(path) as store:
        return store.orphan_folders()


def find_group(path: str | Path, backbone: str, weights: str | None = None) -> str:
    """The key of the one complete group for ``backbone`` (and ``weights``); a clear error otherwise."""
    infos = list_groups(path)
    matches = [i for i in infos if i.backbone == backbone and (weights is None or i.weights == weights)]
    if not matches:
        held = sorted({i.backbone for i in infos})
        orphans = orphan_folders(path)
        damaged = (f"; {len(orphans)} group folder(s) lost their zarr.json (e.g. {orphans[0]}): run `medtransfer "
                   f"cache verify {path} --repair` to drop them" if orphans else "")
        where = f"backbone {backbone!r} is not in store {path} (it holds: {', '.join(held) or 'none'}{damaged})"
        same = [b for b in held if squash_name(b) == squash_name(backbone)]  # resnet-18 for resnet18
        if same:
            raise MedtransferError(f"{where}{did_you_mean(backbone, same)}")
        from medtransfer.backbones import get_spec  # only here: a name no backbone has is refused as such

        if ":" not in backbone:  # an open spec (timm:, hf:) is resolved by extract itself, perhaps online
            get_spec(backbone)  # an unknown name: "unknown backbone ... (did you mean ...)", not an extract hint
        raise MedtransferError(f"{where}; run `medtransfer extract MANIFEST --backbone {backbone} --store {path}`")
    complete = [i for i in matches if i.complete]
    if not complete:
        raise MedtransferError(
            f"the features of {backbone!r} in {path} are incomplete (an interrupted extract?); run extract again"
        )
    if len(complete) == 1:
        with open_store(path) as store:  # before any work: a store altered outside medtransfer is refused here
            require_consistent(store[complete[0].key])
    if len(complete) > 1:
        weights_differ = len({i.weights for i in complete}) > 1
        raise MedtransferError(
            f"store {path} holds {len(complete)} feature groups for {backbone!r} "
            f"({', '.join(i.key for i in complete)}); "
            + ("choose one with --weights" if weights_differ else
               "they differ in preprocessing (input size or pixel-cache inputs): keep the groups in separate stores")
        )
    return complete[0].key


def group_embeddings(path: str | Path, key: str) -> list[str]:
    """The extra embedding kinds group ``key`` holds besides the default (``features_<kind>`` arrays)."""
    with open_store(path) as store:
        group = store[key]
        return [k for k in group.attrs.get("embeddings", []) if f"features_{k}" in group]


def latest_valid_rows(sample_ids: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Row indices (ascending) of the last valid row of each id."""
    last: dict[str, int] = {}
    for row in np.flatnonzero(valid).tolist():
        last[str(sample_ids[row])] = row
    return np.asarray(sorted(last.values()), dtype=np.int64)


def read_features(path: str | Path, key: str, embedding: str | None = None) -> FeatureSet:
    """The valid rows of group ``key``: ``embedding`` None -> ``features``, else ``features_<embedding>``."""
    name = feature_array(embedding)
    with open_store(path) as store:
        group = store[key]
        require_consistent(group)
        if name not in group:
            present = ["default", *group.attrs.get("embeddings", [])]
            raise MedtransferError(
                f"group {key} in {path} has no {embedding!r} embedding (it has: {', '.join(present)}); "
                f"run `medtransfer extract ... --embedding {embedding}`"
            )
        valid = valid_row_mask(group)
        ids = strings(read_array(group, "sample_id"))[: len(valid)]
        rows = latest_valid_rows(ids, valid)
        data = (np.asarray(read_array(group, name), dtype=np.float32)[rows] if len(rows)
                else np.zeros((0, 0), np.float32))
        shas = strings(read_array(group, "image_sha"))[rows].tolist()
        return FeatureSet(key=key, sample_ids=ids[rows].tolist(), features=data, attrs=group.attrs, image_sha=shas)


# --------------------------------------------------------------------------------------------- info / verify
def store_info(path: str | Path) -> list[dict]:
    """One dict per group: key, backbone, weights, n, valid rows, dim, dtype, embeddings, bytes, complete."""
    return [
        {
            "key": i.key, "backbone": i.backbone, "weights": i.weights, "n": i.n, "n_valid": i.n_valid,
            "dim": i.dim, "dtype": i.dtype, "embeddings": list(i.embeddings), "bytes_on_disk": i.bytes_on_disk,
            "complete": i.complete, "input_size": i.preprocessing.get("input_size"),
            "pixel_source": i.preprocessing.get("pixel_source"),
        }
        for i in list_groups(path)
    ]


@dataclass(frozen=True)
class VerifyProblem:
    key: str
    kind: str  # "incomplete", "nonfinite", "unreadable", "fingerprint", "missing-file", "layout", "altered"
    message: str
    repaired: str = ""  # what ``--repair`` did about it (empty: nothing, or the next extract recomputes it)


def verify_store(path: str | Path, check_files: bool = True, *, repair: bool = False) -> list[VerifyProblem]:
    """Check every group: layout, array lengths, chunks done, every done chunk readable and finite, image
    fingerprints (if files exist). Returns the problems found (empty: the store is sound).

    ``repair``: (under the writer lock) drop half-made groups, trim arrays a kill left uneven, and mark damaged
    chunks not done so the next extract recomputes exactly their rows; the problems found are still returned.
    """
    if repair:
        with cache_store.writer_lock(path), open_store(path, "a") as store:
            return _verify(store, check_files, repair=True)
    with open_store(path) as store:
        return _verify(store, check_files, repair=False)


def _verify(store: Store, check_files: bool, *, repair: bool) -> list[VerifyProblem]:
    problems: list[VerifyProblem] = []
    for folder in store.orphan_folders():
        action = ""
        if repair:  # its attributes (backbone, weights, preprocessing, chunking) are gone: it cannot be rebuilt
            store.delete_orphan(folder)
            action = f"dropped group {folder} (its attributes cannot be recovered); the next extract computes it again"
        problems.append(VerifyProblem(folder, "layout", f"{folder}: a group folder without its zarr.json (its metadata "
                                      "was deleted); its features cannot be read -- `cache verify --repair` drops it "
                                      "and the next extract computes it again", action))
    for key in store.group_names():
        group = store[key]
        with storage_errors(store.path):
            problems += _verify_group(store, group, check_files, repair=repair)
    return problems


def _verify_group(store: Store, group: Group, check_files: bool, *, repair: bool) -> list[VerifyProblem]:
    key, attrs, problems = group.key, group.attrs, []
    missing = [a for a in ("features", *ROW_ARRAYS, "chunk_done") if a not in group]
    if missing or "chunk_rows" not in attrs or attrs.get("dim") is None:
        problems.append(VerifyProblem(key, "layout", f"{key}: missing arrays/attrs {missing or ['dim/chunk_rows']} "
                                      "(a kill while it was created?)"))
        if repair and _unfinished_creation(group):
            store.delete_group(key)
        return problems
    altered = layout_contradictions(group)
    if altered:
        action = ""
        if repair:
            store.delete_group(key)
            action = f"dropped group {key} (its data cannot be trusted); the next extract computes it again"
        return [VerifyProblem(key, "altered", f"{key}: {altered[0]} -- the store was changed outside medtransfer",
                              action)]
    chunk_rows = int(attrs["chunk_rows"])
    lengths = {name: group[name].shape[0] for name in (*ROW_ARRAYS, *feature_arrays(group))}
    n_flags = group["chunk_done"].shape[0]
    if len(set(lengths.values())) > 1 or n_flags != math.ceil(lengths["sample_id"] / chunk_rows):
        shown = ", ".join(f"{name} {length}" for name, length in lengths.items())
        problems.append(VerifyProblem(key, "layout", f"{key}: arrays of different lengths ({shown}; {n_flags} "
                                      "chunk flags): an append was interrupted"))
    damaged = chunk_problems(group)
    for problem in damaged:
        kind = "nonfinite" if problem.reason.startswith("NaN") else "unreadable"
        problems.append(VerifyProblem(key, kind, f"{key}/{problem.array}: {problem.reason} in rows "
                                      f"{problem.rows.start}-{problem.rows.stop - 1} (chunk {problem.chunk})"))
    if repair:
        if damaged:
            repair_chunks(group, damaged)
        repair_group(group)
        mark_complete(group)
    if any(p.array in (*ROW_ARRAYS, "chunk_done") for p in damaged):
        return problems
    done = chunk_done(group)
    pending = np.flatnonzero(~done).tolist()
    if pending:
        problems.append(VerifyProblem(
            key, "incomplete",
            f"{key}: {len(pending)} of {len(done)} chunk(s) not done (e.g. chunk {pending[0]}); "
            "run extract again to finish them"))
    elif not attrs.get("complete", False):
        problems.append(VerifyProblem(key, "incomplete", f"{key}: the last extract into it did not finish; run "
                                      "extract again"))
    if check_files:
        problems += _verify_files(group)
    return problems


def _verify_files(group: Group) -> list[VerifyProblem]:
    key = group.key
    valid = valid_row_mask(group)
    ids = strings(group["sample_id"][:])
    shas = strings(group["image_sha"][:])
    paths = strings(group["image_path"][:])
    bad_fp, absent, problems = [], 0, []
    for row in np.flatnonzero(valid).tolist():
        file = Path(paths[row])
        if not file.is_file():
            absent += 1
            continue
        if file_fingerprint(file) != shas[row]:
            bad_fp.append(row)
    if bad_fp:
        row = bad_fp[0]
        problems.append(VerifyProblem(
            key, "fingerprint",
            f"{key}: {len(bad_fp)} image(s) changed since their features were computed "
            f"(e.g. id {ids[row]}: {paths[row]}); run extract again to recompute them"))
    if absent:
        problems.append(VerifyProblem(
            key, "missing-file", f"{key}: {absent} source image(s) no longer exist (features kept)"))
    return problems
