"""Every registered backbone passes the backbone contract (tests/backbone_contract.py), and a new one, added
the way CONTRIBUTING says (one ``BackboneSpec``), is tested, extracted and read back through the CLI."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from backbone_contract import EXCLUDED, check_backbone_contract, contract_entries, random_backbone
from extract_support import make_images, write_manifest
from medtransfer import cache_schema
from medtransfer.backbones import REGISTRY, BackboneSpec, PeftTargets, Preprocessing, load_backbone


@pytest.mark.parametrize("name", contract_entries())
def test_every_registered_backbone_meets_the_contract(name):
    check_backbone_contract(random_backbone(name))


def test_exclusions_name_registered_entries_with_a_reason():
    assert set(EXCLUDED) <= set(REGISTRY) and all(reason.strip() for reason in EXCLUDED.values())


THROWAWAY = "throwaway-cnn"


class ThrowawayCNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 6, 3, stride=2)
        self.norm = nn.BatchNorm2d(6)
        self.pool = nn.AdaptiveAvgPool2d(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(torch.relu(self.norm(self.conv(x)))).flatten(1)


@pytest.fixture
def throwaway(monkeypatch) -> str:
    """A backbone added as a new entry would be: one ``BackboneSpec`` (here registered for this test only)."""
    spec = BackboneSpec(name=THROWAWAY, architecture="3x3 conv + BN", source="test", embed_dim=6,
                        n_params_m=count_m(ThrowawayCNN()), embedding_kind="global-average-pool",
                        build=lambda pretrained: ThrowawayCNN(), preprocessing=Preprocessing(input_size=24),
                        targets=PeftTargets(conv=("conv",), norm=("norm",)))
    monkeypatch.setitem(REGISTRY, THROWAWAY, spec)
    return THROWAWAY


def count_m(model: nn.Module) -> float:
    return sum(p.numel() for p in model.parameters()) / 1e6


def test_a_new_backbone_meets_the_contract_and_extracts_through_the_cli(throwaway, tmp_path, cli):
    assert throwaway in contract_entries()  # the parametrized test above would pick it up
    check_backbone_contract(load_backbone(throwaway, "random"))
    manifest = write_manifest(tmp_path / "m.csv", make_images(tmp_path / "img", 5))
    store = tmp_path / "s.zarr"
    result = cli("extract", manifest, "--backbone", throwaway, "--weights", "random", "--store", store,
                 "--device", "cpu", "--workers", "0", "--batch-size", "2")
    assert result.exit_code == 0, result.output
    assert f"{throwaway}: 5 of 5 images computed" in result.output
    key = cache_schema.find_group(store, throwaway, "random")
    assert cache_schema.read_features(store, key).features.shape == (5, 6)
    assert cli("cache", "verify", store).exit_code == 0
    again = cli("extract", manifest, "--backbone", throwaway, "--weights", "random", "--store", store,
                "--device", "cpu", "--workers", "0")
    assert "0 of 5 images computed" in again.output
