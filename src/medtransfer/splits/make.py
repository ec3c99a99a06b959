"""Make folds and few-shot subsets from a manifest: the single definition of folds for probe and adapt.

Rules (tested): k-fold is stratified and grouped by patient; LOCO holds out exactly one center per fold;
``val`` is carved from the training part, grouped by patient; few-shot subsets take exactly ``n_shots``
samples per class from the fold's ``train`` and are nested across shot counts for the same seed.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
from sklearn.model_selection import StratifiedGroupKFold

from medtransfer.data.manifest import Manifest
from medtransfer.errors import MedtransferError
from medtransfer.splits.schema import Fold, SplitsFile

STRATEGIES = ("kfold", "loco", "holdout")
SHOTS_UNITS = ("image", "patient")  # what a few-shot k counts per class


@dataclass(frozen=True)
class SplitSpec:
    """How to split. ``fewshot_seeds`` seeds 0..fewshot_seeds-1 draw independent few-shot subsets."""

    strategy: str = "kfold"
    n_folds: int = 5
    val_fraction: float = 0.2
    test_fraction: float = 0.2  # holdout only
    shots: tuple[int, ...] = ()
    fewshot_seeds: int = 5
    seed: int = 0
    fractions: tuple[float, ...] = ()  # label fractions of each fold's train, drawn per few-shot seed
    fewshot_per_center: bool = False  # few-shot: n_shots per class *per center* (center-aware)
    positive: str | None = None  # binary tasks: the positive class (None: the class that sorts second)
    repeats: int = 1  # repeated CV: the outer split redrawn with seeds seed, seed+1, ... (folds numbered on)
    shots_unit: str = "image"  # few-shot k counts images, or patients (all of a drawn patient's images)

    def params(self) -> dict:
        params = {"val_fraction": self.val_fraction, "seed": self.seed}
        if self.strategy == "kfold":
            params["n_folds"] = self.n_folds
        if self.strategy == "holdout":
            params["test_fraction"] = self.test_fraction
        params["shots"] = list(self.shots)
        params["fewshot_seeds"] = self.fewshot_seeds if self.shots or self.fractions else 0
        if self.fractions:  # optional keys appear only when used: older specs keep byte-identical files
            params["fractions"] = [float(f) for f in self.fractions]
        if self.fewshot_per_center:
            params["fewshot_per_center"] = True
        if self.positive is not None:
            params["positive"] = self.positive
        if self.repeats != 1:
            params["repeats"] = self.repeats
        if self.shots_unit != "image":
            params["shots_unit"] = self.shots_unit
        return params


def with_positive(manifest: Manifest, positive: str | None) -> Manifest:
    """The manifest with ``positive`` as class index 1 (the positive class of a binary task's metrics)."""
    if positive is None:
        return manifest
    classes = list(manifest.classes)
    if str(positive) not in classes:
        raise MedtransferError(f"--positive {positive!r} is not a class of the manifest; its classes: {classes}")
    if len(classes) != 2:
        raise MedtransferError(f"--positive needs a binary task; the manifest has {len(classes)} classes")
    order = [c for c in classes if c != str(positive)] + [str(positive)]
    table = manifest.table.assign(label_index=manifest.table["label"].map({c: i for i, c in enumerate(order)}))
    return replace(manifest, table=table.assign(label_index=table["label_index"].astype(int)), classes=tuple(order))


def positive_warning(splits: SplitsFile) -> str:
    """A warning when a binary task's positive class is the majority ('' otherwise): PR-AUC, F1 and sensitivity
    then describe the common class, which is rarely what a clinical question asks."""
    positive = splits.positive
    if positive is None:
        return ""
    counts = np.bincount(np.fromiter(splits.labels.values(), dtype=int), minlength=2)
    if counts[1] <= counts[0]:
        return ""
    return (f"the positive class {positive!r} is the majority ({counts[1]} of {counts.sum()} samples): PR-AUC, F1 "
            f"and sensitivity describe it; pass --positive {splits.classes[0]!r} if the rarer class is the one "
            "of interest")


def make_splits(manifest: Manifest, spec: SplitSpec) -> SplitsFile:
    """Build every fold, its validation part and its few-shot subsets; deterministic in (manifest, spec)."""
    if spec.strategy not in STRATEGIES:
        raise MedtransferError(f"unknown split strategy {spec.strategy!r}; choose one of {', '.join(STRATEGIES)}")
    if not 0 < spec.val_fraction < 1:
        raise MedtransferError(f"--val-fraction must be between 0 and 1, got {spec.val_fraction}")
    if any(n <= 0 for n in spec.shots):
        raise MedtransferError(f"shot counts must be positive, got {list(spec.shots)}")
    if (spec.shots or spec.fractions) and spec.fewshot_seeds < 1:
        raise MedtransferError(f"--seeds must be at least 1 to draw few-shot or fraction subsets, got "
                               f"{spec.fewshot_seeds}")
    if spec.strategy == "kfold" and spec.n_folds < 2:
        raise MedtransferError(f"--folds must be at least 2 (each fold tests on 1/k of the data), got {spec.n_folds}")
    if any(not 0 < f < 1 for f in spec.fractions):
        raise MedtransferError(f"label fractions must be between 0 and 1 (exclusive), got {list(spec.fractions)}")
    if spec.fewshot_per_center and "center" not in manifest.table.columns:
        raise MedtransferError("center-aware few-shot needs a 'center' column in the manifest")
    if spec.repeats < 1 or (spec.repeats > 1 and spec.strategy == "loco"):
        raise MedtransferError(f"--repeats must be at least 1 (and 1 for loco, whose folds are fixed); got "
                               f"{spec.repeats}")
    if spec.shots_unit not in SHOTS_UNITS:
        raise MedtransferError(f"--shots-unit must be {' or '.join(SHOTS_UNITS)}, got {spec.shots_unit!r}")
    if spec.shots_unit == "patient" and spec.fewshot_per_center:
        raise MedtransferError("--shots-unit patient and --fewshot-per-center cannot be combined")
    manifest = with_positive(manifest, spec.positive)
    table = manifest.table
    ids = table["id"].to_numpy()
    labels = table["label_index"].to_numpy()
    patients = table["patient"].to_numpy()

    folds: list[Fold] = []
    outer = [(repeat, part) for repeat in range(spec.repeats)
             for part in _outer(table, replace(spec, seed=spec.seed + repeat))]
    for fold_index, (repeat, (train_val, test, held_out)) in enumerate(outer):
        train, val = _carve_val(train_val, labels, patients, spec.val_fraction, spec.seed + fold_index)
        fold = Fold(
            fold=fold_index,
            train=sorted(ids[train].tolist()),
            val=sorted(ids[val].tolist()),
            test=sorted(ids[test].tolist()),
            held_out_center=held_out,
            repeat=repeat,
        )
        fold.fewshot = _fewshot(fold, manifest, spec, fold_index)
        fold.fractions = _fractions(fold, manifest, spec, fold_index)
        folds.append(fold)
    return assemble(manifest, strategy=spec.strategy, params=spec.params(), folds=folds)


def assemble(manifest: Manifest, *, strategy: str, params: dict, folds: list[Fold]) -> SplitsFile:
    """A splits file for ``manifest``'s ids, labels and patients: one place for what made and imported splits
    record beside their folds."""
    table = manifest.table
    ids = table["id"].tolist()
    return SplitsFile(
        manifest_fingerprint=manifest.fingerprint,
        n_samples=len(manifest),
        label_column=manifest.label_column,
        classes=list(manifest.classes),
        labels=dict(zip(ids, table["label_index"].tolist(), strict=True)),
        groups=dict(zip(ids, table["patient"].tolist(), strict=True)),
        strategy=strategy,
        params=params,
        folds=folds,
    )


def _outer(table, spec: SplitSpec):
    """Yield (train+val indices, test indices, held-out center or None) per fold."""
    labels = table["label_index"].to_numpy()
    patients = table["patient"].to_numpy()
    index = np.arange(len(table))
    if spec.strategy == "loco":
        centers = sorted(table["center"].unique())
        if len(centers) < 2:
            raise MedtransferError(
                "leave-one-center-out needs a 'center' column with at least two centers; "
                f"the manifest has {len(centers)}"
            )
        spanning = table.groupby("patient")["center"].nunique()
        spanning = sorted(spanning[spanning > 1].index)
        if spanning:
            raise MedtransferError(
                f"{len(spanning)} patient(s) have images at more than one center (e.g. {spanning[:3]}), so holding "
                "out a center would put them in train and test; give each patient one center in the manifest"
            )
        for center in centers:
            held = (table["center"] == center).to_numpy()
            yield index[~held], index[held], center
        return
    n_splits = spec.n_folds if spec.strategy == "kfold" else _splits_for(spec.test_fraction, "--test-fraction")
    _check_groups(labels, patients, n_splits, "--folds" if spec.strategy == "kfold" else "--test-fraction")
    splitter = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=spec.seed)
    for train_val, test in splitter.split(index, labels, patients):
        yield train_val, test, None
        if spec.strategy == "holdout":
            return


