"""The adaptation-method registry: each method declares what it trains and how it wraps a backbone.

A method's ``apply(backbone, spec, config)`` freezes / wraps the embedding model and returns it (a
``peft.PeftModel`` for the ``peft`` methods); the classification head added by ``adapt.model`` is always
trainable. ``declared(model)`` names the parameters the method promises to train, computed from names
alone (not from ``requires_grad``), so a test can check that exactly those receive gradients.

Targets come from the backbone registry (``BackboneSpec.targets``): attention + MLP linears for ViTs,
convolutions for CNNs. Before wrapping, every pattern must match at least one module (peft's rule:
``name == t or name.endswith("." + t)``) and every matched module must be a type the method supports.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field, replace

from torch import nn

from medtransfer.adapt.config import AdaptConfig
from medtransfer.backbones.registry import BackboneSpec, matches_target, resolve_targets
from medtransfer.errors import MedtransferError, first_line
from medtransfer.registry import Registry

NORM_TYPES = (nn.LayerNorm, nn.GroupNorm, nn.modules.batchnorm._BatchNorm)
HEAD_PREFIX = "head."  # parameter names of the classification head (``Classifier.head``)
LOG = logging.getLogger("medtransfer.adapt")


@dataclass(frozen=True)
class AdaptMethod:
    name: str
    description: str
    trains: str  # what a person reads: which parameters this method trains
    default_lr: float
    apply: Callable[[nn.Module, BackboneSpec, AdaptConfig], nn.Module] = field(repr=False)
    # names (of the *backbone* after apply) this method trains; the head is always trained on top
    declares: Callable[[str, nn.Module, BackboneSpec], bool] = field(repr=False)
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
    uses_rank: bool = False
    refit_with_val: bool = False  # full regime: retrain on train + val for the epochs val chose (as probe does)
    # AdaptConfig fields this method needs other than the global defaults (options the user gives still win)
    config_defaults: dict = field(default_factory=dict)
    paper: str = ""  # where the method (and its defaults) come from
    options: type | None = None  # typed options dataclass read from AdaptConfig.extra (vision methods)
    # closed-form trainable-parameter count of the backbone after apply, from the method's definition
    expected_trainable: Callable[[nn.Module, BackboneSpec, object], int] | None = field(default=None, repr=False)
    # called after every optimizer step with (backbone, step, total_steps): AdaLoRA's rank-budget schedule
    step_hook: Callable[[nn.Module, int, int], None] | None = field(default=None, repr=False)
    label_base: str = ""  # presets (lora-r4) label their rows as their base method does (lora-r4)

    def label(self, config: AdaptConfig) -> str:
        """The results table's ``method`` value: ranks are part of it so that r4/r8/r16 rows coexist."""
        base = self.label_base or self.name
        return f"{base}-r{config.rank}" if self.uses_rank else base


METHODS: Registry[AdaptMethod] = Registry("adapt method")


def register_method(method: AdaptMethod) -> AdaptMethod:
    return METHODS.add(method)


def get_method(name: str) -> AdaptMethod:
    return METHODS.lookup(name)


def method_table() -> list[dict]:
    return [{"name": m.name, "lr": m.default_lr, "trains": m.trains, "description": m.description,
             "paper": m.paper or PAPERS.get(m.name, "")} for m in METHODS.values()]


# --- helpers -----------------------------------------------------------------------------------------------


def target_patterns(spec: BackboneSpec, method: str, supported: tuple[type, ...] = ()) -> tuple[str, ...]:
    """attention + MLP patterns for ViTs, convolution patterns for CNNs; an error when the family has none.

    A method that cannot wrap a fused attention module (only LoRA wraps ``nn.MultiheadAttention``) gets the
    backbone's Linear-only attention patterns (``targets.attention_linear``) instead.
    """
    targets = spec.targets
    attention = targets.attention
    if targets.attention_linear and nn.MultiheadAttention not in supported:
        attention = targets.attention_linear
    patterns = attention + targets.mlp if spec.family == "vit" else targets.conv
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
                    f"method {method!r} cannot apply to backbone {spec.name!r}: target {name!r} is a "
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
            f"method {method!r} cannot apply to backbone {spec.name!r}: no target's input size {sizes} is a "
            f"multiple of the block size {block}; choose another block size (AdaptConfig.extra)"
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


