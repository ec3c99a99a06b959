"""The contract suite over the method registry: every registered method x every tiny backbone family is checked
unless the exclusions table below says why not, so a new method is tested the moment it registers."""

from __future__ import annotations

import dataclasses

import pytest

from medtransfer.adapt.methods import METHODS, get_method
from medtransfer.errors import MedtransferError
from medtransfer.testing.backbones import TINY_CNN, TINY_OPEN_CLIP, TINY_TIMM, TINY_VIT

# a ViT in each layout the registry builds (HF, open_clip with its fused nn.MultiheadAttention, timm), and a CNN
FAMILIES = {"vit": TINY_VIT, "open_clip": TINY_OPEN_CLIP, "timm": TINY_TIMM, "cnn": TINY_CNN}
VITS = ("vit", "open_clip", "timm")
_LINEAR_ONLY = "the peft tuner wraps nn.Linear only; a CNN's targets are convolutions"
_NEEDS_BLOCKS = "the method is defined on transformer blocks (tokens, attention and MLP branches)"
# (method, family) -> why the pair cannot work; the suite checks that it fails with one clear line instead
EXCLUDED = {
    **{(name, "cnn"): _LINEAR_ONLY for name in ("vera", "vera-r4", "vera-r8", "vera-r16", "fourierft", "vblora",
                                                 "randlora", "shira", "c3a", "miss", "delora", "gralora")},
    **{(name, "cnn"): _NEEDS_BLOCKS for name in ("vpt-shallow", "vpt-deep", "adaptformer", "adapter", "fact-tt",
                                                  "fact-tk")},
    **{("bn-tune", family): "BN-tuning needs BatchNorm layers; ViTs have LayerNorms (ln-tune)" for family in VITS},
}
# options the tiny backbones need (their layers are narrower than the defaults assume, 32 wide)
TINY_OPTIONS = {
    "oft": {"block_size": 8}, "lora": {"rank": 4}, "adaptformer": {"bottleneck": 8}, "fact-tt": {"rank": 4},
    "fact-tk": {"rank": 4}, "vblora": {"num_vectors": 16}, "fourierft": {"n_frequency": 64},
    "miss": {"rank": 8}, "randlora": {"rank": 4}, "shira": {"rank": 4}, "hira": {"rank": 4},
    "gralora": {"rank": 4}, "adalora": {"rank": 2, "init_rank": 4},
}
CASES = [(name, family) for name in METHODS for family in FAMILIES]


def test_exclusions_name_registered_methods_and_families():
    assert all(name in METHODS and family in FAMILIES for name, family in EXCLUDED)


@pytest.mark.parametrize(("method_name", "family"), CASES)
def test_every_method_trains_exactly_what_it_declares(method_name, family, method_contract):
    method = get_method(method_name)
    if (method_name, family) in EXCLUDED:
        with pytest.raises(MedtransferError, match=f"'{method_name}' cannot apply to backbone") as refused:
            method_contract(method, FAMILIES[family], TINY_OPTIONS.get(method_name))
        assert "\n" not in str(refused.value) and f"(family {family if family == 'cnn' else 'vit'})" in str(
            refused.value)
        return
    method_contract(method, FAMILIES[family], TINY_OPTIONS.get(method_name))


@pytest.mark.parametrize("method_name", list(METHODS))
def test_every_method_declares_typed_options_with_help(method_name):
    method = get_method(method_name)
    defaults = method.make_options()  # the defaults pass their own rules
    assert isinstance(defaults, method.options)
    for field in dataclasses.fields(method.options):
        assert field.metadata.get("help"), f"{method_name} option {field.name} has no help"
    assert method.label(defaults).startswith(method_name)
    assert method.default_lr > 0 and method.trains and method.description
    with pytest.raises(MedtransferError, match=f"method '{method_name}' has no option"):
        method.make_options({"no_such_option": 1})
