"""CONTRIBUTING.md's three examples, each a whole entry file: registered as the file is written there, driven
through the CLI, then removed -- so the guide cannot drift from the code."""

from __future__ import annotations

import importlib.util
import json
import re
import sys
from pathlib import Path

import pandas as pd
import pytest

from backbone_contract import check_backbone_contract
from medtransfer.adapt.methods import METHODS
from medtransfer.backbones import REGISTRY, load_backbone
from medtransfer.data.manifest import load_manifest
from medtransfer.probe.registry import HEADS
from medtransfer.splits import SplitSpec, make_splits, save_splits
from medtransfer.testing.backbones import TINY_CNN, tiny_backbones
from medtransfer.testing.features import make_features, sample_ids, write_feature_store, write_label_splits

GUIDE = Path(__file__).resolve().parents[1] / "CONTRIBUTING.md"


def examples() -> dict[str, str]:
    """Path named on the first line of each python block -> the block."""
    blocks = re.findall(r"```python\n(# (src/medtransfer/\S+\.py)\n.*?)```", GUIDE.read_text(), flags=re.S)
    return {path: code for code, path in blocks}


@pytest.fixture()
def entry(tmp_path):
    """Run one example file as its own module; the entries it adds to any registry are removed after."""
    registries = (HEADS, METHODS, REGISTRY)
    before = [set(r) for r in registries]

    def load(path: str) -> None:
        file = tmp_path / Path(path).name
        file.write_text(examples()[path])
        spec = importlib.util.spec_from_file_location(f"_guide_{file.stem}", file)
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module  # as an import does: dataclasses resolve annotations through it
        loaded.append(spec.name)
        spec.loader.exec_module(module)

    loaded: list[str] = []
    yield load
    for name in loaded:
        sys.modules.pop(name, None)
    for registry, names in zip(registries, before, strict=True):
        for name in set(registry) - names:
            del registry[name]


def test_the_guide_has_one_example_per_kind():
    assert sorted(examples()) == ["src/medtransfer/adapt/methods/last_norm.py",
                                  "src/medtransfer/backbones/families/mobilenet.py",
                                  "src/medtransfer/probe/heads/gaussian_nb.py"]
    assert all(len(code.splitlines()) <= 45 for code in examples().values())


def test_the_head_example_runs_through_the_cli(entry, cli, tmp_path):
    entry("src/medtransfer/probe/heads/gaussian_nb.py")
    x, y = make_features()
    store, splits = tmp_path / "f.zarr", tmp_path / "splits.json"
    write_feature_store(store, "tiny", sample_ids(len(y)), x)
    write_label_splits(splits, y, n_folds=2, shots=(4,), seeds=1)
    result = cli("probe", "--store", store, "--splits", splits, "--backbone", "tiny", "--head", "gaussian-nb",
                 "--out", tmp_path / "out")
    assert result.exit_code == 0, result.output
    table = pd.read_csv(tmp_path / "out" / "results.csv")
    assert set(table["method"]) == {"gaussian-nb"} and (table["status"] == "ok").all()
    assert (table.loc[table["regime"] == "full", "mcc"] > 0.6).all()


def test_the_method_example_runs_through_the_cli(entry, cli, small_manifest, tmp_path):
    entry("src/medtransfer/adapt/methods/last_norm.py")
    splits = save_splits(make_splits(load_manifest(small_manifest), SplitSpec(n_folds=2)), tmp_path / "splits.json")
    with tiny_backbones():
        assert "last-norm" in cli("methods").stdout
        result = cli("adapt", small_manifest, "--splits", splits, "--backbone", TINY_CNN, "--weights", "random",
                     "--method", "last-norm", "--option", "init_scale=0.5", "--regime", "full", "--folds", "0",
                     "--epochs", "1", "--out", tmp_path / "out")
    assert result.exit_code == 0, result.output
    table = pd.read_parquet(tmp_path / "out" / "results.parquet")
    assert list(table["method"]) == ["last-norm"] and table["status"].iloc[0] == "ok"
    assert json.loads(table["hyperparameters"].iloc[0])["init_scale"] == 0.5
    assert table["trainable_params"].iloc[0] < table["total_params"].iloc[0]


def test_the_backbone_example_meets_the_contract_and_is_listed(entry, cli):
    entry("src/medtransfer/backbones/families/mobilenet.py")
    check_backbone_contract(load_backbone("mobilenet-v3-s", "random"))
    listed = cli("backbones", "--json")
    assert listed.exit_code == 0, listed.output
    assert any(row["name"] == "mobilenet-v3-s" for row in json.loads(listed.stdout))
