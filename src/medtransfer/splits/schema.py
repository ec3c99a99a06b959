"""The splits file (JSON, ``"schema": "medtransfer.splits/1"``): read, write and check it against a manifest.

It carries the labels too, so that ``probe`` needs only the feature store and this file.
Written with sorted keys and no timestamps: the same inputs give byte-identical files.
"""

from __future__ import annotations

import hashlib
import json
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


def save_splits(splits: SplitsFile, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(splits.to_json())
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
        return SplitsFile(
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
