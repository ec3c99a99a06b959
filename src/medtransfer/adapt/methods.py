"""The adaptation-method registry: each method declares what it trains and how it wraps a backbone.

A method's ``apply(backbone, spec, options, config)`` freezes / wraps the embedding model and returns it (a
``peft.PeftModel`` for the ``peft`` methods); the classification head added by ``adapt.model`` is always
trainable. ``declared(model)`` names the parameters the method promises to train, computed from names
alone (not from ``requires_grad``), so a test can check that exactly those receive gradients.

Each method declares its own typed options (``adapt.options``: rank, alpha, block size, ...), validated
when built; ``AdaptConfig`` holds what every method shares (schedule, batch size, precision).

Targets come from the backbone registry (``BackboneSpec.targets``) through a peft method's ``targets``
preset (``PeftOptions``; default attention + MLP linears for ViTs, convolutions for CNNs). Before wrapping,
every pattern must match at least one module (peft's rule: ``name == t or name.endswith("." + t)``) and every
matched module must be a type the method supports.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from torch import nn

from medtransfer.adapt.config import AdaptConfig
from medtransfer.adapt.options import (
    BoftOptions,
    LinearProbeOptions,
    LowRankOptions,
    MethodOptions,
    OftOptions,
    PeftOptions,
    VeraOptions,
)
from medtransfer.backbones.registry import (
    DEFAULT_TARGET_PRESET,
    BackboneSpec,
    matches_target,
    preset_patterns,
    resolve_targets,
)
from medtransfer.errors import MedtransferError, first_line
from medtransfer.registry import Registry

NORM_TYPES = (nn.LayerNorm, nn.GroupNorm, nn.modules.batchnorm._BatchNorm)
HEAD_PREFIX = "head."  # parameter names of the classification head (``Classifier.head``)
LOG = logging.getLogger("medtransfer.adapt")
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


# --- helpers -----------------------------------------------------------------------------------------------


def target_patterns(spec: BackboneSpec, method: str, supported: tuple[type, ...] = (), *,
                    preset: str = DEFAULT_TARGET_PRESET, model: nn.Module | None = None) -> tuple[str, ...]:
    """The ``--targets`` preset's patterns for this backbone (``backbones.preset_patterns``); an error when the
    family has none.

    A method that cannot wrap a fused attention module (only LoRA wraps ``nn.MultiheadAttention``) gets the
    backbone's Linear-only attention patterns (``targets.attention_linear``) in its place.
    """
    targets = spec.targets
    patterns = preset_patterns(spec, preset, model)
    if targets.attention_linear and nn.MultiheadAttention not in supported:
        fused = set(targets.attention)
        swapped = [p for p in patterns if p not in fused]
        if len(swapped) != len(patterns):
            patterns = tuple(targets.attention_linear) + tuple(swapped)
    if not patterns:
        kind = "attention/mlp" if spec.family == "vit" else "conv"
        raise MedtransferError(
            f"backbone {spec.name!r} (family {spec.family}) declares no {kind} PEFT targets, so method "
            f"{method!r} has nothing to wrap; add them to its BackboneSpec.targets"
        )
    return patterns


def check_targets(model: nn.Module, spec: BackboneSpec, method: str, patterns: tuple[str, ...],
                  supported: tuple[type, ...] = ()) -> dict[str, nn.Module]:
    """Every pattern matches >= 1 module and every matched module is a supported type; returns name -> module."""
    modules = dict(model.named_modules())
    for pattern in patterns:
        if not any(name and matches_target(name, (pattern,)) for name in modules):
            sample = ", ".join(n for n in list(modules)[1:6])
            raise MedtransferError(
                f"target pattern {pattern!r} of backbone {spec.name!r} matches no module (method {method!r}); "
                f"module names look like: {sample}, ...; fix BackboneSpec.targets"
            )
    matched = {name: modules[name] for name in resolve_targets(model, patterns)}
    if supported:
        for name, module in matched.items():
            if not isinstance(module, supported):
                kinds = ", ".join(t.__name__ for t in supported)
                raise MedtransferError(
                    f"method {method!r} cannot apply to backbone {spec.name!r} "
                    f"(family {spec.family}): target {name!r} is a "
                    f"{type(module).__name__}, and peft's {method} supports only {kinds}"
                )
    return matched


def norm_modules(model: nn.Module, spec: BackboneSpec) -> list[str]:
    """Normalisation modules: the registry's ``targets.norm`` patterns, or else every LayerNorm/GroupNorm/BN."""
    if spec.targets.norm:
        check_targets(model, spec, "ln-tune", spec.targets.norm)
        return resolve_targets(model, spec.targets.norm)
    return [name for name, module in model.named_modules() if isinstance(module, NORM_TYPES)]