def _apply_fft(model: nn.Module, spec: BackboneSpec, config: AdaptConfig) -> nn.Module:
    for parameter in model.parameters():
        parameter.requires_grad_(True)
    return model


def _apply_lp(model: nn.Module, spec: BackboneSpec, config: AdaptConfig) -> nn.Module:
    _freeze(model)
    return model


def _apply_bitfit(model: nn.Module, spec: BackboneSpec, config: AdaptConfig) -> nn.Module:
    _freeze(model)
    found = 0
    for name, parameter in model.named_parameters():
        if _is_bias(name, spec):
            parameter.requires_grad_(True)
            found += 1
    if not found:
        raise MedtransferError(
            f"method 'bitfit' cannot apply to backbone {spec.name!r}: it has no parameter named "
            f"*.{spec.targets.bias_suffix}"
        )
    if config.train_norms:
        _unfreeze_norms(model, spec)
    return model


def _apply_ln_tune(model: nn.Module, spec: BackboneSpec, config: AdaptConfig) -> nn.Module:
    _freeze(model)
    if not norm_modules(model, spec):
        raise MedtransferError(f"method 'ln-tune' cannot apply to backbone {spec.name!r}: it has no norm layers")
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


def _peft_apply(make_config: Callable, method: str, supported: tuple[type, ...]):
    def apply(model: nn.Module, spec: BackboneSpec, config: AdaptConfig) -> nn.Module:
        import peft

        patterns = _callable_patterns(model, spec, method, target_patterns(spec, method, supported))
        matched = check_targets(model, spec, method, patterns, supported)
        peft_config = make_config(peft, list(patterns), matched, spec, config)
        try:
            wrapped = peft.get_peft_model(model, peft_config)
        except (ValueError, TypeError, RuntimeError) as exc:  # peft's "unsupported layer" errors are RuntimeErrors
            raise MedtransferError(
                f"method {method!r} cannot apply to backbone {spec.name!r}: peft says: {first_line(exc, 200)}"
            ) from exc
        if config.train_norms:
            _unfreeze_norms(wrapped, spec)
        return wrapped

    return apply


def _callable_patterns(model: nn.Module, spec: BackboneSpec, method: str, patterns: tuple[str, ...]) -> tuple[str, ...]:
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


def _lora(peft, patterns, matched, spec, config):
    return peft.LoraConfig(r=config.rank, lora_alpha=config.lora_alpha, lora_dropout=config.dropout,
                           target_modules=patterns)


def _dora(peft, patterns, matched, spec, config):
    return peft.LoraConfig(r=config.rank, lora_alpha=config.lora_alpha, lora_dropout=config.dropout,
                           target_modules=patterns, use_dora=True)


def _vera(peft, patterns, matched, spec, config):
    return peft.VeraConfig(r=config.rank, vera_dropout=config.dropout, target_modules=patterns,
                           projection_prng_key=config.seed)


def _ia3(peft, patterns, matched, spec, config):
    feedforward = [p for p in spec.targets.mlp if p in patterns] if spec.family == "vit" else []
    return peft.IA3Config(target_modules=patterns, feedforward_modules=feedforward)


def _loha(peft, patterns, matched, spec, config):
    return peft.LoHaConfig(r=config.rank, alpha=config.lora_alpha, module_dropout=config.dropout,
                           target_modules=patterns)


def _lokr(peft, patterns, matched, spec, config):
    return peft.LoKrConfig(r=config.rank, alpha=config.lora_alpha, module_dropout=config.dropout,
                           target_modules=patterns)


def _oft(peft, patterns, matched, spec, config):
    size = int(config.extra.get("oft_block_size", 32))
    excluded = _blockwise(matched, size, "oft", spec)
    return peft.OFTConfig(r=0, oft_block_size=size, module_dropout=config.dropout, target_modules=patterns,
                          exclude_modules=_exact(excluded))


def _boft(peft, patterns, matched, spec, config):
    size = int(config.extra.get("boft_block_size", 4))
    excluded = _blockwise(matched, size, "boft", spec)
    return peft.BOFTConfig(boft_block_size=size, boft_n_butterfly_factor=int(config.extra.get("boft_butterfly", 1)),
                           boft_dropout=config.dropout, target_modules=patterns, exclude_modules=_exact(excluded))


