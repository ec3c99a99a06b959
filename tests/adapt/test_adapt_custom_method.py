"""Adding an adaptation method takes one registration: a throwaway method, registered by a fixture in this test
module (removed after), passes the method contract and runs through ``medtransfer adapt`` with its own option."""

from __future__ import annotations

import json
from dataclasses import dataclass

import pandas as pd
import pytest
from torch import nn

from medtransfer.adapt import METHODS, MethodOptions, get_method, option, register_method
from medtransfer.backbones import BackboneSpec
from medtransfer.data.manifest import load_manifest
from medtransfer.errors import MedtransferError
from medtransfer.splits import SplitSpec, make_splits, save_splits
from medtransfer.testing.backbones import TINY_CNN, TINY_VIT

NAME = "test-last-norm"


@dataclass(frozen=True)
class LastNormOptions(MethodOptions):
    """The last normalisation layer trains, its weight first multiplied by ``init_scale``."""

    init_scale: float = option(1.0, "factor on the last norm layer's weight before training",
                               rule=(lambda v: v > 0, "must be positive"))


def _last_norm(model: nn.Module) -> str:
    return [name for name, module in model.named_modules()
            if isinstance(module, (nn.LayerNorm, nn.modules.batchnorm._BatchNorm))][-1]


def _apply(model: nn.Module, spec: BackboneSpec, options: LastNormOptions, config) -> nn.Module:
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    norm = model.get_submodule(_last_norm(model))
    norm.weight.data.mul_(options.init_scale)
    for parameter in norm.parameters():
        parameter.requires_grad_(True)
    return model


def _declares(name: str, model: nn.Module, spec: BackboneSpec) -> bool:
    """From names alone (the contract compares this with the gradients)."""
    return name.startswith(_last_norm(model) + ".")


@pytest.fixture()
def last_norm_method():
    method = register_method(name=NAME, description="the last norm layers only (test)", trains="last norm + head",
                             default_lr=1e-3, apply=_apply, declares=_declares, options=LastNormOptions)
    yield method
    METHODS.pop(NAME)


def test_a_registered_method_passes_the_contract_and_leaves_after(last_norm_method, method_contract):
    for backbone in (TINY_VIT, TINY_CNN):
        method_contract(last_norm_method, backbone, {"init_scale": 0.5})
    assert last_norm_method.label(last_norm_method.make_options()) == NAME
    with pytest.raises(MedtransferError, match="--init-scale must be positive, got 0"):
        last_norm_method.make_options({"init_scale": 0})


def test_the_throwaway_method_is_gone_after_its_fixture():
    assert NAME not in METHODS
    with pytest.raises(MedtransferError, match=f"unknown adapt method '{NAME}'"):
        get_method(NAME)


def test_registration_refuses_a_second_name_and_bad_traits(last_norm_method):
    with pytest.raises(ValueError, match="registered twice"):
        register_method(name=NAME, description="again", trains="-", default_lr=1e-3, apply=_apply,
                        declares=_declares)
    with pytest.raises(ValueError, match="head_init must be one of"):
        register_method(name="test-bad", description="bad", trains="-", default_lr=1e-3, apply=_apply,
                        declares=_declares, head_init="zeros")
    assert "test-bad" not in METHODS


def test_a_registered_method_runs_through_the_cli(last_norm_method, small_manifest, tmp_path, cli):
    splits = save_splits(make_splits(load_manifest(small_manifest), SplitSpec(n_folds=2)), tmp_path / "splits.json")
    listed = cli("methods")
    assert listed.exit_code == 0 and NAME in listed.stdout
    result = cli("adapt", small_manifest, "--splits", splits, "--backbone", TINY_CNN, "--weights", "random",
                 "--method", NAME, "--option", "init_scale=0.5", "--regime", "full", "--folds", "0", "--epochs", "1",
                 "--out", tmp_path / "out")
    assert result.exit_code == 0, result.output
    table = pd.read_parquet(tmp_path / "out" / "results.parquet")
    assert list(table["method"]) == [NAME] and table["status"].iloc[0] == "ok"
    assert json.loads(table["hyperparameters"].iloc[0])["init_scale"] == 0.5
    assert table["trainable_params"].iloc[0] < table["total_params"].iloc[0]

    wrong = cli("adapt", small_manifest, "--splits", splits, "--backbone", TINY_CNN, "--weights", "random",
                "--method", NAME, "--rank", "4", "--out", tmp_path / "out")
    assert wrong.exit_code == 2
    assert wrong.stderr.strip() == f"error: method '{NAME}' has no option(s) rank; its options: init_scale"