def _param_names_of(model: nn.Module, module_names: list[str]) -> set[str]:
    names = set()
    for module_name in module_names:
        module = model.get_submodule(module_name)
        names.update(f"{module_name}.{p}" for p, _ in module.named_parameters(recurse=False))
    return names


def _freeze(model: nn.Module) -> None:
    for parameter in model.parameters():
        parameter.requires_grad_(False)


def _unfreeze_norms(model: nn.Module, spec: BackboneSpec) -> None:
    names = _param_names_of(model, norm_modules(model, spec))
    for name, parameter in model.named_parameters():
        if name in names:
            parameter.requires_grad_(True)


def _is_bias(name: str, spec: BackboneSpec) -> bool:
    suffix = spec.targets.bias_suffix
    return name == suffix or name.endswith("." + suffix)


def _in_features(module: nn.Module) -> int | None:
    if isinstance(module, nn.Linear):
        return module.in_features
    if isinstance(module, nn.Conv2d):
        return module.in_channels // module.groups * math.prod(module.kernel_size)
    return None


def _blockwise(modules: dict[str, nn.Module], block: int, method: str, spec: BackboneSpec) -> list[str]:
    """OFT/BOFT split each target's input into blocks of ``block``: the targets whose input size is not a
    multiple are left out (named in a warning, e.g. a ResNet's 3x7x7 stem); an error if none is left."""
    excluded = [name for name, module in modules.items() if (_in_features(module) or block) % block]
    if len(excluded) == len(modules):
        sizes = sorted({_in_features(m) for m in modules.values()} - {None})
        raise MedtransferError(
            f"method {method!r} cannot apply to backbone {spec.name!r} "
            f"(family {spec.family}): no target's input size {sizes} is a "
            f"multiple of the block size {block}; choose another block size (--option block_size=N)"
        )
    if excluded:
        LOG.warning("%s on %s: %d target(s) left out, input size not a multiple of block size %d: %s",
                    method, spec.name, len(excluded), block, ", ".join(excluded[:5]) + (" ..." if len(excluded) > 5
                                                                                        else ""))
    return excluded


def _exact(names: list[str]) -> str | None:
    """peft's ``exclude_modules`` as one regex of exact names (a list would match by suffix: "conv1" would
    exclude every block's conv1, not only the stem)."""
    return "|".join(re.escape(n) for n in names) if names else None


# --- non-peft methods ------------------------------------------------------------------------------------


def _apply_fft(model: nn.Module, spec: BackboneSpec, options: MethodOptions, config: AdaptConfig) -> nn.Module:
    for parameter in model.parameters():
        parameter.requires_grad_(True)
    return model


def _apply_lp(model: nn.Module, spec: BackboneSpec, options: MethodOptions, config: AdaptConfig) -> nn.Module:
    if isinstance(options, LinearProbeOptions) and options.solver == "probe-logreg" and config.augment == "cxr":
        raise MedtransferError("lp's probe-logreg solver fits fixed embeddings, and --augment cxr changes them "
                               "every epoch: use --augment none, or --option solver=gradient")
    _freeze(model)
    return model


