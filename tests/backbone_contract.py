"""The backbone contract (no tests here): what every registry entry must satisfy, as one function that the
registry-driven test (tests/backbones/test_backbone_contract.py) runs over every entry, and that a new entry
passes before it is merged. Like scikit-learn's ``check_estimator``: one suite, every extension."""

from __future__ import annotations

import pytest
import torch
from peft import LoraConfig
from peft.tuners.tuners_utils import check_target_module_exists
from torch import nn

from medtransfer.backbones import REGISTRY, count_parameters, load_backbone

# Entries the registry-driven contract test leaves out, with the reason and where they are checked instead.
EXCLUDED = {
    "dinov2-l": "ViT-L, ~300M parameters: too slow for every run; test_backbones.py::test_vit_l_entries (slow)",
    "clip-l": "ViT-L, ~300M parameters: too slow for every run; test_backbones.py::test_vit_l_entries (slow)",
}
RESIZES = ("squash", "center-crop", "pad-square")
INTERPOLATIONS = ("bilinear", "bicubic")
CHANNELS = ("rgb", "grayscale")
NORM_TYPES = (nn.LayerNorm, nn.BatchNorm2d, nn.GroupNorm)

_CACHE: dict[str, object] = {}


def contract_entries() -> list[str]:
    """Every registered backbone but the explicit exclusions: a new entry is tested without editing a list."""
    return [name for name in REGISTRY if name not in EXCLUDED]


def random_backbone(name: str):
    """Each registered entry is built once per session (random weights); tests that modify it deep-copy."""
    if name not in _CACHE:
        _CACHE[name] = load_backbone(name, "random")
    return _CACHE[name]


def batch(spec, n: int = 2, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    s = spec.preprocessing.input_size
    return torch.randn(n, 3, s, s, generator=g)


def embed(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    model.eval()
    with torch.no_grad():
        return model(x)


def _resolved(model: nn.Module, pattern: str) -> list[tuple[str, nn.Module]]:
    """Modules peft would select for ``target_modules=[pattern]`` (peft's own matching function)."""
    cfg = LoraConfig(target_modules=[pattern])
    return [(n, m) for n, m in model.named_modules() if n and check_target_module_exists(cfg, n)]


def check_targets(model: nn.Module, spec) -> None:
    t = spec.targets
    if spec.family == "vit":
        assert t.attention and t.mlp and not t.conv
    else:
        assert t.conv
    for group, kinds in (
        (t.attention, (nn.Linear, nn.MultiheadAttention)),
        (t.attention_linear, (nn.Linear,)),
        (t.mlp, (nn.Linear,)),
        (t.conv, (nn.Conv2d,)),
        (t.norm, NORM_TYPES),
    ):
        for pattern in group:
            hits = _resolved(model, pattern)
            assert hits, f"{spec.name}: PEFT target {pattern!r} matches no module"
            wrong = [n for n, m in hits if not isinstance(m, kinds)]
            assert not wrong, f"{spec.name}: {pattern!r} also selects {wrong[:3]}"
    assert t.norm, "LN-tuning needs norm targets"
    assert any(n.endswith("." + t.bias_suffix) for n, _ in model.named_parameters()), "BitFit needs biases"


def check_backbone_contract(loaded) -> None:
    """A built entry (random weights): declared preprocessing, embedding width, parameter counts and PEFT
    targets all hold for the model that extract and adapt will run."""
    spec = loaded.spec
    prep = spec.preprocessing
    assert spec.family in ("cnn", "vit") and spec.source and spec.architecture and spec.embedding_kind
    assert prep.resize in RESIZES and prep.interpolation in INTERPOLATIONS and prep.channels in CHANNELS
    assert len(prep.mean) == len(prep.std) == 3 and min(prep.std) > 0 and prep.input_size >= 8
    n_batch = 1 if prep.input_size > 224 else 2
    out = embed(loaded.model, batch(spec, n_batch))
    assert out.shape == (n_batch, spec.embed_dim), f"{spec.name}: output {tuple(out.shape)} vs embed_dim"
    assert torch.isfinite(out).all()
    n = count_parameters(loaded.model)
    assert n / 1e6 == pytest.approx(spec.n_params_m, rel=0.005, abs=5e-4), "declared n_params_m is stale"
    if spec.published_params_m is not None:
        comparable = (n + spec.published_params_delta) / 1e6
        tolerance = spec.published_tolerance * spec.published_params_m
        assert abs(comparable - spec.published_params_m) <= tolerance, (comparable, spec.name)
        assert spec.published_tolerance <= 0.06
    assert loaded.weights_source.startswith("random")
    check_targets(loaded.model, spec)
