"""Which modules a method wraps: a backbone's target patterns, checked before wrapping, and the sizes of the matches.

Targets come from the backbone registry (``BackboneSpec.targets``) through a peft method's ``targets`` preset
(``PeftOptions``; default attention + MLP linears for ViTs, convolutions for CNNs). Before wrapping, every pattern
must match at least one module (peft's rule: ``name == t or name.endswith("." + t)``) and every matched module must
be a type the method supports. Shared by the method files of ``adapt/methods/``; imports no method.
"""

from __future__ import annotations

import logging
import math
import re

from torch import nn

from medtransfer.backbones.registry import (
    DEFAULT_TARGET_PRESET,
    BackboneSpec,
    matches_target,
    preset_patterns,
    resolve_targets,
)
from medtransfer.errors import MedtransferError

LOG = logging.getLogger("medtransfer.adapt")


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


def _in_features(module: nn.Module) -> int | None:
    if isinstance(module, nn.Linear):
        return module.in_features
    if isinstance(module, nn.Conv2d):
        return module.in_channels // module.groups * math.prod(module.kernel_size)
    return None


def blockwise_excluded(modules: dict[str, nn.Module], block: int, method: str, spec: BackboneSpec) -> list[str]:
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


def exact_names(names: list[str]) -> str | None:
    """peft's ``exclude_modules`` as one regex of exact names (a list would match by suffix: "conv1" would
    exclude every block's conv1, not only the stem)."""
    return "|".join(re.escape(n) for n in names) if names else None


def common_divisor(matched: dict[str, nn.Module], cap: int, method: str, what: str) -> int:
    """The largest size <= ``cap`` dividing every target's in and out features (VB-LoRA's vector length, C3A's
    block size must divide them); a warning when it is smaller than asked."""
    size = 0
    for module in matched.values():
        for n in (module.in_features, module.out_features):
            size = math.gcd(size, n)
    chosen = next(d for d in range(min(cap, size), 0, -1) if size % d == 0)
    if chosen != cap:
        LOG.warning("%s: %s %d does not divide every target's sizes; using %d", method, what, cap, chosen)
    return chosen