def _splits_for(fraction: float, option: str) -> int:
    """Held-out parts are one of k patient-grouped folds, so a fraction must be close to 1/k."""
    n_splits = max(2, round(1 / fraction))
    if abs(1 / n_splits - fraction) > 0.035:  # 0.3 -> 1/3 is close enough; 0.4 -> 1/2 is not
        near = ", ".join(f"{1 / k:.3g}" for k in range(2, 11))
        raise MedtransferError(
            f"{option} {fraction} cannot be met: the held-out part is one of k patient-grouped folds, so the "
            f"fraction is 1/k ({near}); {option} {1 / n_splits:.3g} is the nearest"
        )
    return n_splits


def _carve_val(train_val: np.ndarray, labels, patients, val_fraction: float, seed: int):
    n_splits = _splits_for(val_fraction, "--val-fraction")
    _check_groups(labels[train_val], patients[train_val], n_splits, "--val-fraction")
    splitter = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    inner_train, inner_val = next(splitter.split(train_val, labels[train_val], patients[train_val]))
    return train_val[inner_train], train_val[inner_val]


def _check_groups(labels: np.ndarray, patients: np.ndarray, n_splits: int, option: str) -> None:
    for label in np.unique(labels):
        n_patients = len(np.unique(patients[labels == label]))
        if n_patients < n_splits:
            raise MedtransferError(
                f"a class has only {n_patients} patient(s) but {n_splits} splits were asked for; "
                f"{_fewer_splits(option, n_patients)}"
            )


