"""Probe-test scenarios over the synthetic stores and splits of ``medtransfer.testing.features``."""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import numpy as np

from medtransfer.probe.context import FeatureMatrix, ProbeContext
from medtransfer.probe.options import ProbeOptions
from medtransfer.splits.tasks import tasks_for
from medtransfer.testing.features import make_features, sample_ids, write_feature_store, write_label_splits


def setup(tmp_path: Path, n_classes: int = 2, variants: bool = False, **kwargs):
    x, y = make_features(n_classes=n_classes)
    extra = {"mean": x[:, ::-1] * 2.0} if variants else None
    write_feature_store(tmp_path / "f.zarr", "tiny", sample_ids(len(y)), x, extra)
    write_label_splits(tmp_path / "splits.json", y, **kwargs)
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
    splits = write_label_splits(tmp_path / "splits.json", y, n_folds=2, shots=(3,), seeds=1)
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
