"""A vision method (``adapt/vision/``: modules peft does not provide) in one registration.

The implementations in ``adapt/vision/`` take ``apply(model, spec, options)`` and give a closed-form trainable
count; :func:`register_vision_method` adapts them to the registry's ``apply(backbone, spec, options, config)``.
Imports the registry, no method.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import nn

from medtransfer.adapt.config import AdaptConfig
from medtransfer.adapt.options import MethodOptions
from medtransfer.adapt.peft_method import PEFT_LR
from medtransfer.adapt.registry import AdaptMethod, register_method
from medtransfer.backbones.registry import BackboneSpec


def _apply(apply: Callable[[nn.Module, BackboneSpec, MethodOptions], nn.Module]):
    """The registry's ``apply(backbone, spec, options, config)``: the vision methods read only their options."""

    def wrapped(model: nn.Module, spec: BackboneSpec, options: MethodOptions, config: AdaptConfig) -> nn.Module:
        return apply(model, spec, options)

    return wrapped


def register_vision_method(*, name: str, description: str, trains: str, paper: str,
                           apply: Callable[[nn.Module, BackboneSpec, MethodOptions], nn.Module],
                           declares: Callable[[str, nn.Module, BackboneSpec], bool],
                           expected: Callable[[nn.Module, BackboneSpec, MethodOptions], int],
                           options: type[MethodOptions], **traits: Any) -> AdaptMethod:
    """``expected`` is the method's closed-form trainable count; ``traits`` as in ``register_method``."""
    return register_method(name=name, description=description, trains=f"{trains} + head", default_lr=PEFT_LR,
                           apply=_apply(apply), declares=declares, options=options, paper=paper,
                           expected_trainable=expected, **traits)