def _apply_bitfit(model: nn.Module, spec: BackboneSpec, options: MethodOptions, config: AdaptConfig) -> nn.Module:
    _freeze(model)
    found = 0
    for name, parameter in model.named_parameters():
        if _is_bias(name, spec):
            parameter.requires_grad_(True)
            found += 1
    if not found:
        raise MedtransferError(
            f"method 'bitfit' cannot apply to backbone {spec.name!r} (family {spec.family}): it has no parameter named "
            f"*.{spec.targets.bias_suffix}"
        )
    if config.train_norms:
        _unfreeze_norms(model, spec)
    return model


def _apply_ln_tune(model: nn.Module, spec: BackboneSpec, options: MethodOptions, config: AdaptConfig) -> nn.Module:
    _freeze(model)
    if not norm_modules(model, spec):
        raise MedtransferError(f"method 'ln-tune' cannot apply to backbone {spec.name!r} "
                               f"(family {spec.family}): it has no norm layers")
    _unfreeze_norms(model, spec)
    return model


def _declares_all(name: str, model: nn.Module, spec: BackboneSpec) -> bool:
    return True


def _declares_none(name: str, model: nn.Module, spec: BackboneSpec) -> bool:
    return False


def _declares_bitfit(name: str, model: nn.Module, spec: BackboneSpec) -> bool:
    return _is_bias(name, spec)


def _declares_norms(name: str, model: nn.Module, spec: BackboneSpec) -> bool:
    return name in _param_names_of(model, norm_modules(model, spec))


# --- peft methods --------------------------------------------------------------------------------------------


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
            _unfreeze_norms(wrapped, spec)
        return wrapped

    return apply


def callable_patterns(model: nn.Module, spec: BackboneSpec, method: str, patterns: tuple[str, ...]) -> tuple[str, ...]:
    """Leave out patterns that select only ``nn.MultiheadAttention.out_proj``: MHA reads that Linear's weight
    without calling it, so a peft layer wrapped around it never runs and its adapter would never train (open_clip
    ViTs; only LoRA, which wraps the whole MHA, adapts their attention). Named in a warning; an error if none is
    left."""
    inside = {f"{n}.out_proj" for n, m in model.named_modules() if isinstance(m, nn.MultiheadAttention)}
    dropped = [p for p in patterns if (names := resolve_targets(model, (p,))) and set(names) <= inside]
    if not dropped:
        return patterns
    kept = tuple(p for p in patterns if p not in dropped)
    if not kept:
        raise MedtransferError(f"method {method!r} cannot apply to backbone {spec.name!r} (family {spec.family}): "
                               "its only targets are MultiheadAttention.out_proj layers, which peft cannot wrap")
    LOG.warning("%s on %s: target(s) %s left out: nn.MultiheadAttention never calls its out_proj, so a peft "
                "layer there would not train; the attention stays frozen", method, spec.name, ", ".join(dropped))
    return kept


def _lora(peft, call: PeftCall):
    o = call.options
    return peft.LoraConfig(r=o.rank, lora_alpha=o.resolved_alpha, lora_dropout=o.dropout, target_modules=call.patterns)


def _dora(peft, call: PeftCall):
    o = call.options
    return peft.LoraConfig(r=o.rank, lora_alpha=o.resolved_alpha, lora_dropout=o.dropout, target_modules=call.patterns,
                           use_dora=True)


def _vera(peft, call: PeftCall):
    return peft.VeraConfig(r=call.options.rank, vera_dropout=call.options.dropout, target_modules=call.patterns,
                           projection_prng_key=call.config.seed)


def _ia3(peft, call: PeftCall):
    spec = call.spec
    feedforward = [p for p in spec.targets.mlp if p in call.patterns] if spec.family == "vit" else []
    return peft.IA3Config(target_modules=call.patterns, feedforward_modules=feedforward)


def _loha(peft, call: PeftCall):
    o = call.options
    return peft.LoHaConfig(r=o.rank, alpha=o.resolved_alpha, module_dropout=o.dropout, target_modules=call.patterns)


