"""Vision-specific PEFT methods that peft does not provide, each a small module wrapping the frozen backbone.

Every module exposes a frozen options dataclass (``Options``), ``apply(model, spec, options)``,
``declares(name, model, spec)`` (the parameter names it trains) and ``expected_trainable(model, spec, options)``
(its trainable-parameter count in closed form, from the method's definition). Options come from
``AdaptConfig.extra`` by field name (``options_from``).
"""

from __future__ import annotations

import dataclasses

from medtransfer.errors import MedtransferError


def options_from(extra: dict, cls: type):
    """``cls`` with the fields that ``extra`` names (other keys belong to other methods); values are checked."""
    names = {f.name: f for f in dataclasses.fields(cls)}
    given = {k: v for k, v in extra.items() if k in names}
    try:
        options = cls(**given)
    except (TypeError, ValueError) as exc:
        raise MedtransferError(f"bad {cls.__qualname__} option: {exc}") from exc
    return options


def describe(options) -> str:
    """``name=value`` pairs of an options dataclass: the defaults column of ``medtransfer methods``."""
    return ", ".join(f"{f.name}={getattr(options, f.name)}" for f in dataclasses.fields(options))