def _declares_prefixes(prefixes: tuple[str, ...]):
    def declares(name: str, model: nn.Module, spec: BackboneSpec) -> bool:
        return any(f".{p}" in name or name.startswith(p) for p in prefixes)

    return declares


LINEAR_CONV = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)
LORA_TYPES = (*LINEAR_CONV, nn.MultiheadAttention)  # peft LoRA wraps MHA (open_clip ViTs), DoRA does not
PEFT_LR = 1e-4
FFT_LR = 1e-5

register_method(AdaptMethod(
    name="fft", description="full fine-tuning", trains="every backbone parameter + head",
    default_lr=FFT_LR, apply=_apply_fft, declares=_declares_all, norm_stats="train"))
register_method(AdaptMethod(
    name="lp", description="linear probe in the training loop (frozen backbone, features standardised on train)",
    trains="head only", default_lr=3e-2, apply=_apply_lp, declares=_declares_none, backbone_eval=True,
    default_augment="none", refit_with_val=True,
    # the head trains on embeddings computed once, so epochs are cheap: train to convergence (stopping on
    # validation loss) so that lp lands where probe's logreg does; 20 epochs at 1e-3 left it 0.17 MCC short
    config_defaults={"epochs": 100, "early_stopping": "loss"}))
register_method(AdaptMethod(
    name="lp-ft", description="linear probe (logreg, C tuned on val) initialises the head, then full fine-tuning",
    trains="every backbone parameter + head (initialised from the probe)", default_lr=FFT_LR, apply=_apply_fft,
    declares=_declares_all, norm_stats="train", head_init="probe"))
register_method(AdaptMethod(
    name="bitfit", description="BitFit: biases only", trains="every *.bias + head", default_lr=PEFT_LR,
    apply=_apply_bitfit, declares=_declares_bitfit))
register_method(AdaptMethod(
    name="ln-tune", description="normalisation layers only (LayerNorm; BatchNorm for CNNs, statistics too)",
    trains="norm-layer weights and biases + head", default_lr=PEFT_LR, apply=_apply_ln_tune,
    declares=_declares_norms, norm_stats="train"))
_PEFT = [
    ("lora", "LoRA (peft), alpha = 2 x rank unless given", "LoRA A/B on the targets", _lora, LORA_TYPES,
     ("lora_A", "lora_B"), True),
    ("dora", "DoRA: weight-decomposed LoRA (peft use_dora)", "LoRA A/B + magnitude vectors on the targets", _dora,
     LINEAR_CONV, ("lora_A", "lora_B", "lora_magnitude_vector"), True),
    ("vera", "VeRA (peft): frozen shared random projections, trained scaling vectors",
     "VeRA lambda_b / lambda_d vectors", _vera, (nn.Linear,), ("vera_lambda_",), True),
    ("ia3", "(IA)^3 (peft): learned rescaling of target activations", "IA3 scaling vectors", _ia3,
     (nn.Linear, nn.Conv2d, nn.Conv3d), ("ia3_l",), False),
    ("loha", "LoHa (peft): low-rank Hadamard product", "LoHa factors on the targets", _loha,
     (nn.Linear, nn.Conv1d, nn.Conv2d), ("hada_",), True),
    ("lokr", "LoKr (peft): low-rank Kronecker product", "LoKr factors on the targets", _lokr,
     (nn.Linear, nn.Conv1d, nn.Conv2d), ("lokr_",), True),
    ("oft", "OFT (peft): orthogonal fine-tuning, block size 32 (targets whose input it does not divide are skipped)",
     "OFT rotation blocks on the targets", _oft, (nn.Linear, nn.Conv2d), ("oft_",), False),
    ("boft", "BOFT (peft): butterfly orthogonal fine-tuning, block size 4", "BOFT blocks and scales on the targets",
     _boft, (nn.Linear, nn.Conv2d), ("boft_",), False),
]
for _name, _description, _trains, _make, _supported, _prefixes, _rank in _PEFT:
    register_method(AdaptMethod(
        name=_name, description=_description, trains=f"{_trains} + head", default_lr=PEFT_LR,
        apply=_peft_apply(_make, _name, _supported), declares=_declares_prefixes(_prefixes), is_peft=True,
        adapter_prefixes=_prefixes, supported=_supported, uses_rank=_rank))


