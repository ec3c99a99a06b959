"""Fixtures of the adapt tests: the tiny backbones (registered for the session, removed after), one torch thread,
and the method contract every registered adaptation method must pass."""

from __future__ import annotations

import pytest
import torch

from medtransfer.adapt.model import parameter_counts
from medtransfer.adapt.registry import AdaptMethod
from medtransfer.adapt.task import build_model
from medtransfer.backbones import get_spec, load_backbone
from medtransfer.testing.backbones import SIZE, tiny_backbones


@pytest.fixture(scope="session", autouse=True)
def tiny_backbone_registry():
    with tiny_backbones():
        yield


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models train fastest on one intra-op thread; on a shared, loaded 2-core machine, two threads
    spin against other processes and run 10-20x slower. Restored afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def check_method_contract(method: AdaptMethod, backbone: str, options=None) -> None:
    """The contract of an adaptation method on a backbone: one backward pass puts gradients on exactly the
    parameters it declares (plus the head), those and only those require grad, and peft methods count their
    parameters as peft does."""
    spec = get_spec(backbone)
    model = build_model(load_backbone(backbone, "random").model, spec, method, n_classes=2, seed=0,
                        options=method.make_options(options))
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

    trainable_count, total = parameter_counts(model)
    head = sum(p.numel() for p in model.head.parameters())
    if method.is_peft:  # peft's own count, plus our head (always trained)
        peft_trainable, peft_total = model.backbone.get_nb_trainable_parameters()
        assert (trainable_count, total) == (peft_trainable + head, peft_total + head)
    if method.expected_trainable is not None:  # the closed form from the method's definition
        fresh = load_backbone(backbone, "random").model
        assert trainable_count - head == method.expected_trainable(fresh, spec, method.make_options(options))
    assert 0 < 100 * trainable_count / total <= 100


@pytest.fixture()
def method_contract():
    return check_method_contract