def _fewer_splits(option: str, n_patients: int) -> str:
    """The advice that gives fewer splits: fewer --folds, or a larger held-out fraction (1/k of the patients)."""
    if n_patients < 2:
        return "add data (at least 2 patients per class)"
    if option == "--folds":
        return f"lower --folds to {n_patients} or fewer, or add data"
    return f"raise {option} to {1 / n_patients:.3g} or more, or add data"


def _fractions(fold: Fold, manifest: Manifest, spec: SplitSpec, fold_index: int) -> dict[float, dict[int, list[str]]]:
    """Per seed, one random order of each class's training ids; fraction f takes max(1, round(f * n_class))
    of each class (a prefix: nested across fractions for the same seed). Independent of the few-shot draw."""
    if not spec.fractions:
        return {}
    label_of = dict(zip(manifest.table["id"], manifest.table["label_index"], strict=True))
    by_class: dict[int, list[str]] = {}
    for sample_id in fold.train:
        by_class.setdefault(label_of[sample_id], []).append(sample_id)
    subsets: dict[float, dict[int, list[str]]] = {float(f): {} for f in sorted(spec.fractions)}
    for seed in range(max(spec.fewshot_seeds, 1)):
        rng = np.random.default_rng([spec.seed, fold_index, seed, 1])
        orders = {c: [ids[i] for i in rng.permutation(len(ids))] for c, ids in sorted(by_class.items())}
        for fraction in sorted(spec.fractions):
            subsets[float(fraction)][seed] = sorted(
                s for ids in orders.values() for s in ids[: max(1, round(fraction * len(ids)))]
            )
    return subsets


