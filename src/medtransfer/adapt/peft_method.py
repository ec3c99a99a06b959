"""A peft method in one registration: its config maker over the checked targets, wrapped by ``peft.get_peft_model``.

A method file of ``adapt/methods/`` gives ``make_config(peft, call)`` (``call`` a :class:`PeftCall`: the matched
targets, the backbone, the method's and the run's options) and :func:`register_peft_method` does the rest:
``apply`` checks the backbone's targets and wraps it, ``declares`` names the adapter's parameters by their prefixes.
Also the learning rates the method files share. Imports the registry, no method.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from torch import nn

from medtransfer.adapt.config import AdaptConfig
from medtransfer.adapt.freezing import unfreeze_norms
from medtransfer.adapt.options import MethodOptions, PeftOptions
from medtransfer.adapt.registry import AdaptMethod, register_method
from medtransfer.adapt.targets import callable_patterns, check_targets, target_patterns
from medtransfer.backbones.registry import BackboneSpec
from medtransfer.errors import MedtransferError, first_line

LINEAR_CONV = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)
LORA_TYPES = (*LINEAR_CONV, nn.MultiheadAttention)  # peft LoRA wraps MHA (open_clip ViTs), DoRA does not
PEFT_LR = 1e-4  # every parameter-efficient method (peft's or not)
FFT_LR = 1e-5  # full fine-tuning (fft, lp-ft)


@dataclass(frozen=True)
class PeftCall:
    """What a peft config maker reads: the matched targets, the backbone, this method's options and the run's."""

    patterns: list[str]
    matched: dict[str, nn.Module]
    spec: BackboneSpec
    options: MethodOptions
    config: AdaptConfig


def peft_apply(make_config: Callable[[Any, PeftCall], Any], method: str, supported: tuple[type, ...]):
    """``apply`` for a peft method: check the backbone's targets, build the peft config, wrap the backbone."""

    def apply(model: nn.Module, spec: BackboneSpec, options: MethodOptions, config: AdaptConfig) -> nn.Module:
        import peft

        patterns = callable_patterns(model, spec, method, target_patterns(spec, method, supported,
                                                                          preset=options.targets, model=model))
        matched = check_targets(model, spec, method, patterns, supported)
        peft_config = make_config(peft, PeftCall(list(patterns), matched, spec, options, config))
        try:
            wrapped = peft.get_peft_model(model, peft_config)
        except (ValueError, TypeError, RuntimeError) as exc:  # peft's "unsupported layer" errors are RuntimeErrors
            raise MedtransferError(
                f"method {method!r} cannot apply to backbone {spec.name!r} "
                f"(family {spec.family}): peft says: {first_line(exc, 200)}"
            ) from exc
        if config.train_norms:
            unfreeze_norms(wrapped, spec)
        return wrapped

    return apply


def declares_prefixes(prefixes: tuple[str, ...]):
    """``declares`` of a peft method: the parameters whose names carry one of its adapter prefixes."""

    def declares(name: str, model: nn.Module, spec: BackboneSpec) -> bool:
        return any(f".{p}" in name or name.startswith(p) for p in prefixes)

    return declares


def lycoris_config(config_class: str) -> Callable[[Any, PeftCall], Any]:
    """``make_config`` of peft's LyCORIS tuners (LoHa, LoKr): both configs take the same ``r``, ``alpha``,
    ``module_dropout`` and ``target_modules`` fields (peft 0.21 ``tuners/loha/config.py``, ``lokr/config.py``)."""

    def make(peft, call: PeftCall):
        o = call.options
        return getattr(peft, config_class)(r=o.rank, alpha=o.resolved_alpha, module_dropout=o.dropout,
                                           target_modules=call.patterns)

    return make


def register_peft_method(*, name: str, description: str, trains: str, make_config: Callable[[Any, PeftCall], Any],
                         supported: tuple[type, ...], adapter_prefixes: tuple[str, ...],
                         options: type[PeftOptions] = PeftOptions, **traits: Any) -> AdaptMethod:
    """A peft method in one call: ``make_config(peft, call)`` returns its peft config; the targets it may wrap
    are ``supported``; its trained parameters are named by ``adapter_prefixes``; its options extend
    ``PeftOptions`` (the ``targets`` preset); ``traits`` as in ``register_method`` (``paper=``,
    ``step_hook=`` ...)."""
    if not (isinstance(options, type) and issubclass(options, PeftOptions)):
        raise MedtransferError(f"peft method {name!r}: options must extend PeftOptions (the targets preset)")
    return register_method(
        name=name, description=description, trains=f"{trains} + head", default_lr=PEFT_LR,
        apply=peft_apply(make_config, name, supported), declares=declares_prefixes(adapter_prefixes),
        options=options, is_peft=True, adapter_prefixes=adapter_prefixes, supported=supported, **traits)
