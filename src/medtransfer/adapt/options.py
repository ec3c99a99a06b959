"""How adaptation methods declare their options: one typed dataclass per method, help on every field, checked once.

This module holds the base classes, the rules and the options several methods share (``PeftOptions``,
``LowRankOptions``; ``LinearProbeOptions``, which ``adapt.task`` reads); a method's own options sit in its file of
``adapt/methods/`` (``OftOptions`` in ``oft.py``).

Modelled on peft's per-method config dataclasses (``peft/tuners/lora/config.py``: ``field(default=...,
metadata={"help": ...})``) and scikit-learn's ``_parameter_constraints`` (one table that writes its own error
messages): a field declares its help and its rule with :func:`option`, and ``MethodOptions.__post_init__`` turns
a broken rule into one line naming the option, the rule and the value given.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import MISSING, asdict, dataclass, field, fields
from typing import Any

from medtransfer.backbones.registry import DEFAULT_TARGET_PRESET, TARGET_PRESETS
from medtransfer.errors import MedtransferError
from medtransfer.vocabulary import TUNING

Rule = tuple[Callable[[Any], bool], str]  # (the test a value must pass, what it says: "must be at least 1")

AT_LEAST_ONE: Rule = (lambda v: v >= 1, "must be at least 1")
POSITIVE_OR_UNSET: Rule = (lambda v: v is None or v > 0, "must be positive")
PROBABILITY: Rule = (lambda v: 0 <= v < 1, "must be in [0, 1)")
POSITIVE: Rule = (lambda v: v > 0, "must be positive")


def option(default: Any, help: str, *, rule: Rule | None = None) -> Any:
    """A method option: its default, the help a person reads (``medtransfer methods``), and its rule."""
    return field(default=default, metadata={"help": help, "rule": rule})


def rank_option(default: int, source: str) -> Any:
    """A method's ``rank`` (part of its label, e.g. hra-r8), its default cited from ``source``."""
    return option(default, f"rank r ({source}; part of the method label)", rule=AT_LEAST_ONE)


@dataclass(frozen=True)
class MethodOptions:
    """Base of every method's options; a method without options uses it as is."""

    def __post_init__(self) -> None:
        for spec in fields(self):
            value = getattr(self, spec.name)
            rule = spec.metadata.get("rule")
            if rule is not None and not rule[0](value):
                raise MedtransferError(f"--{spec.name.replace('_', '-')} {rule[1]}, got {value!r}")

    @classmethod
    def names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in fields(cls))

    @classmethod
    def describe(cls) -> list[dict]:
        """One entry per option (name, type, default, help), for ``medtransfer methods`` and the docs."""
        return [{"name": f.name, "type": str(f.type), "default": None if f.default is MISSING else f.default,
                 "help": f.metadata.get("help", "")} for f in fields(cls)]

    @classmethod
    def build(cls, method: str, values: Mapping[str, Any]) -> MethodOptions:
        """The options from ``values`` (``None`` means "the default"); a name the method lacks is an error."""
        given = {k: v for k, v in values.items() if v is not None}
        unknown = sorted(set(given) - set(cls.names()))
        if unknown:
            has = ", ".join(cls.names()) or "none"
            raise MedtransferError(f"method {method!r} has no option(s) {', '.join(unknown)}; its options: {has}")
        return cls(**{name: _coerce(cls, name, value) for name, value in given.items()})

    def record(self) -> dict:
        """What the result row's ``hyperparameters`` JSON says about the method (every option, resolved)."""
        return asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.record(), sort_keys=True, default=str)


def merge_option_values(named: Mapping[str, Any], flags: Mapping[str, Any]) -> dict[str, Any]:
    """``--option NAME=VALUE`` pairs and the dedicated flags (``--rank``, ``--dropout``; ``None`` when not given)
    as one mapping: a flag not given never hides the same ``--option`` (``--option rank=4`` trained rank 8), and
    one option given two ways with two values is refused."""
    merged = dict(named)
    for name, value in flags.items():
        if value is None:
            continue
        if name in merged and str(merged[name]) != str(value):
            raise MedtransferError(f"option {name} given twice: --{name.replace('_', '-')} {value} and --option "
                                   f"{name}={merged[name]}; give it once")
        merged[name] = value
    return merged