def _fewshot(fold: Fold, manifest: Manifest, spec: SplitSpec, fold_index: int) -> dict[int, dict[int, list[str]]]:
    """For each seed, one random order of each class's training ids; each shot count takes a prefix (nested).
    Center-aware (``fewshot_per_center``): the same per (class, center) cell present in the fold's train."""
    if not spec.shots:
        return {}
    if spec.fewshot_per_center:
        return _fewshot_per_center(fold, manifest, spec, fold_index)
    if spec.shots_unit == "patient":
        return _fewshot_patients(fold, manifest, spec, fold_index)
    label_of = dict(zip(manifest.table["id"], manifest.table["label_index"], strict=True))
    by_class: dict[int, list[str]] = {}
    for sample_id in fold.train:  # fold.train is sorted: the draw does not depend on manifest row order
        by_class.setdefault(label_of[sample_id], []).append(sample_id)
    max_shots = max(spec.shots)
    for class_index in range(len(manifest.classes)):
        available = len(by_class.get(class_index, []))
        if available < max_shots:
            raise MedtransferError(
                f"fold {fold_index}: class {manifest.classes[class_index]!r} has {available} training samples, "
                f"fewer than the {max_shots} shots asked for; lower --shots"
            )
    subsets: dict[int, dict[int, list[str]]] = {n: {} for n in sorted(spec.shots)}
    for seed in range(spec.fewshot_seeds):
        rng = np.random.default_rng([spec.seed, fold_index, seed])
        orders = {c: [ids[i] for i in rng.permutation(len(ids))] for c, ids in sorted(by_class.items())}
        for n_shots in sorted(spec.shots):
            subsets[n_shots][seed] = sorted(s for ids in orders.values() for s in ids[:n_shots])
    return subsets


def _fewshot_per_center(fold: Fold, manifest: Manifest, spec: SplitSpec, fold_index: int):
    table = manifest.table
    cell_of = dict(zip(table["id"], zip(table["label_index"], table["center"].astype(str), strict=True), strict=True))
    by_cell: dict[tuple[int, str], list[str]] = {}
    for sample_id in fold.train:
        by_cell.setdefault(cell_of[sample_id], []).append(sample_id)
    max_shots = max(spec.shots)
    for (class_index, center), ids in sorted(by_cell.items()):
        if len(ids) < max_shots:
            raise MedtransferError(
                f"fold {fold_index}: class {manifest.classes[class_index]!r} at center {center!r} has {len(ids)} "
                f"training samples, fewer than the {max_shots} shots per center asked for; lower --shots"
            )
    subsets: dict[int, dict[int, list[str]]] = {n: {} for n in sorted(spec.shots)}
    for seed in range(spec.fewshot_seeds):
        rng = np.random.default_rng([spec.seed, fold_index, seed])
        orders = {cell: [ids[i] for i in rng.permutation(len(ids))] for cell, ids in sorted(by_cell.items())}
        for n_shots in sorted(spec.shots):
            subsets[n_shots][seed] = sorted(s for ids in orders.values() for s in ids[:n_shots])
    return subsets


def _fewshot_patients(fold: Fold, manifest: Manifest, spec: SplitSpec, fold_index: int):
    """Few-shot k counted in patients: per seed, one random order of each class's training patients; k takes a
    prefix (nested) and every image of the drawn patients. A patient whose images carry two labels is refused."""
    table = manifest.table.set_index("id").loc[fold.train]
    labels_per_patient = table.groupby("patient")["label_index"].nunique()
    mixed = sorted(labels_per_patient[labels_per_patient > 1].index.astype(str))
    if mixed:
        raise MedtransferError(f"--shots-unit patient needs one label per patient; {len(mixed)} patient(s) have "
                               f"images of several classes (e.g. {mixed[:3]})")
    images_of = {str(p): sorted(rows.index.tolist()) for p, rows in table.groupby("patient")}
    label_of = {str(p): int(rows["label_index"].iloc[0]) for p, rows in table.groupby("patient")}
    by_class: dict[int, list[str]] = {}
    for patient in sorted(images_of):
        by_class.setdefault(label_of[patient], []).append(patient)
    max_shots = max(spec.shots)
    for class_index in range(len(manifest.classes)):
        available = len(by_class.get(class_index, []))
        if available < max_shots:
            raise MedtransferError(
                f"fold {fold_index}: class {manifest.classes[class_index]!r} has {available} training patients, "
                f"fewer than the {max_shots} shots (patients) asked for; lower --shots"
            )
    subsets: dict[int, dict[int, list[str]]] = {n: {} for n in sorted(spec.shots)}
    for seed in range(spec.fewshot_seeds):
        rng = np.random.default_rng([spec.seed, fold_index, seed])
        orders = {c: [ps[i] for i in rng.permutation(len(ps))] for c, ps in sorted(by_class.items())}
        for n_shots in sorted(spec.shots):
            subsets[n_shots][seed] = sorted(i for ps in orders.values() for p in ps[:n_shots] for i in images_of[p])
    return subsets
