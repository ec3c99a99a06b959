"""vera: VeRA (Kopiczko et al. 2024) through peft, and its rank presets vera-r4, vera-r8, vera-r16."""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from medtransfer.adapt.options import AT_LEAST_ONE, PROBABILITY, PeftOptions, option
from medtransfer.adapt.peft_method import PeftCall, register_peft_method
from medtransfer.adapt.rank_presets import register_rank_presets


@dataclass(frozen=True)
class VeraOptions(PeftOptions):
    """VeRA: the rank of the shared frozen random projections; no alpha (peft's VeraConfig has none)."""

    rank: int = option(8, "rank of the shared random projections (also part of the label, e.g. vera-r8)",
                       rule=AT_LEAST_ONE)
    dropout: float = option(0.0, "dropout on the adapter's input", rule=PROBABILITY)


def _config(peft, call: PeftCall):
    return peft.VeraConfig(r=call.options.rank, vera_dropout=call.options.dropout, target_modules=call.patterns,
                           projection_prng_key=call.config.seed)


VERA = register_peft_method(
    name="vera", description="VeRA (peft): frozen shared random projections, trained scaling vectors",
    trains="VeRA lambda_b / lambda_d vectors", make_config=_config, supported=(nn.Linear,),
    adapter_prefixes=("vera_lambda_",), options=VeraOptions,
    paper="Kopiczko et al. 2024, arXiv:2310.11454")
register_rank_presets(VERA)
