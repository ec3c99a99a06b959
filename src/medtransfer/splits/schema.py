"""The splits file (JSON, ``"schema": "medtransfer.splits/1"``): read, write and check it against a manifest.

It carries the labels too, so that ``probe`` needs only the feature store and this file.
Written with sorted keys and no timestamps: the same inputs give byte-identical files.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
from collections import Counter
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

from medtransfer.errors import MedtransferError

SCHEMA = "medtransfer.splits/1"


@dataclass
class Fold:
    """One fold: disjoint id lists, and ``fewshot[n_shots][seed]`` -> the few-shot training ids."""

    fold: int
    train: list[str]
    val: list[str]
    test: list[str]
    held_out_center: str | None = None
    fewshot: dict[int, dict[int, list[str]]] = field(default_factory=dict)
    # optional: fractions[fraction][seed] -> a class-stratified share of ``train`` (nested across fractions)
    fractions: dict[float, dict[int, list[str]]] = field(default_factory=dict)
    repeat: int = 0  # repeated CV (``splits --repeats``): which redraw of the outer split this fold belongs to


@dataclass
class SplitsFile:
    manifest_fingerprint: str
    n_samples: int
    label_column: str
    classes: list[str]
    labels: dict[str, int]
    strategy: str
    params: dict
    folds: list[Fold]
    # id -> patient: lets a consumer that splits training rows again (probe's inner CV) keep patients together
    groups: dict[str, str] = field(default_factory=dict)

    @property
    def shots(self) -> list[int]:
        return sorted({n for fold in self.folds for n in fold.fewshot})

    @property
    def positive(self) -> str | None:
        """The positive class of a binary task (index 1: ``--positive`` or the class that sorts second; older
        files follow the latter rule); None for a multi-class task."""
        return self.classes[1] if len(self.classes) == 2 else None

    @property
    def repeats(self) -> int:
        return int(self.params.get("repeats", 1))

    @property
    def fractions(self) -> list[float]:
        return sorted({f for fold in self.folds for f in fold.fractions})

    @property
    def seeds(self) -> list[int]:
        return sorted({s for fold in self.folds for by_seed in fold.fewshot.values() for s in by_seed})

    @cached_property
    def fingerprint(self) -> str:
        """Hash of the whole file's content: results rows carry it, so rows of different splits never mix."""
        return hashlib.sha256(self.to_json().encode()).hexdigest()[:16]

    def to_json(self) -> str:
        document = {
            "schema": SCHEMA,
            "manifest": {
                "fingerprint": self.manifest_fingerprint,
                "n_samples": self.n_samples,
                "label_column": self.label_column,
                "classes": self.classes,
            },
            "strategy": self.strategy,
            "params": self.params,
            "labels": self.labels,
            **({"groups": self.groups} if self.groups else {}),
            "folds": [
                {
                    "fold": f.fold,
                    "held_out_center": f.held_out_center,
                    "train": f.train,
                    "val": f.val,
                    "test": f.test,
                    "fewshot": {
                        str(n): {str(seed): ids for seed, ids in sorted(by_seed.items())}
                        for n, by_seed in sorted(f.fewshot.items())
                    },
                    **({"fractions": {
                        _fraction_key(fr): {str(seed): ids for seed, ids in sorted(by_seed.items())}
                        for fr, by_seed in sorted(f.fractions.items())
                    }} if f.fractions else {}),
                    **({"repeat": f.repeat} if f.repeat else {}),
                }
                for f in self.folds
            ],
        }
        return json.dumps(document, indent=1, sort_keys=True) + "\n"

    def check_manifest(self, fingerprint: str) -> None:
        if fingerprint != self.manifest_fingerprint:
            raise MedtransferError(
                f"the splits file was made from another manifest (fingerprint {self.manifest_fingerprint}, "
                f"this manifest {fingerprint}); run `medtransfer splits` again on this manifest"
            )


def _fraction_key(fraction: float) -> str:
    return repr(float(fraction))


def check_splits_path(path: str | Path) -> Path:
    """Refuse, before any work, an output path that cannot be a splits file (an existing folder)."""
    path = Path(path)
    if path.is_dir():
        raise MedtransferError(f"--out {path} is a folder; give the splits file's name, e.g. {path / 'splits.json'}")
    return path


def save_splits(splits: SplitsFile, path: str | Path) -> Path:
    """Written through a temporary beside it and renamed (a kill or a full disk never leaves half a file)."""
    path = check_splits_path(path)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.writing")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary.write_text(splits.to_json())
        os.replace(temporary, path)
    except OSError as exc:
        reason = "the disk is full" if exc.errno == errno.ENOSPC else (exc.strerror or str(exc))
        raise MedtransferError(f"cannot write splits file {path}: {reason}; nothing was written") from None
    finally:
        temporary.unlink(missing_ok=True)
    return path