# --- issue 15: the methods of the medical PEFT benchmarks ---------------------------------------------------
# One block, so that it ports to the keyword registration API as a unit. Vision-specific methods live in
# ``adapt/vision/`` (one module each); the rest are peft tuners used as peft implements them.

from medtransfer.adapt.vision import adapters as _adapters  # noqa: E402
from medtransfer.adapt.vision import adaptformer as _adaptformer  # noqa: E402
from medtransfer.adapt.vision import bn_tune as _bn_tune  # noqa: E402
from medtransfer.adapt.vision import fact as _fact  # noqa: E402
from medtransfer.adapt.vision import options_from  # noqa: E402
from medtransfer.adapt.vision import ssf as _ssf  # noqa: E402
from medtransfer.adapt.vision import vpt as _vpt  # noqa: E402

PAPERS = {  # the existing methods' sources, for ``medtransfer methods``
    "fft": "full fine-tuning", "lp": "linear probe", "lp-ft": "Kumar et al. 2022, arXiv:2202.10054",
    "bitfit": "Zaken et al. 2022, arXiv:2106.10199", "ln-tune": "Zhao et al. 2024, arXiv:2312.11420",
    "lora": "Hu et al. 2022, arXiv:2106.09685", "dora": "Liu et al. 2024, arXiv:2402.09353",
    "vera": "Kopiczko et al. 2024, arXiv:2310.11454", "ia3": "Liu et al. 2022, arXiv:2205.05638",
    "loha": "Hyeon-Woo et al. 2022, arXiv:2108.06098", "lokr": "Yeh et al. 2024, arXiv:2309.14859",
    "oft": "Qiu et al. 2023, arXiv:2306.07280", "boft": "Liu et al. 2024, arXiv:2311.06243",
}


def _vision_apply(apply: Callable, options_cls: type):
    def wrapped(model: nn.Module, spec: BackboneSpec, config: AdaptConfig) -> nn.Module:
        return apply(model, spec, options_from(config.extra, options_cls))

    return wrapped


_VISION = [  # name, description, trains, paper, module apply, declares, expected, options, norm_stats
    ("vpt-shallow", "VPT-shallow: prompt tokens after the class token at the input", "input prompt tokens",
     "Jia et al. 2022, arXiv:2203.12119", _vpt.apply_shallow, _vpt.declares, _vpt.expected_shallow, _vpt.Options,
     "frozen"),
    ("vpt-deep", "VPT-deep: new prompt tokens at every block", "per-block prompt tokens",
     "Jia et al. 2022, arXiv:2203.12119", _vpt.apply_deep, _vpt.declares, _vpt.expected_deep, _vpt.Options,
     "frozen"),
    ("adaptformer", "AdaptFormer: parallel bottleneck adapter beside each MLP, scale 0.1",
     "parallel MLP adapters", "Chen et al. 2022, arXiv:2205.13535", _adaptformer.apply, _adaptformer.declares,
     _adaptformer.expected_trainable, _adaptformer.Options, "frozen"),
    ("adapter", "Houlsby adapters: sequential bottlenecks after attention and MLP (+ layer norms)",
     "sequential adapters + block LayerNorms", "Houlsby et al. 2019, arXiv:1902.00751", _adapters.apply,
     _adapters.declares, _adapters.expected_trainable, _adapters.Options, "frozen"),
    ("ssf", "SSF: scale and shift after every operation", "per-channel scales and shifts",
     "Lian et al. 2022, arXiv:2210.08823", _ssf.apply, _ssf.declares, _ssf.expected_trainable, _ssf.Options,
     "frozen"),
    ("fact-tt", "FacT-TT: shared low-rank factors, a core per weight", "shared U, V + per-weight cores",
     "Jie & Deng 2023, arXiv:2212.03145", _fact.apply_tt, _fact.declares, _fact.expected_tt, _fact.Options,
     "frozen"),
    ("fact-tk", "FacT-TK: shared low-rank factors and one shared core tensor", "shared U, V, C, P",
     "Jie & Deng 2023, arXiv:2212.03145", _fact.apply_tk, _fact.declares, _fact.expected_tk, _fact.TKOptions,
     "frozen"),
    ("bn-tune", "BN-tuning (CNNs): BatchNorm affine parameters and running statistics", "BatchNorm layers",
     "Dutt et al. 2023, arXiv:2305.08252", _bn_tune.apply, _bn_tune.declares, _bn_tune.expected_trainable,
     _bn_tune.Options, "train"),
]
for _name, _description, _trains, _paper, _apply, _declares, _expected, _options, _stats in _VISION:
    register_method(AdaptMethod(
        name=_name, description=_description, trains=f"{_trains} + head", default_lr=PEFT_LR,
        apply=_vision_apply(_apply, _options), declares=_declares, paper=_paper, options=_options,
        expected_trainable=_expected, norm_stats=_stats))


