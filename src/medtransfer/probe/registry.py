"""The probe-head registry: the table of heads and its lookups, knowing no head (as timm's ``_registry.py``).

Each head registers itself from its own file under ``probe/heads/`` with :func:`register_head` (keywords);
importing ``medtransfer.probe.heads`` loads every shipped head. A head is an estimator factory, a real
hyperparameter grid, and optionally its own way to fit a list of tasks (``fitter``; without one, task by task
through scikit-learn, ``probe.sklearn_fit``: see ``probe.fitting.fit_tasks``).

Heads get features already preprocessed on the training rows (see ``probe.features``). Class weighting
("balanced" by default: each class weighs n / (K n_c)) reaches a head through ``fit(..., sample_weight=...)``
when ``sample_weight`` is True, or through the head's own ``class_weight`` argument; heads for which it means
nothing say so in ``class_weighting``.

Grids are tried on the fold's validation rows (validation MCC); ties go to the lower validation log loss, then
to the earlier candidate, so each grid lists its simplest / most regularized candidate first. The tree heads
(``halving`` names the resource) search their grid by successive halving (``probe.halving``; ``--no-halving``
fits every candidate whole) and, being fitted task by task, can be spread over worker processes (``spreads``,
``probe.workers``).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from sklearn.base import BaseEstimator

from medtransfer.probe.context import HeadFit, ProbeContext
from medtransfer.registry import Registry
from medtransfer.splits.tasks import Task

__all__ = ["HEADS", "Fitter", "HeadSpec", "candidate_grid", "get_head", "head_help", "register_head",
           "resolve_heads"]

# (head, context, tasks) -> one HeadFit, or the reason the task failed, per task in order
Fitter = Callable[["HeadSpec", ProbeContext, list[Task]], Iterable["HeadFit | str"]]


@dataclass(frozen=True)
class HeadSpec:
    """One registered head; built by :func:`register_head` (keywords only), read by ``probe.run``."""

    name: str
    description: str  # one line: the CLI's --help lists it
    make: Callable[..., BaseEstimator]  # keyword hyperparameters -> unfitted estimator
    grid: tuple[dict, ...]  # candidates, tried in order; ties go to the earlier (simpler) one
    sample_weight: bool = True  # class weighting passed as fit(sample_weight=...)
    class_weighting: str = "sample weights"  # how "balanced" reaches the head (documentation)
    fitter: Fitter | None = None  # how this head fits a list of tasks; None: task by task (``probe.sklearn_fit``)
    halving: str = ""  # the resource successive halving hands out over the grid ("trees", "rounds"), or none
    spreads: bool = False  # its tasks are fitted independently: worth spreading over worker processes

    def __post_init__(self) -> None:
        if not self.grid or not all(isinstance(candidate, dict) for candidate in self.grid):
            raise ValueError(f"probe head {self.name!r}: grid must be a non-empty tuple of keyword dicts")


HEADS: Registry[HeadSpec] = Registry("probe head", sort_known=True, known_suffix=" or all")


def register_head(*, name: str, description: str, make: Callable[..., BaseEstimator], grid: Iterable[dict],
                  **traits: Any) -> HeadSpec:
    """Register a head by keywords, as ``adapt.registry.register_method`` does; ``traits`` are the other
    :class:`HeadSpec` fields (``fitter=``, ``sample_weight=``, ``halving=`` ...)."""
    return HEADS.add(HeadSpec(name=name, description=description, make=make, grid=tuple(grid), **traits))


def get_head(name: str) -> HeadSpec:
    return HEADS.lookup(name)


def resolve_heads(names: str | Iterable[str]) -> list[HeadSpec]:
    names = [names] if isinstance(names, str) else list(names)
    if "all" in names:
        return list(HEADS.values())
    return [get_head(n) for n in dict.fromkeys(names)]


def head_help() -> str:
    """The CLI's --head help: every registered head with its one-line description."""
    return " | ".join(f"{spec.name}: {spec.description}" for spec in sorted(HEADS.values(), key=lambda h: h.name))


def candidate_grid(**axes: Iterable) -> tuple[dict, ...]:
    """Every combination of the axes, the first value of each axis first (``grid`` lists its simplest first)."""
    keys = list(axes)
    return tuple(dict(zip(keys, values, strict=True)) for values in itertools.product(*axes.values()))
