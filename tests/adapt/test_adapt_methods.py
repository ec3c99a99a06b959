"""Each adapt method on a tiny ViT and a tiny CNN (random weights): it trains exactly what it declares,
its parameter count matches peft's own (the contract over every method: test_adapt_contract.py), options are
checked, and unsupported combinations fail with one clear line."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from medtransfer.adapt.config import AdaptConfig
from medtransfer.adapt.methods import METHODS, get_method
from medtransfer.adapt.methods.boft import BoftOptions
from medtransfer.adapt.methods.oft import OftOptions
from medtransfer.adapt.options import LowRankOptions
from medtransfer.adapt.task import build_model
from medtransfer.backbones import get_spec, load_backbone
from medtransfer.errors import MedtransferError
from medtransfer.testing.backbones import TINY_CNN, TINY_VIT

BUILT_IN = {"fft", "lp", "lp-ft", "bitfit", "ln-tune", "lora", "dora", "vera", "ia3", "loha", "lokr", "oft", "boft"}
OPTIONS = {"rank": 4}


def _build(backbone, method_name, spec=None, **options):
    method = get_method(method_name)
    return build_model(load_backbone(backbone, "random").model, spec or get_spec(backbone), method, n_classes=2,
                       seed=0, options=method.make_options(options))


def test_registry_has_every_method():
    assert set(METHODS) >= BUILT_IN
    assert get_method("fft").default_lr == 1e-5
    assert all(get_method(m).default_lr == 1e-4 for m in ("lora", "vera", "ia3", "dora", "bitfit", "ln-tune"))
    assert LowRankOptions(rank=16).resolved_alpha == 32.0 and LowRankOptions(rank=4, alpha=1).resolved_alpha == 1.0
    assert get_method("lora").label(LowRankOptions(rank=16)) == "lora-r16"
    with pytest.raises(MedtransferError, match="unknown adapt method"):
        get_method("nope")


@pytest.mark.parametrize("method_name", sorted(BUILT_IN - {"fft", "lp-ft", "vera"}))
def test_built_in_methods_train_the_backbone_unless_lp(method_name):
    options = {"block_size": 8} if method_name == "oft" else {}
    model = _build(TINY_CNN, method_name, **options)
    trainable = {n for n, p in model.backbone.named_parameters() if p.requires_grad}
    assert bool(trainable) == (method_name != "lp")


def test_method_options_are_checked_with_one_line():
    with pytest.raises(MedtransferError, match=r"^--rank must be at least 1, got 0$"):
        get_method("lora").make_options({"rank": 0})
    with pytest.raises(MedtransferError, match=r"--dropout must be in \[0, 1\), got 1.5"):
        get_method("dora").make_options({"dropout": 1.5})
    with pytest.raises(MedtransferError, match="--alpha must be positive"):
        LowRankOptions(alpha=-1.0)
    with pytest.raises(MedtransferError, match="method 'ia3' has no option.* rank; its options: targets$"):
        get_method("ia3").make_options({"rank": 4})
    with pytest.raises(MedtransferError, match="option block_size expects type int, got 'big'"):
        get_method("oft").make_options({"block_size": "big"})
    assert get_method("oft").make_options({"block_size": "16"}) == OftOptions(block_size=16)
    assert get_method("boft").make_options({"butterfly_factor": 2}) == BoftOptions(butterfly_factor=2)
    with pytest.raises(MedtransferError, match="takes LowRankOptions, got OftOptions"):
        get_method("lora").make_options(OftOptions())


def test_vera_on_a_cnn_names_method_and_backbone():
    spec = get_spec(TINY_CNN)
    with pytest.raises(MedtransferError,
                       match=r"'vera' cannot apply to backbone 'test-tiny-cnn' \(family cnn\).*Conv2d"):
        _build(TINY_CNN, "vera", spec, **OPTIONS)


def test_target_pattern_that_matches_nothing_is_an_error():
    targets = dataclasses.replace(get_spec(TINY_VIT).targets, mlp=("mlp.fc1", "dense_h_to_4h"))
    spec = dataclasses.replace(get_spec(TINY_VIT), name="test-bad-targets", targets=targets)
    with pytest.raises(MedtransferError, match="'dense_h_to_4h' of backbone 'test-bad-targets' matches no module"):
        _build(TINY_VIT, "lora", spec, **OPTIONS)


def test_lora_alpha_and_rank_reach_peft():
    spec = get_spec(TINY_VIT)
    model = _build(TINY_VIT, "lora", rank=16)
    config = model.backbone.peft_config["default"]
    assert config.r == 16 and config.lora_alpha == 32
    assert set(config.target_modules) == set(spec.targets.attention + spec.targets.mlp)


def test_oft_leaves_out_targets_its_block_size_does_not_divide(caplog):
    spec = get_spec(TINY_CNN)  # conv1 takes 8 x 3 x 3 = 72 inputs, conv2 16 x 3 x 3 = 144
    model = _build(TINY_CNN, "oft", spec, block_size=16)
    wrapped = {n for n, m in model.backbone.named_modules() if hasattr(m, "base_layer")}
    assert wrapped == {"base_model.model.block.conv2"}
    assert "block.conv1" in caplog.text
    with pytest.raises(MedtransferError, match="no target's input size"):
        _build(TINY_CNN, "oft", spec, block_size=64)


@pytest.mark.parametrize("n_classes", [2, 3])
@pytest.mark.parametrize("standardized", [False, True])
def test_a_head_installed_from_probes_weights_computes_probes_probabilities(n_classes, standardized):
    """lp installs probe's raw-feature weights as they are; LP-FT writes the same function in the basis of its
    training rows' mean / std: either way the head's softmax is probe's sigmoid / softmax of x @ w + b."""
    from medtransfer.adapt.probe_head import install_linear

    spec = get_spec(TINY_CNN)
    model = build_model(load_backbone(TINY_CNN, "random").model, spec, get_method("lp-ft"), n_classes=n_classes)
    rng = np.random.default_rng(n_classes)
    x = rng.normal(1.0, 3.0, size=(50, spec.embed_dim))
    q = 1 if n_classes == 2 else n_classes
    weights, offsets = rng.normal(size=(spec.embed_dim, q)) / 10, rng.normal(size=q)
    install_linear(model.head, weights, offsets, standardize_on=torch.tensor(x[:30], dtype=torch.float32)
                   if standardized else None)
    scores = x @ weights + offsets
    expected = (np.stack([1 - 1 / (1 + np.exp(-scores[:, 0])), 1 / (1 + np.exp(-scores[:, 0]))], axis=1)
                if n_classes == 2 else np.exp(scores) / np.exp(scores).sum(1, keepdims=True))
    with torch.no_grad():
        got = torch.softmax(model.head(torch.tensor(x, dtype=torch.float32)), dim=1).numpy()
    assert np.allclose(got, expected, atol=1e-5)
    assert (model.head.scale != 1).any() == standardized


def test_train_norms_adds_the_norm_layers_to_a_peft_method():
    spec = get_spec(TINY_VIT)
    model = build_model(load_backbone(TINY_VIT, "random").model, spec, get_method("lora"), n_classes=2, seed=0,
                        options=LowRankOptions(rank=4), config=AdaptConfig(train_norms=True))
    trainable = {n for n, p in model.backbone.named_parameters() if p.requires_grad}
    norms = {n for n in trainable if "layernorm" in n}
    assert norms and all(n.endswith((".weight", ".bias")) for n in norms)
    assert trainable - norms == {n for n in trainable if "lora_" in n}
