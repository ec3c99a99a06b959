"""The contract suite over the method registry: every registered method x every tiny backbone family is checked
unless the exclusions table below says why not, so a new method is tested the moment it registers."""

from __future__ import annotations

import dataclasses

import pytest

from adapt_support import TINY_CNN, TINY_VIT
from medtransfer.adapt.methods import METHODS, get_method
from medtransfer.errors import MedtransferError

FAMILIES = {"vit": TINY_VIT, "cnn": TINY_CNN}
# (method, family) -> why the pair cannot work; the suite checks that it fails with one clear line instead
EXCLUDED = {
    ("vera", "cnn"): "peft's VeRA wraps nn.Linear only; a CNN's targets are convolutions",
}
# options the tiny backbones need (their layers are narrower than the defaults assume)
TINY_OPTIONS = {"oft": {"block_size": 8}, "lora": {"rank": 4}}
CASES = [(name, family) for name in METHODS for family in FAMILIES]


def test_exclusions_name_registered_methods_and_families():
    assert all(name in METHODS and family in FAMILIES for name, family in EXCLUDED)


@pytest.mark.parametrize(("method_name", "family"), CASES)
def test_every_method_trains_exactly_what_it_declares(method_name, family, method_contract):
    method = get_method(method_name)
    if (method_name, family) in EXCLUDED:
        with pytest.raises(MedtransferError, match=f"'{method_name}' cannot apply to backbone"):
            method_contract(method, FAMILIES[family], TINY_OPTIONS.get(method_name))
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
