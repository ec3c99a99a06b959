"""Each adapt method on a tiny ViT and a tiny CNN (random weights): it trains exactly what it declares,
its parameter count matches peft's own, and unsupported combinations fail with one clear line."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from adapt_support import (
    SIZE,
    TINY_CNN,
    TINY_VIT,
    one_thread,  # noqa: F401  (fixture)
    register_tiny_backbones,
)
from medtransfer.adapt.config import AdaptConfig
from medtransfer.adapt.methods import METHODS, get_method
from medtransfer.adapt.model import parameter_counts
from medtransfer.adapt.run import build_model
from medtransfer.backbones import get_spec, load_backbone
from medtransfer.errors import MedtransferError

register_tiny_backbones()
pytestmark = pytest.mark.usefixtures("one_thread")

EXPECTED = {"fft", "lp", "lp-ft", "bitfit", "ln-tune", "lora", "dora", "vera", "ia3", "loha", "lokr", "oft", "boft"}
CASES = [(m, b) for m in sorted(EXPECTED) for b in (TINY_VIT, TINY_CNN) if not (m == "vera" and b == TINY_CNN)]
CONFIG = AdaptConfig(rank=4, extra={"oft_block_size": 8})


def test_registry_has_every_method():
    assert set(METHODS) >= EXPECTED
    assert get_method("fft").default_lr == 1e-5
    assert all(get_method(m).default_lr == 1e-4 for m in ("lora", "vera", "ia3", "dora", "bitfit", "ln-tune"))
    assert AdaptConfig(rank=16).lora_alpha == 32.0 and AdaptConfig(rank=4, alpha=1).lora_alpha == 1.0
    assert get_method("lora").label(AdaptConfig(rank=16)) == "lora-r16"
    with pytest.raises(MedtransferError, match="unknown adapt method"):
        get_method("nope")


@pytest.mark.parametrize(("method_name", "backbone"), CASES)
def test_gradients_reach_exactly_the_declared_parameters(method_name, backbone):
    method = get_method(method_name)
    spec = get_spec(backbone)
    model = build_model(load_backbone(backbone, "random").model, spec, method, CONFIG, n_classes=2, seed=0)
    model.train()
    torch.manual_seed(1)
    logits = model(torch.randn(4, 3, SIZE, SIZE))
    torch.nn.functional.cross_entropy(logits, torch.tensor([0, 1, 0, 1])).backward()

    declared = {f"backbone.{n}" for n, _ in model.backbone.named_parameters()
                if method.declares(n, model.backbone, spec)}
    declared |= {f"head.{n}" for n, _ in model.head.named_parameters()}
    with_grad = {n for n, p in model.named_parameters() if p.grad is not None}
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert with_grad == declared
    assert trainable == declared
    if method_name not in ("fft", "lp-ft"):
        assert any(n.startswith("backbone.") for n in declared) == (method_name != "lp")

    trainable_count, total = parameter_counts(model)
    head = sum(p.numel() for p in model.head.parameters())
    if method.is_peft:  # peft's own count, plus our head (always trained)
        peft_trainable, peft_total = model.backbone.get_nb_trainable_parameters()
        assert (trainable_count, total) == (peft_trainable + head, peft_total + head)
    assert 0 < 100 * trainable_count / total <= 100


def test_vera_on_a_cnn_names_method_and_backbone():
    spec = get_spec(TINY_CNN)
    with pytest.raises(MedtransferError, match=r"'vera' cannot apply to backbone 'test-tiny-cnn'.*Conv2d"):
        build_model(load_backbone(TINY_CNN, "random").model, spec, get_method("vera"), CONFIG, 2, 0)


def test_target_pattern_that_matches_nothing_is_an_error():
    targets = dataclasses.replace(get_spec(TINY_VIT).targets, mlp=("mlp.fc1", "dense_h_to_4h"))
    spec = dataclasses.replace(get_spec(TINY_VIT), name="test-bad-targets", targets=targets)
    with pytest.raises(MedtransferError, match="'dense_h_to_4h' of backbone 'test-bad-targets' matches no module"):
        build_model(load_backbone(TINY_VIT, "random").model, spec, get_method("lora"), CONFIG, 2, 0)


def test_lora_alpha_and_rank_reach_peft():
    spec = get_spec(TINY_VIT)
    model = build_model(load_backbone(TINY_VIT, "random").model, spec, get_method("lora"),
                        AdaptConfig(rank=16), 2, 0)
    config = model.backbone.peft_config["default"]
    assert config.r == 16 and config.lora_alpha == 32
    assert set(config.target_modules) == set(spec.targets.attention + spec.targets.mlp)


def test_oft_leaves_out_targets_its_block_size_does_not_divide(caplog):
    spec = get_spec(TINY_CNN)  # conv1 takes 8 x 3 x 3 = 72 inputs, conv2 16 x 3 x 3 = 144
    config = AdaptConfig(extra={"oft_block_size": 16})
    model = build_model(load_backbone(TINY_CNN, "random").model, spec, get_method("oft"), config, 2, 0)
    wrapped = {n for n, m in model.backbone.named_modules() if hasattr(m, "base_layer")}
    assert wrapped == {"base_model.model.block.conv2"}
    assert "block.conv1" in caplog.text
    with pytest.raises(MedtransferError, match="no target's input size"):
        build_model(load_backbone(TINY_CNN, "random").model, spec, get_method("oft"),
                    AdaptConfig(extra={"oft_block_size": 64}), 2, 0)


def test_lp_ft_head_starts_as_probes_logreg():
    from sklearn.linear_model import LogisticRegression

    from medtransfer.adapt.run import _init_head_from_probe

    spec = get_spec(TINY_CNN)
    model = build_model(load_backbone(TINY_CNN, "random").model, spec, get_method("lp-ft"), CONFIG, 2, 0)
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(60, spec.embed_dim, generator=generator) * 3 + 1
    y = (x[:, 0] + 0.5 * torch.randn(60, generator=generator) > 1).long().numpy()
    _init_head_from_probe(model, x[:40], y[:40], x[40:], y[40:], n_classes=2)
    z = ((x - x[:40].mean(0)) / x[:40].std(0, unbiased=False)).numpy()
    expected = [LogisticRegression(C=c, class_weight="balanced", max_iter=2000).fit(z[:40], y[:40]).predict_proba(z)
                for c in np.logspace(-4, 3, 8)]
    got = torch.softmax(model.head(x), dim=1).detach().numpy()
    assert any(np.allclose(got, e, atol=1e-4) for e in expected)


def test_train_norms_adds_the_norm_layers_to_a_peft_method():
    spec = get_spec(TINY_VIT)
    config = AdaptConfig(rank=4, train_norms=True)
    model = build_model(load_backbone(TINY_VIT, "random").model, spec, get_method("lora"), config, 2, 0)
    trainable = {n for n, p in model.backbone.named_parameters() if p.requires_grad}
    norms = {n for n in trainable if "layernorm" in n}
    assert norms and all(n.endswith((".weight", ".bias")) for n in norms)
    assert trainable - norms == {n for n in trainable if "lora_" in n}
