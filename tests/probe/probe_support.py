"""Tiny synthetic feature stores and splits files for the probe tests (helpers only; no images, no backbones)."""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import numpy as np
from sklearn.model_selection import StratifiedKFold

from medtransfer import cache_schema
from medtransfer.probe.context import FeatureMatrix, ProbeContext
from medtransfer.probe.options import ProbeOptions
from medtransfer.splits.schema import Fold, SplitsFile, save_splits
from medtransfer.splits.tasks import tasks_for


def make_features(n: int = 120, d: int = 16, n_classes: int = 2, separation: float = 3.0, seed: int = 0):
    rng = np.random.default_rng(seed)
    y = np.arange(n) % n_classes
    rng.shuffle(y)
    centers = rng.normal(size=(n_classes, d)) * separation / np.sqrt(d)
    x = centers[y] + rng.normal(size=(n, d)) * 0.5 + rng.normal(size=d) * 4  # offset: standardization matters
    return x.astype(np.float32), y


def write_store(path: Path, backbone: str, ids: list[str], x: np.ndarray, variants: dict | None = None) -> str:
    """A complete group written through cache_schema; rows with NaN are written raw (write_chunk refuses them)."""
    key = f"{backbone}__random__8-00000000"
    arrays = {"features": x, **{f"features_{kind}": v for kind, v in (variants or {}).items()}}
    with cache_schema.open_store(path, mode="a") as store:
        group = cache_schema.create_group(
            store, key, {name: a.shape[1] for name, a in arrays.items()},
            {"backbone": backbone, "weights": "random", "weights_source": "test"}, chunk_rows=64)
        cache_schema.append_rows(group, ids, [f"sha{i}" for i in ids], [f"{i}.png" for i in ids])
        for chunk in range(int(np.ceil(len(ids) / 64))):
            part = {name: a[chunk * 64:(chunk + 1) * 64] for name, a in arrays.items()}
            if all(np.isfinite(a).all() for a in part.values()):
                cache_schema.write_chunk(group, chunk, part)
            else:  # simulate a corrupted store
                for name, values in part.items():
                    cache_schema.store_rows(group, name, chunk * 64, values.astype("float16"))
                group["chunk_done"][chunk] = True
        cache_schema.mark_complete(group)
    return key


def make_splits_file(path: Path, y: np.ndarray, n_folds: int = 3, shots=(2, 4), seeds: int = 2,
                     classes=None, fractions=()) -> SplitsFile:
    ids = [f"s{i:04d}" for i in range(len(y))]
    folds = []
    outer = StratifiedKFold(n_folds, shuffle=True, random_state=0)
    for f, (train_val, test) in enumerate(outer.split(y, y)):
        inner = StratifiedKFold(4, shuffle=True, random_state=f)
        tr, va = next(inner.split(train_val, y[train_val]))
        train, val = train_val[tr], train_val[va]
        fold = Fold(fold=f, train=sorted(ids[i] for i in train), val=sorted(ids[i] for i in val),
                    test=sorted(ids[i] for i in test))
        for seed in range(seeds):
            rng = np.random.default_rng([f, seed])
            orders = [rng.permutation(train[y[train] == c]) for c in np.unique(y)]
            for k in shots:
                fold.fewshot.setdefault(k, {})[seed] = sorted(ids[i] for o in orders for i in o[:k])
            for fr in fractions:
                fold.fractions.setdefault(fr, {})[seed] = sorted(
                    ids[i] for o in orders for i in o[: max(1, round(fr * len(o)))])
        folds.append(fold)
    n_classes = int(y.max()) + 1
    splits = SplitsFile(manifest_fingerprint="test", n_samples=len(y), label_column="label",
                        classes=classes or [f"c{i}" for i in range(n_classes)],
                        labels={i: int(label) for i, label in zip(ids, y, strict=True)}, strategy="kfold",
                        params={"seed": 0, "shots": list(shots)}, folds=folds)
    save_splits(splits, path)
    return splits


def setup(tmp_path: Path, n_classes: int = 2, variants: bool = False, **kwargs):
    x, y = make_features(n_classes=n_classes)
    ids = [f"s{i:04d}" for i in range(len(y))]
    extra = {"mean": x[:, ::-1] * 2.0} if variants else None
    write_store(tmp_path / "f.zarr", "tiny", ids, x, extra)
    make_splits_file(tmp_path / "splits.json", y, **kwargs)
    return tmp_path / "f.zarr", tmp_path / "splits.json", x, y


POISON = 6e4  # the audit's magnitude: far outside the features' range, so any leak shows


class Poisoned(NamedTuple):
    """A clean context, the same with half of one fold's test rows poisoned (features set to +/-POISON, labels
    flipped), the tasks, and which of that fold's test rows were left clean (a mask over ``task.test``)."""

    clean: ProbeContext
    poisoned: ProbeContext
    tasks: list
    kept: np.ndarray


def poisoned_contexts(tmp_path: Path, fold: int = 0, every_fold: bool = False, **options) -> Poisoned:
    """Fold ``fold``'s tasks (every fold's with ``every_fold``, so that batching across folds is exercised),
    with a clean context and one in which every other test row of that fold is scrambled: a fit that lets no
    test row reach its preprocessing or tuning gives that fold the same numbers, bitwise, on both (the
    leakage tests). The other folds train on those rows: their numbers may move."""
    x, y = make_features(n=90, d=6)
    splits = make_splits_file(tmp_path / "splits.json", y, n_folds=2, shots=(3,), seeds=1)
    ids = list(splits.labels)
    test_ids = splits.folds[fold].test
    kept = np.arange(len(test_ids)) % 2 == 1
    rows = np.array([ids.index(i) for i, keep in zip(test_ids, kept, strict=True) if not keep])
    poisoned_x, poisoned_y = x.copy(), y.copy()
    signs = np.random.default_rng(7).choice([-1.0, 1.0], size=(len(rows), x.shape[1]))
    poisoned_x[rows] = (signs * POISON).astype(x.dtype)
    poisoned_y[rows] = 1 - y[rows]
    make = lambda xx, yy: ProbeContext(backbone="t", embedding="", data=FeatureMatrix.create(xx, yy, ids),  # noqa: E731
                                       splits=splits, options=ProbeOptions(**options))
    tasks = [t for t in tasks_for(splits, ("full", "fewshot")) if every_fold or t.fold == splits.folds[fold].fold]
    return Poisoned(make(x, y), make(poisoned_x, poisoned_y), tasks, kept)