def _coerce(cls: type[MethodOptions], name: str, value: Any) -> Any:
    """``--option block_size=16`` arrives as text: convert it to the field's declared type."""
    if not isinstance(value, str):
        return value
    kind = next(f.type for f in fields(cls) if f.name == name)
    for type_name, convert in (("bool", _boolean), ("int", int), ("float", float)):
        if kind.split(" |")[0] == type_name:
            try:
                return convert(value)
            except ValueError:
                raise MedtransferError(f"option {name} expects type {type_name}, got {value!r}") from None
    return value


def _boolean(text: str) -> bool:
    lowered = text.lower()
    if lowered not in ("true", "false", "1", "0", "yes", "no"):
        raise ValueError(text)
    return lowered in ("true", "1", "yes")


# how lp fits its head: probe's logreg fitter on the frozen embeddings, or AdamW epochs in the training loop
HEAD_SOLVERS: tuple[str, ...] = ("probe-logreg", "gradient")


@dataclass(frozen=True)
class LinearProbeOptions(MethodOptions):
    """lp: how the head on the frozen backbone is fitted, and (probe's solver) where its C is chosen."""

    solver: str = option(
        "probe-logreg", "probe-logreg: fit the head on the frozen embeddings with probe's logreg (same C grid, "
        "class weights, tuning and train + val refit as `probe --head logreg`, so lp and logreg agree); gradient: "
        "AdamW epochs with early stopping (what --augment cxr needs: augmented images change every epoch)",
        rule=(lambda v: v in HEAD_SOLVERS, f"must be one of {', '.join(HEAD_SOLVERS)}"))
    tune: str = option(
        "val", "with solver probe-logreg, where C is chosen, as probe's --tune: val (the fold's val rows), cv "
        "(inner CV on the training rows) or budget (cv for few-shot and fraction tasks, val for full data)",
        rule=(lambda v: v in TUNING, f"must be one of {', '.join(TUNING)}"))


@dataclass(frozen=True)
class PeftOptions(MethodOptions):
    """Base of every peft method's options: which modules it wraps, as a ``--targets`` preset resolved per
    backbone family from the registry (``backbones.preset_patterns``)."""

    targets: str = option(
        DEFAULT_TARGET_PRESET, "modules to wrap: seed (the published benchmark's own targets), qv (MED-PEFT's q "
        "and v), attn (q, k, v, output projection), attn-mlp (attn + MLP linears; convolutions for CNNs) or "
        "all-linear; a non-default preset is part of the method label (e.g. lora-r8-qv)",
        rule=(lambda v: v in TARGET_PRESETS, f"must be one of {', '.join(TARGET_PRESETS)}"))


@dataclass(frozen=True)
class LowRankOptions(PeftOptions):
    """LoRA, DoRA, LoHa, LoKr: rank, scaling and dropout of the low-rank update."""

    rank: int = option(8, "rank r of the update (part of the method label, e.g. lora-r8, loha-r8)", rule=AT_LEAST_ONE)
    alpha: float | None = option(
        None, "scaling alpha; default 2 x rank (the published benchmark's alpha 1 at every rank scales the "
        "update by 1/rank and starves high ranks)", rule=POSITIVE_OR_UNSET)
    dropout: float = option(0.0, "dropout on the adapter's input (LoRA/DoRA) or of whole modules (LoHa/LoKr)",
                            rule=PROBABILITY)

    @property
    def resolved_alpha(self) -> float:
        return float(self.alpha) if self.alpha is not None else 2.0 * self.rank

    def record(self) -> dict:
        return {"targets": self.targets, "rank": self.rank, "alpha": self.resolved_alpha, "dropout": self.dropout}
