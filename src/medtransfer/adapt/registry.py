"""The adaptation-method registry: each method declares what it trains and how it wraps a backbone.

This module holds the table and its lookups only and imports no method, as timm's ``_registry.py``: every method
is a file of ``adapt/methods/`` that registers itself here (``adapt.methods`` imports them all), and the machinery
the methods share sits beside (``adapt.targets``, ``adapt.freezing``, ``adapt.peft_method``,
``adapt.vision_method``, ``adapt.rank_presets``).

A method's ``apply(backbone, spec, options, config)`` freezes / wraps the embedding model and returns it (a
``peft.PeftModel`` for the ``peft`` methods); the classification head added by ``adapt.model`` is always
trainable. ``declared(model)`` names the parameters the method promises to train, computed from names
alone (not from ``requires_grad``), so a test can check that exactly those receive gradients.

Each method declares its own typed options (``adapt.options``: rank, alpha, block size, ...), validated
when built; ``AdaptConfig`` holds what every method shares (schedule, batch size, precision).

Targets come from the backbone registry (``BackboneSpec.targets``) through a peft method's ``targets``
preset (``PeftOptions``; default attention + MLP linears for ViTs, convolutions for CNNs), checked before
wrapping by ``adapt.targets``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from torch import nn

from medtransfer.adapt.config import AdaptConfig
from medtransfer.adapt.options import MethodOptions, PeftOptions
from medtransfer.backbones.registry import DEFAULT_TARGET_PRESET, BackboneSpec
from medtransfer.errors import MedtransferError
from medtransfer.registry import Registry

HEAD_PREFIX = "head."  # parameter names of the classification head (``Classifier.head``)
HEAD_INITS = ("standardize", "probe", "default")


@dataclass(frozen=True)
class AdaptMethod:
    """One registered method; built by :func:`register_method` (keywords only), read by ``adapt.run``."""

    name: str
    description: str
    trains: str  # what a person reads: which parameters this method trains
    default_lr: float
    # wrap / freeze the backbone: ``apply(backbone, spec, options, config)`` returns the module to train
    apply: Callable[[nn.Module, BackboneSpec, MethodOptions, AdaptConfig], nn.Module] = field(repr=False)
    # names (of the *backbone* after apply) this method trains; the head is always trained on top
    declares: Callable[[str, nn.Module, BackboneSpec], bool] = field(repr=False)
    options: type[MethodOptions] = MethodOptions  # the method's own typed options (rank, block size, ...)
    is_peft: bool = False  # uses peft: checkpoints hold adapter weights (+ head) only
    adapter_prefixes: tuple[str, ...] = ()  # peft parameter-name markers, e.g. "lora_"
    supported: tuple[type, ...] = ()  # module types the peft method can wrap; () = no target modules needed
    norm_stats: str = "frozen"  # "train": BatchNorm running statistics update; "frozen": BN kept in eval mode
    backbone_eval: bool = False  # the whole backbone runs in eval mode (frozen features, no dropout)
    # "standardize": the head standardises embeddings with the mean / std of (up to 1024) training rows,
    # measured on the pretrained backbone before training (well-conditioned head for every backbone);
    # "probe": also fit probe's logreg on them and start the head there (LP-FT); "default": identity
    head_init: str = "standardize"
    default_augment: str = "cxr"
    refit_with_val: bool = False  # full regime: retrain on train + val for the epochs val chose (as probe does)
    # AdaptConfig fields this method needs other than the global defaults (options the user gives still win)
    config_defaults: dict = field(default_factory=dict)
    paper: str = ""  # where the method and its default hyperparameters come from (``medtransfer methods``)
    # closed-form trainable-parameter count of the backbone after apply, from the method's definition
    # (e.g. VPT-deep: layers x prompt length x width); None for peft methods (peft counts its own)
    expected_trainable: Callable[[nn.Module, BackboneSpec, MethodOptions], int] | None = field(
        default=None, repr=False)
    # called by ``train.fit`` after every optimizer step with (backbone, step, total_steps), before the
    # gradients are cleared: AdaLoRA's rank-budget schedule
    step_hook: Callable[[nn.Module, int, int], None] | None = field(default=None, repr=False)
    label_base: str = ""  # presets (lora-r4) label their rows as their base method does (lora-r4, not lora-r4-r4)

    def __post_init__(self) -> None:
        checks = [
            (self.default_lr > 0, f"default_lr must be positive, got {self.default_lr}"),
            (self.norm_stats in ("train", "frozen"), f"norm_stats must be train or frozen, got {self.norm_stats!r}"),
            (self.head_init in HEAD_INITS, f"head_init must be one of {HEAD_INITS}, got {self.head_init!r}"),
            (self.default_augment in ("cxr", "none"), "default_augment must be cxr or none"),
            (isinstance(self.options, type) and issubclass(self.options, MethodOptions),
             "options must be a MethodOptions dataclass"),
            (not set(self.config_defaults) - {f.name for f in fields(AdaptConfig)},
             f"config_defaults names no AdaptConfig field: {sorted(self.config_defaults)}"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(f"adapt method {self.name!r}: {message}")

    @property
    def uses_rank(self) -> bool:
        return "rank" in self.options.names()

    def make_options(self, values: Mapping[str, Any] | MethodOptions | None = None) -> MethodOptions:
        """This method's options from ``values`` (names of its option fields; ``None`` values are defaults)."""
        if isinstance(values, MethodOptions):
            if not isinstance(values, self.options):
                raise MedtransferError(f"method {self.name!r} takes {self.options.__name__}, "
                                       f"got {type(values).__name__}")
            return values
        return self.options.build(self.name, values or {})

    def label(self, options: MethodOptions) -> str:
        """The results table's ``method`` value: ranks (and a non-default ``--targets`` preset) are part of it so
        that r4/r8/r16 rows, and lora-r8 beside lora-r8-qv, coexist."""
        base = self.label_base or self.name
        label = f"{base}-r{options.rank}" if self.uses_rank else base
        if isinstance(options, PeftOptions) and options.targets != DEFAULT_TARGET_PRESET:
            label = f"{label}-{options.targets}"
        return label


METHODS: Registry[AdaptMethod] = Registry("adapt method")


def register_method(*, name: str, description: str, trains: str, default_lr: float,
                    apply: Callable[[nn.Module, BackboneSpec, MethodOptions, AdaptConfig], nn.Module],
                    declares: Callable[[str, nn.Module, BackboneSpec], bool], **traits: Any) -> AdaptMethod:
    """Register a method by keywords, as peft's ``register_peft_method(*, name, config_cls, ...)`` does;
    ``traits`` are the other :class:`AdaptMethod` fields (``options=``, ``is_peft=``, ``norm_stats=`` ...)."""
    return METHODS.add(AdaptMethod(name=name, description=description, trains=trains, default_lr=default_lr,
                                   apply=apply, declares=declares, **traits))


def get_method(name: str) -> AdaptMethod:
    return METHODS.lookup(name)


def method_table() -> list[dict]:
    return [{"name": m.name, "lr": m.default_lr, "trains": m.trains, "description": m.description,
             "paper": m.paper, "options": m.options.describe()} for m in METHODS.values()]