def load_splits(path: str | Path) -> SplitsFile:
    path = Path(path)
    if not path.is_file():
        raise MedtransferError(f"splits file not found: {path}")
    try:
        document = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise MedtransferError(f"splits file {path} is not valid JSON: {exc}") from exc
    schema = document.get("schema") if isinstance(document, dict) else None
    if schema != SCHEMA:
        raise MedtransferError(f"{path} is not a medtransfer splits file (schema {schema!r}, expected {SCHEMA!r})")
    try:
        manifest = document["manifest"]
        splits = SplitsFile(
            manifest_fingerprint=manifest["fingerprint"],
            n_samples=manifest["n_samples"],
            label_column=manifest["label_column"],
            classes=manifest["classes"],
            labels={str(k): int(v) for k, v in document["labels"].items()},
            groups={str(k): str(v) for k, v in document.get("groups", {}).items()},
            strategy=document["strategy"],
            params=document["params"],
            folds=[
                Fold(
                    fold=f["fold"],
                    train=f["train"],
                    val=f["val"],
                    test=f["test"],
                    held_out_center=f.get("held_out_center"),
                    repeat=int(f.get("repeat", 0)),
                    fewshot={
                        int(n): {int(seed): ids for seed, ids in by_seed.items()}
                        for n, by_seed in f.get("fewshot", {}).items()
                    },
                    fractions={
                        float(fr): {int(seed): ids for seed, ids in by_seed.items()}
                        for fr, by_seed in f.get("fractions", {}).items()
                    },
                )
                for f in document["folds"]
            ],
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise MedtransferError(f"splits file {path} is malformed: missing or bad field {exc}") from exc
    problem = rule_violation(splits)
    if problem:
        raise MedtransferError(
            f"splits file {path} breaks its own rules: {problem}; it was edited or damaged, so make it again "
            "with `medtransfer splits` (or `splits import`)"
        )
    return splits


# strategies whose every fold assigns every labelled id a role (imported splits may leave ids out, the same in
# every fold)
_COVERING = ("kfold", "loco", "holdout")


def rule_violation(splits: SplitsFile) -> str | None:
    """The first rule ``splits`` breaks, with up to a few ids named, or None. The rules are those that
    make_splits and import_splits build by: a hand-edited file (train ids copied into test, few-shot ids from
    test, a test part cut down) would otherwise give confident metrics that mean nothing."""
    n_classes = len(splits.classes)
    bad_labels = sorted(i for i, label in splits.labels.items() if not 0 <= label < n_classes)
    if bad_labels:
        return (f"{len(bad_labels)} label(s) index past the {n_classes} classes "
                f"({_some(f'{i}={splits.labels[i]}' for i in bad_labels)})")
    covered: set[str] | None = None
    seen_test: dict[int, dict[str, int]] = {}  # repeat -> test id -> fold
    for fold in splits.folds:
        where = f"fold {fold.fold}"
        roles = {"train": fold.train, "val": fold.val, "test": fold.test}
        for role, ids in roles.items():
            repeated = sorted(i for i, n in Counter(ids).items() if n > 1)
            if repeated:
                return f"{where}: {len(repeated)} id(s) listed twice in {role} ({_some(repeated)})"
        if not fold.test:
            return f"{where}: the test part is empty"
        sets = {role: set(ids) for role, ids in roles.items()}
        for first, second in (("train", "test"), ("val", "test"), ("train", "val")):
            both = sorted(sets[first] & sets[second])
            if both:
                return f"{where}: {len(both)} id(s) in both {first} and {second} ({_some(both)})"
        every = sets["train"] | sets["val"] | sets["test"]
        unlabelled = sorted(every - splits.labels.keys())
        if unlabelled:
            return f"{where}: {len(unlabelled)} id(s) have no label ({_some(unlabelled)})"
        if splits.strategy in _COVERING and every != splits.labels.keys():
            missing = sorted(splits.labels.keys() - every)
            return f"{where}: {len(missing)} labelled id(s) are in no part ({_some(missing)})"
        if covered is not None and every != covered:
            differ = sorted(every ^ covered)
            return f"{where}: covers other ids than fold {splits.folds[0].fold} ({_some(differ)})"
        covered = every
        if splits.strategy in ("kfold", "loco"):
            # within one repeat of the outer split (``splits --repeats``) every id is tested once
            tested = seen_test.setdefault(fold.repeat, {})
            again = sorted(i for i in sets["test"] if i in tested)
            if again:
                return (f"{where}: {len(again)} test id(s) are also in the test part of fold "
                        f"{tested[again[0]]} ({_some(again)})")
            tested.update(dict.fromkeys(sets["test"], fold.fold))
        subsets = [(f"{n}-shot seed {seed}", ids) for n, by_seed in fold.fewshot.items()
                   for seed, ids in by_seed.items()]
        subsets += [(f"fraction {fr} seed {seed}", ids) for fr, by_seed in fold.fractions.items()
                    for seed, ids in by_seed.items()]
        for name, ids in subsets:
            outside = sorted(set(ids) - sets["train"])
            if outside:
                return f"{where}: {len(outside)} {name} id(s) are not in its train part ({_some(outside)})"
        if splits.groups:
            leak = _patient_leak(splits.groups, sets)
            if leak:
                return f"{where}: {leak}"
    return None


def _patient_leak(groups: dict[str, str], sets: dict[str, set[str]]) -> str | None:
    roles: dict[str, set[str]] = {}
    for role, ids in sets.items():
        for sample_id in ids:
            roles.setdefault(groups.get(sample_id, sample_id), set()).add(role)
    leaking = sorted(p for p, r in roles.items() if len(r) > 1)
    if not leaking:
        return None
    named = [f"{patient} in {' and '.join(sorted(roles[patient]))}" for patient in leaking]
    return f"{len(leaking)} patient(s) in more than one part ({_some(named)})"


def _some(items, limit: int = 3) -> str:
    items = list(items)
    return ", ".join(map(str, items[:limit])) + (f" and {len(items) - limit} more" if len(items) > limit else "")
