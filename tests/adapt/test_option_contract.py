"""Issue 28.2: an option given is applied or refused, never dropped. `adapt --method lora --option rank=4` trained
and recorded rank 8 (the unset --rank flag overwrote it) and `--option dropout=0.3` recorded 0.0. Every option of
every registered method goes the CLI's way here (NAME=VALUE text, merged with the dedicated flags) and must come
out in the options the run uses and in the row's ``hyperparameters`` record, or be refused in one line."""

from __future__ import annotations

import dataclasses
import json

import pandas as pd
import pytest

from medtransfer.adapt.methods import METHODS, get_method
from medtransfer.adapt.options import merge_option_values
from medtransfer.errors import MedtransferError
from medtransfer.testing.backbones import TINY_VIT

FLAGS = ("rank", "targets", "alpha", "dropout")  # options with a flag of their own on `adapt`


def _other_value(field: dataclasses.Field):
    """A value other than the default, of the field's type (text for strings: the default, always allowed)."""
    kind, default = str(field.type).split(" |")[0], field.default
    if kind == "bool":
        return not default
    if kind == "int":
        return 3 if default in (None, 0) else default * 2
    if kind == "float":
        if default is None:
            return 0.5
        return 0.3 if 0 <= default < 1 else default * 2
    return default


CASES = [(name, f.name) for name in sorted(METHODS) for f in dataclasses.fields(get_method(name).options)]


@pytest.mark.parametrize(("method_name", "option_name"), CASES)
def test_every_option_given_as_text_is_applied_or_refused(method_name, option_name):
    method = get_method(method_name)
    field = next(f for f in dataclasses.fields(method.options) if f.name == option_name)
    value = _other_value(field)
    flags = {name: None for name in FLAGS}  # what the CLI passes when the dedicated flags are not given
    values = merge_option_values({option_name: str(value)}, flags)
    try:
        options = method.make_options(values)
    except MedtransferError as refused:  # refused (a rule, a combination): one line naming the option
        assert "\n" not in str(refused) and option_name.replace("_", "-") in str(refused).replace("_", "-")
        return
    assert getattr(options, option_name) == value, (method_name, option_name)
    assert options.record()[option_name] == value
    assert json.loads(options.to_json())[option_name] == (value if not isinstance(value, tuple) else list(value))


@pytest.mark.parametrize("name", FLAGS)
def test_an_option_given_two_ways_with_two_values_is_refused(name):
    with pytest.raises(MedtransferError, match=f"option {name} given twice"):
        merge_option_values({name: "4"}, {name: 16})
    assert merge_option_values({name: "4"}, {name: "4"}) == {name: "4"}
    assert merge_option_values({name: "4"}, {name: None}) == {name: "4"}


def test_lora_rank_and_dropout_given_as_options_reach_the_model_and_the_row(small_manifest, tmp_path, cli):
    from medtransfer.data.manifest import load_manifest
    from medtransfer.splits import SplitSpec, make_splits, save_splits

    splits = save_splits(make_splits(load_manifest(small_manifest), SplitSpec(n_folds=2)), tmp_path / "splits.json")
    result = cli("adapt", small_manifest, "--splits", splits, "--backbone", TINY_VIT, "--weights", "random",
                 "--method", "lora", "--option", "rank=4", "--option", "dropout=0.3", "--regime", "full",
                 "--folds", "0", "--epochs", "1", "--out", tmp_path / "out")
    assert result.exit_code == 0, result.output
    row = pd.read_parquet(tmp_path / "out" / "results.parquet").iloc[0]
    recorded = json.loads(row["hyperparameters"])
    assert row["method"] == "lora-r4" and recorded["rank"] == 4 and recorded["dropout"] == 0.3
    with_r8 = cli("adapt", small_manifest, "--splits", splits, "--backbone", TINY_VIT, "--weights", "random",
                  "--method", "lora", "--regime", "full", "--folds", "0", "--epochs", "1", "--out", tmp_path / "r8")
    assert with_r8.exit_code == 0, with_r8.output
    r8 = pd.read_parquet(tmp_path / "r8" / "results.parquet").iloc[0]
    assert r8["method"] == "lora-r8" and r8["trainable_params"] > row["trainable_params"]  # rank 4 was trained


def test_lora_options_reach_the_wrapped_modules():
    from medtransfer.adapt.task import build_model
    from medtransfer.backbones import get_spec, load_backbone

    method = get_method("lora")
    options = method.make_options(merge_option_values({"rank": "4", "dropout": "0.3"}, dict.fromkeys(FLAGS)))
    spec = get_spec(TINY_VIT)
    model = build_model(load_backbone(TINY_VIT, "random").model, spec, method, n_classes=2, options=options)
    wrapped = [m for m in model.modules() if hasattr(m, "lora_A") and "default" in getattr(m, "r", {})]
    assert wrapped and all(m.r["default"] == 4 for m in wrapped)
    assert all(m.lora_dropout["default"].p == 0.3 for m in wrapped)