def _gcd_of_targets(matched: dict[str, nn.Module], cap: int) -> int:
    """The largest size <= ``cap`` dividing every target's in and out features (VB-LoRA / C3A blocks)."""
    size = 0
    for module in matched.values():
        for n in (module.in_features, module.out_features):
            size = math.gcd(size, n)
    while size > cap:
        size = next(d for d in range(cap, 0, -1) if size % d == 0)
    return size


# AdaLoRA: its rank budget needs the run's step count, only known when training starts. The schedule follows
# peft's AdaLoraConfig docstring example (tinit 10, tfinal 20 of total_step 100): 10 % warmup, 20 % final.
ADALORA_TINIT, ADALORA_TFINAL = 0.1, 0.2


def _adalora(peft, patterns, matched, spec, config):
    # init_r / target_r: peft's defaults 12 / 8, i.e. start at 1.5 x the target rank
    return peft.AdaLoraConfig(target_r=config.rank, init_r=math.ceil(1.5 * config.rank), lora_alpha=config.lora_alpha,
                              lora_dropout=config.dropout, target_modules=patterns, total_step=max(2, config.epochs))


def _adalora_step(backbone: nn.Module, step: int, total_steps: int) -> None:
    """Called after each optimizer step, before the gradients are cleared (peft's ``update_and_allocate`` rule)."""
    peft_config = backbone.peft_config["default"]
    if peft_config.total_step != total_steps:
        peft_config.total_step = total_steps
        peft_config.tinit = int(ADALORA_TINIT * total_steps)
        peft_config.tfinal = int(ADALORA_TFINAL * total_steps)
    backbone.base_model.update_and_allocate(step)


def _fourierft(peft, patterns, matched, spec, config):
    n_frequency = int(config.extra.get("fourierft_n_frequency", 1000))  # peft default 1000, scaling 150
    smallest = min(m.in_features * m.out_features for m in matched.values())
    return peft.FourierFTConfig(target_modules=patterns, n_frequency=min(n_frequency, smallest),
                                random_loc_seed=config.seed + 777)


def _hra(peft, patterns, matched, spec, config):
    return peft.HRAConfig(r=config.rank, target_modules=patterns)


def _vblora(peft, patterns, matched, spec, config):
    # peft's defaults: r 4, 256 vectors of length 256; the length must divide every target's sizes
    length = _gcd_of_targets(matched, int(config.extra.get("vblora_vector_length", 256)))
    return peft.VBLoRAConfig(r=config.rank, target_modules=patterns, vector_length=length,
                             num_vectors=int(config.extra.get("vblora_num_vectors", 256)))


def _randlora(peft, patterns, matched, spec, config):
    # peft's defaults r 32, alpha 640: alpha = 20 x r
    return peft.RandLoraConfig(r=config.rank, randlora_alpha=20 * config.rank, target_modules=patterns,
                               projection_prng_key=config.seed)


def _shira(peft, patterns, matched, spec, config):
    return peft.ShiraConfig(r=config.rank, target_modules=patterns, random_seed=config.seed)


def _c3a(peft, patterns, matched, spec, config):
    size = _gcd_of_targets(matched, int(config.extra.get("c3a_block_size", 256)))  # peft default 256
    return peft.C3AConfig(block_size=size, target_modules=patterns)


def _miss(peft, patterns, matched, spec, config):
    return peft.MissConfig(r=config.rank, target_modules=patterns)


