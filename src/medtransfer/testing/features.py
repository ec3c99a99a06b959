"""Synthetic embeddings, a feature store and a splits file built from them, written through the real schema
(``cache_schema``, ``splits.schema``): what ``probe`` reads, without images or a backbone."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from sklearn.model_selection import StratifiedKFold

from medtransfer import cache_schema
from medtransfer.splits.schema import Fold, SplitsFile, save_splits

CHUNK_ROWS = 64


def make_features(n: int = 120, d: int = 16, n_classes: int = 2, separation: float = 3.0,
                  seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``n`` float32 rows of ``d`` features with a class signal of strength ``separation``, and their labels;
    a large common offset, so that a head without standardisation shows it."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % n_classes
    rng.shuffle(y)
    centers = rng.normal(size=(n_classes, d)) * separation / np.sqrt(d)
    x = centers[y] + rng.normal(size=(n, d)) * 0.5 + rng.normal(size=d) * 4
    return x.astype(np.float32), y


def sample_ids(n: int) -> list[str]:
    """The ids ``write_feature_store`` and ``write_label_splits`` give rows: ``s0000``, ``s0001``, ..."""
    return [f"s{i:04d}" for i in range(n)]


def write_feature_store(path: Path, backbone: str, ids: list[str], x: np.ndarray,
                        variants: dict[str, np.ndarray] | None = None) -> str:
    """One complete group (``backbone``, random weights) holding ``x`` and embedding ``variants`` (kind ->
    array); returns its key. Rows holding NaN or inf are stored as they are, as a damaged store would hold them
    (``write_chunk`` refuses them), so that readers' checks can be tried."""
    key = f"{backbone}__random__8-00000000"
    arrays = {"features": x, **{f"features_{kind}": v for kind, v in (variants or {}).items()}}
    with cache_schema.open_store(path, mode="a") as store:
        group = cache_schema.create_group(
            store, key, {name: a.shape[1] for name, a in arrays.items()},
            {"backbone": backbone, "weights": "random", "weights_source": "synthetic"}, chunk_rows=CHUNK_ROWS)
        cache_schema.append_rows(group, ids, [f"sha{i}" for i in ids], [f"{i}.png" for i in ids])
        for chunk in range(int(np.ceil(len(ids) / CHUNK_ROWS))):
            part = {name: a[chunk * CHUNK_ROWS:(chunk + 1) * CHUNK_ROWS] for name, a in arrays.items()}
            if all(np.isfinite(a).all() for a in part.values()):
                cache_schema.write_chunk(group, chunk, part)
            else:
                for name, values in part.items():
                    cache_schema.store_rows(group, name, chunk * CHUNK_ROWS, values.astype("float16"))
                group["chunk_done"][chunk] = True
        cache_schema.mark_complete(group)
    return key


def write_label_splits(path: Path, y: np.ndarray, n_folds: int = 3, shots=(2, 4), seeds: int = 2,
                       classes: list[str] | None = None, fractions=()) -> SplitsFile:
    """A splits file over rows ``sample_ids(len(y))``: stratified outer folds, a stratified val quarter of each
    fold's rest, and per seed ``shots`` per class and label ``fractions`` drawn from the fold's training rows."""
    ids = sample_ids(len(y))
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
    splits = SplitsFile(manifest_fingerprint="synthetic", n_samples=len(y), label_column="label",
                        classes=classes or [f"c{i}" for i in range(n_classes)],
                        labels={i: int(label) for i, label in zip(ids, y, strict=True)}, strategy="kfold",
                        params={"seed": 0, "shots": list(shots)}, folds=folds)
    save_splits(splits, path)
    return splits
