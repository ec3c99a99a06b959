"""Named rank presets that the medical PEFT benchmark lists: LoRA and VeRA at ranks 4, 8 and 16.

Each preset is its base method registered again under ``<base>-r<rank>``, with an options class whose ``rank``
defaults to that rank; its rows are labelled as the base method's are (``lora-r4``), so a preset and
``--method lora --option rank=4`` give the same rows.
"""

from __future__ import annotations

from dataclasses import make_dataclass, replace

from medtransfer.adapt.methods import METHODS, AdaptMethod, get_method
from medtransfer.adapt.options import AT_LEAST_ONE, MethodOptions, option
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


for _base in ("lora", "vera"):
    for _rank in PRESET_RANKS:
        _method = get_method(_base)
        _name = f"{_base}-r{_rank}"
        METHODS.add(replace(_method, name=_name, description=f"{_method.description}; rank {_rank}",
                            apply=_named(_method, _name), options=rank_preset_options(_method.options, _rank),
                            label_base=_base))