def _hira(peft, patterns, matched, spec, config):
    return peft.HiraConfig(r=config.rank, target_modules=patterns, hira_dropout=config.dropout)


def _delora(peft, patterns, matched, spec, config):
    return peft.DeloraConfig(r=config.rank, target_modules=patterns)


def _gralora(peft, patterns, matched, spec, config):
    return peft.GraloraConfig(r=config.rank, target_modules=patterns)


_MORE_PEFT = [  # name, description, trains, make, supported, prefixes, uses rank, paper, step hook
    ("adalora", "AdaLoRA (peft): SVD-form LoRA with a rank budget pruned over training", "AdaLoRA P, Lambda, Q",
     _adalora, (nn.Linear, nn.Conv2d), ("lora_",), True, "Zhang et al. 2023, arXiv:2303.10512", _adalora_step),
    ("fourierft", "FourierFT (peft): sparse spectral coefficients of the weight update", "Fourier coefficients",
     _fourierft, (nn.Linear,), ("fourierft_",), False, "Gao et al. 2024, arXiv:2405.03003", None),
    ("hra", "HRA (peft): Householder reflection adaptation", "Householder vectors", _hra, (nn.Linear, nn.Conv2d),
     ("hra_",), True, "Yuan et al. 2024, arXiv:2405.17484", None),
    ("vblora", "VB-LoRA (peft): LoRA factors composed from a shared vector bank", "vector bank + logits",
     _vblora, (nn.Linear,), ("vblora_",), True, "Li et al. 2024, arXiv:2405.15179", None),
    ("randlora", "RandLoRA (peft): full-rank update from shared random bases", "RandLoRA scaling vectors",
     _randlora, (nn.Linear,), ("randlora_",), True, "Albert et al. 2025, arXiv:2502.00987", None),
    ("shira", "SHiRA (peft): sparse high-rank adapter on a random mask", "sparse weight entries", _shira,
     (nn.Linear,), ("shira_",), True, "Bhardwaj et al. 2024, arXiv:2406.13175", None),
    ("c3a", "C3A (peft): circular-convolution adaptation", "circulant kernels", _c3a, (nn.Linear,), ("c3a_",), False,
     "Chen et al. 2024, arXiv:2407.19342", None),
    ("miss", "MiSS (peft): matrix shard sharing", "shared shards", _miss, (nn.Linear,), ("miss_",), True,
     "Kang & Yin 2024, arXiv:2409.15371", None),
    ("hira", "HiRA (peft): Hadamard high-rank adaptation", "HiRA factors", _hira, (nn.Linear, nn.Conv2d),
     ("hira_",), True, "Huang et al. 2025, ICLR (openreview TwJrTz9cRS)", None),
    ("delora", "DeLoRA (peft): decoupled low-rank adaptation (bounded norm)", "DeLoRA factors + norms", _delora,
     (nn.Linear,), ("delora_",), True, "Bini et al. 2025, arXiv:2503.18225", None),
    ("gralora", "GraLoRA (peft): granular (block-wise) LoRA", "GraLoRA blocks", _gralora, (nn.Linear,),
     ("gralora_",), True, "Jung et al. 2025, arXiv:2505.20355", None),
]
for _name, _description, _trains, _make, _supported, _prefixes, _rank, _paper, _hook in _MORE_PEFT:
    register_method(AdaptMethod(
        name=_name, description=_description, trains=f"{_trains} + head", default_lr=PEFT_LR,
        apply=_peft_apply(_make, _name, _supported), declares=_declares_prefixes(_prefixes), is_peft=True,
        adapter_prefixes=_prefixes, supported=_supported, uses_rank=_rank, paper=_paper, step_hook=_hook))

# presets the medical PEFT benchmark lists: LoRA and VeRA at ranks 4, 8 and 16 (rows labelled lora-r4, ...)
for _base in ("lora", "vera"):
    for _r in (4, 8, 16):
        _method = get_method(_base)
        register_method(replace(_method, name=f"{_base}-r{_r}", description=f"{_method.description}; rank {_r}",
                                config_defaults={**_method.config_defaults, "rank": _r}, label_base=_base,
                                paper=PAPERS[_base]))