def _lokr(peft, call: PeftCall):
    o = call.options
    return peft.LoKrConfig(r=o.rank, alpha=o.resolved_alpha, module_dropout=o.dropout, target_modules=call.patterns)


def _oft(peft, call: PeftCall):
    o = call.options
    excluded = _blockwise(call.matched, o.block_size, "oft", call.spec)
    return peft.OFTConfig(r=0, oft_block_size=o.block_size, module_dropout=o.dropout, target_modules=call.patterns,
                          exclude_modules=_exact(excluded))


def _boft(peft, call: PeftCall):
    o = call.options
    excluded = _blockwise(call.matched, o.block_size, "boft", call.spec)
    return peft.BOFTConfig(boft_block_size=o.block_size, boft_n_butterfly_factor=o.butterfly_factor,
                           boft_dropout=o.dropout, target_modules=call.patterns, exclude_modules=_exact(excluded))


def declares_prefixes(prefixes: tuple[str, ...]):
    """``declares`` of a peft method: the parameters whose names carry one of its adapter prefixes."""

    def declares(name: str, model: nn.Module, spec: BackboneSpec) -> bool:
        return any(f".{p}" in name or name.startswith(p) for p in prefixes)

    return declares


def register_peft_method(*, name: str, description: str, trains: str, make_config: Callable[[Any, PeftCall], Any],
                         supported: tuple[type, ...], adapter_prefixes: tuple[str, ...],
                         options: type[PeftOptions] = PeftOptions, **traits: Any) -> AdaptMethod:
    """A peft method in one call: ``make_config(peft, call)`` returns its peft config; the targets it may wrap
    are ``supported``; its trained parameters are named by ``adapter_prefixes``; its options extend
    ``PeftOptions`` (the ``targets`` preset); ``traits`` as in :func:`register_method` (``paper=``,
    ``step_hook=`` ...)."""
    if not (isinstance(options, type) and issubclass(options, PeftOptions)):
        raise MedtransferError(f"peft method {name!r}: options must extend PeftOptions (the targets preset)")
    return register_method(
        name=name, description=description, trains=f"{trains} + head", default_lr=PEFT_LR,
        apply=peft_apply(make_config, name, supported), declares=declares_prefixes(adapter_prefixes),
        options=options, is_peft=True, adapter_prefixes=adapter_prefixes, supported=supported, **traits)


LINEAR_CONV = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)
LORA_TYPES = (*LINEAR_CONV, nn.MultiheadAttention)  # peft LoRA wraps MHA (open_clip ViTs), DoRA does not
PEFT_LR = 1e-4
FFT_LR = 1e-5

register_method(
    name="fft", description="full fine-tuning", trains="every backbone parameter + head",
    default_lr=FFT_LR, apply=_apply_fft, declares=_declares_all, norm_stats="train",
    paper="full fine-tuning (baseline)")
register_method(
    name="lp", description="linear probe: probe's logreg fitted on the frozen backbone's embeddings (adapt's "
    "own forward pass and preprocessing), or trained by gradient (--option solver=gradient)",
    trains="head only", default_lr=3e-2, apply=_apply_lp, declares=_declares_none, backbone_eval=True,
    default_augment="none", refit_with_val=True, options=LinearProbeOptions,
    # solver=gradient: the head trains on embeddings computed once, so epochs are cheap: train to convergence
    # (stopping on validation loss); 20 epochs at 1e-3 left it 0.17 MCC short of probe's logreg
    config_defaults={"epochs": 100, "early_stopping": "loss"},
    paper="linear probe (baseline)")
register_method(
    name="lp-ft", description="linear probe (logreg, C tuned on val) initialises the head, then full fine-tuning",
    trains="every backbone parameter + head (initialised from the probe)", default_lr=FFT_LR, apply=_apply_fft,
    declares=_declares_all, norm_stats="train", head_init="probe",
    paper="Kumar et al. 2022, arXiv:2202.10054")
