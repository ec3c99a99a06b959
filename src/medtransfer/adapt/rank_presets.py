"""Named rank presets that the medical PEFT benchmark lists: a method at ranks 4, 8 and 16 (LoRA and VeRA).

Each preset is its base method registered again under ``<base>-r<rank>``, with an options class whose ``rank``
defaults to that rank; its rows are labelled as the base method's are (``lora-r4``), so a preset and
``--method lora --option rank=4`` give the same rows. The base method's file calls :func:`register_rank_presets`
right after registering it. Imports the registry, no method.
"""

from __future__ import annotations

from dataclasses import make_dataclass, replace

from medtransfer.adapt.options import AT_LEAST_ONE, MethodOptions, option
from medtransfer.adapt.registry import METHODS, AdaptMethod
from medtransfer.errors import MedtransferError

PRESET_RANKS = (4, 8, 16)


def rank_preset_options(base: type[MethodOptions], rank: int) -> type[MethodOptions]:
    """``base`` with ``rank`` defaulting to ``rank`` (the other options keep theirs)."""
    field = option(rank, f"rank r of the update (this preset's {rank}; part of the label)", rule=AT_LEAST_ONE)
    return make_dataclass(f"{base.__name__}R{rank}", [("rank", "int", field)], bases=(base,), frozen=True)


def _named(base: AdaptMethod, name: str):
    """The base method's ``apply``, its refusals naming the preset the user asked for."""

    def apply(*args):
        try:
            return base.apply(*args)
        except MedtransferError as exc:
            raise MedtransferError(str(exc).replace(f"method {base.name!r}", f"method {name!r}", 1)) from exc

    return apply


def register_rank_presets(base: AdaptMethod) -> list[AdaptMethod]:
    """Register ``<base>-r4``, ``-r8`` and ``-r16``; ``base`` must have a ``rank`` option."""
    if not base.uses_rank:
        raise ValueError(f"adapt method {base.name!r} has no rank option to preset")
    presets = []
    for rank in PRESET_RANKS:
        name = f"{base.name}-r{rank}"
        presets.append(METHODS.add(replace(base, name=name, description=f"{base.description}; rank {rank}",
                                           apply=_named(base, name), options=rank_preset_options(base.options, rank),
                                           label_base=base.name)))
    return presets
