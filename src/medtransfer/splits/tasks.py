"""The unit of work probe and adapt share: one fit on one fold's rows, in one regime, with its result key.

Probe and adapt both enumerate tasks here, so a few-shot subset or a fold means the same rows in both stages.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from medtransfer.errors import MedtransferError
from medtransfer.splits.schema import Fold, SplitsFile
from medtransfer.vocabulary import REGIMES


@dataclass(frozen=True)
class Task:
    """One fit: which rows train, which tune, which test."""

    regime: str
    shots: int
    seed: int
    fold: int
    train: list[str]
    val: list[str]
    test: list[str]
    refit_with_val: bool
    fraction: float = 0.0
    repeat: int = 0  # repeated CV: the fold's redraw of the outer split


def tasks_for(
    splits: SplitsFile, regimes: tuple[str, ...] = ("full", "fewshot"), fractions: list[float] | None = None
) -> list[Task]:
    unknown = set(regimes) - set(REGIMES)
    if unknown:
        raise MedtransferError(f"unknown regime(s) {sorted(unknown)}; choose from {', '.join(REGIMES)}")
    if "fraction" in regimes and not splits.fractions:
        raise MedtransferError(
            "regime fraction asked for, but the splits file holds no label fractions; make them with "
            "`medtransfer splits MANIFEST --fractions 0.01,0.1 ...` (or leave out --regime fraction)"
        )
    if fractions:
        missing = [f for f in fractions if not any(_has_fraction(fold, f) for fold in splits.folds)]
        if missing:
            raise MedtransferError(
                f"the splits file holds no label fraction(s) {missing} (it has: {splits.fractions or 'none'}); "
                "make splits with --fractions"
            )
    tasks = []
    for fold in splits.folds:
        tasks.extend(_fold_tasks(splits, fold, regimes, fractions))
    return tasks


def _fold_tasks(splits: SplitsFile, fold: Fold, regimes: tuple[str, ...], fractions: list[float] | None) -> list[Task]:
    tasks = []
    if "full" in regimes:
        tasks.append(Task("full", 0, splits.params.get("seed", 0), fold.fold, fold.train, fold.val,
                          fold.test, True))
    if "fewshot" in regimes:
        for n_shots, by_seed in sorted(fold.fewshot.items()):
            for seed, subset in sorted(by_seed.items()):
                tasks.append(Task("fewshot", n_shots, seed, fold.fold, subset, fold.val, fold.test, False))
    if "fraction" in regimes or fractions:
        for fraction, by_seed in sorted(fold.fractions.items()):
            if fractions and not any(abs(fraction - f) < 1e-12 for f in fractions):
                continue
            for seed, subset in sorted(by_seed.items()):
                tasks.append(Task("fraction", 0, seed, fold.fold, subset, fold.val, fold.test, False,
                                  float(fraction)))
    return [dataclasses.replace(t, repeat=fold.repeat) for t in tasks]


def _has_fraction(fold, fraction: float) -> bool:
    return any(abs(f - fraction) < 1e-12 for f in fold.fractions)