register_method(
    name="bitfit", description="BitFit: biases only", trains="every *.bias + head", default_lr=PEFT_LR,
    apply=_apply_bitfit, declares=_declares_bitfit,
    paper="Zaken et al. 2022, arXiv:2106.10199")
register_method(
    name="ln-tune", description="normalisation layers only (LayerNorm; BatchNorm for CNNs, statistics too)",
    trains="norm-layer weights and biases + head", default_lr=PEFT_LR, apply=_apply_ln_tune,
    declares=_declares_norms, norm_stats="train",
    paper="Zhao et al. 2024, arXiv:2312.11420")
register_peft_method(
    name="lora", description="LoRA (peft), alpha = 2 x rank unless given", trains="LoRA A/B on the targets",
    make_config=_lora, supported=LORA_TYPES, adapter_prefixes=("lora_A", "lora_B"), options=LowRankOptions,
    paper="Hu et al. 2022, arXiv:2106.09685")
register_peft_method(
    name="dora", description="DoRA: weight-decomposed LoRA (peft use_dora)",
    trains="LoRA A/B + magnitude vectors on the targets", make_config=_dora, supported=LINEAR_CONV,
    adapter_prefixes=("lora_A", "lora_B", "lora_magnitude_vector"), options=LowRankOptions,
    paper="Liu et al. 2024, arXiv:2402.09353")
register_peft_method(
    name="vera", description="VeRA (peft): frozen shared random projections, trained scaling vectors",
    trains="VeRA lambda_b / lambda_d vectors", make_config=_vera, supported=(nn.Linear,),
    adapter_prefixes=("vera_lambda_",), options=VeraOptions,
    paper="Kopiczko et al. 2024, arXiv:2310.11454")
register_peft_method(
    name="ia3", description="(IA)^3 (peft): learned rescaling of target activations", trains="IA3 scaling vectors",
    make_config=_ia3, supported=(nn.Linear, nn.Conv2d, nn.Conv3d), adapter_prefixes=("ia3_l",),
    paper="Liu et al. 2022, arXiv:2205.05638")
register_peft_method(
    name="loha", description="LoHa (peft): low-rank Hadamard product", trains="LoHa factors on the targets",
    make_config=_loha, supported=(nn.Linear, nn.Conv1d, nn.Conv2d), adapter_prefixes=("hada_",),
    options=LowRankOptions,
    paper="Hyeon-Woo et al. 2022, arXiv:2108.06098")
register_peft_method(
    name="lokr", description="LoKr (peft): low-rank Kronecker product", trains="LoKr factors on the targets",
    make_config=_lokr, supported=(nn.Linear, nn.Conv1d, nn.Conv2d), adapter_prefixes=("lokr_",),
    options=LowRankOptions,
    paper="Yeh et al. 2024, arXiv:2309.14859")
register_peft_method(
    name="oft", description="OFT (peft): orthogonal fine-tuning, block size 32 (targets whose input it does not "
    "divide are skipped)", trains="OFT rotation blocks on the targets", make_config=_oft,
    supported=(nn.Linear, nn.Conv2d), adapter_prefixes=("oft_",), options=OftOptions,
    paper="Qiu et al. 2023, arXiv:2306.07280")
register_peft_method(
    name="boft", description="BOFT (peft): butterfly orthogonal fine-tuning, block size 4",
    trains="BOFT blocks and scales on the targets", make_config=_boft, supported=(nn.Linear, nn.Conv2d),
    adapter_prefixes=("boft_",), options=BoftOptions,
    paper="Liu et al. 2024, arXiv:2311.06243")

# The methods of the medical PEFT benchmarks (issue 15), one module each: peft's other tuners, the vision methods
# of ``adapt/vision/`` and the LoRA / VeRA rank presets. Imported last: they register through the functions above.
from medtransfer.adapt import (  # noqa: E402,F401
    peft_tuners,
    presets,  # noqa: E402,F401  (after lora and vera)
    vision,
)
