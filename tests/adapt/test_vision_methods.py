"""Issue 15's methods beyond the contract suite (which checks gradients, closed-form counts and refusals for every
method x family): the closed forms spelt out, identity at initialisation where the paper says so, checkpoints that
reproduce predictions, AdaLoRA's budget on our step count, every method learning a synthetic task through
``train.fit``, the options reaching the CLI, and the ``methods`` table."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from medtransfer.adapt.config import AdaptConfig
from medtransfer.adapt.methods import METHODS, get_method
from medtransfer.adapt.model import set_train_mode, trained_state
from medtransfer.adapt.task import build_model
from medtransfer.adapt.train import Schedule, TrainData, fit
from medtransfer.backbones import get_spec, load_backbone
from medtransfer.testing.backbones import SIZE, TINY_CNN, TINY_OPEN_CLIP, TINY_TIMM, TINY_VIT

VITS = (TINY_VIT, TINY_OPEN_CLIP, TINY_TIMM)
VISION = ("vpt-shallow", "vpt-deep", "adaptformer", "adapter", "ssf", "fact-tt", "fact-tk", "bn-tune")
PEFT = ("adalora", "fourierft", "hra", "vblora", "randlora", "shira", "c3a", "miss", "hira", "delora", "gralora")
PRESETS = tuple(f"{m}-r{r}" for m in ("lora", "vera") for r in (4, 8, 16))
# small options so that the tiny (32-wide) models stay tiny; the defaults are the papers' (``medtransfer methods``)
SMALL = {"adaptformer": {"bottleneck": 8}, "fact-tt": {"rank": 4}, "fact-tk": {"rank": 4},
         "vblora": {"num_vectors": 16}, "fourierft": {"n_frequency": 512}, "miss": {"rank": 8},
         "randlora": {"rank": 4}, "shira": {"rank": 4}, "hira": {"rank": 4}, "gralora": {"rank": 4},
         "adalora": {"rank": 2, "init_rank": 4}}
ZERO_INIT = ("adaptformer", "adapter", "fact-tt", "fact-tk", "bn-tune")  # identity at init (the papers' init)


def _build(method_name: str, backbone: str, seed: int = 0, **options):
    method = get_method(method_name)
    return build_model(load_backbone(backbone, "random").model, get_spec(backbone), method, n_classes=2, seed=seed,
                       options=method.make_options({**SMALL.get(method_name, {}), **options}))


def test_registry_has_at_least_24_classification_methods():
    assert len(METHODS) >= 24
    assert set(VISION + PEFT + PRESETS) <= set(METHODS)
    preset = get_method("lora-r4")
    assert preset.make_options().rank == 4 and preset.label(preset.make_options()) == "lora-r4"
    assert preset.label(preset.make_options({"rank": 8})) == get_method("lora").label(get_method("lora").make_options())
    assert get_method("vera-r16").make_options().rank == 16
    assert all(get_method(name).paper for name in METHODS)


def test_closed_forms_by_definition():
    """The formulas of the issue, spelt out for the tiny HF ViT (2 layers, width 32, MLP 64), paper defaults."""
    spec, layers, width = get_spec(TINY_VIT), 2, 32
    model = load_backbone(TINY_VIT, "random").model

    def expected(name: str) -> int:
        method = get_method(name)
        return method.expected_trainable(model, spec, method.make_options())

    assert expected("vpt-deep") == layers * 5 * width
    assert expected("vpt-shallow") == 5 * width
    assert expected("adaptformer") == layers * (2 * width * 64 + 64 + width)
    # q, k, v, o: one width x width block each; fc1 2 x 1 blocks; fc2 1 x 2 -> 8 r^2 per layer
    assert expected("fact-tt") == 2 * width * 8 + layers * 8 * 8**2
    assert expected("fact-tk") == 2 * width * 32 + 32**3 + 32 * layers * 8
    cnn = load_backbone(TINY_CNN, "random").model
    bn = get_method("bn-tune")
    assert bn.expected_trainable(cnn, get_spec(TINY_CNN), bn.make_options()) == 2 * (8 + 16 + 24)


@pytest.mark.parametrize("method_name", (*ZERO_INIT, "ssf"))
@pytest.mark.parametrize("backbone", (*VITS, TINY_CNN))
def test_outputs_unchanged_at_initialisation(method_name, backbone):
    family = get_spec(backbone).family
    if (method_name == "bn-tune") != (family == "cnn") and method_name != "ssf":
        pytest.skip("method not defined on this family (the contract suite checks the refusal)")
    pristine = load_backbone(backbone, "random").model.eval()
    extra = {"init_std": 0.0} if method_name == "ssf" else {}  # SSF is the identity with init_std 0 ...
    model = _build(method_name, backbone, **extra).eval()
    x = torch.randn(3, 3, SIZE, SIZE)
    with torch.no_grad():
        assert torch.allclose(model.embed(x), pristine(x), atol=1e-5)
    if method_name == "ssf":  # ... and close to, not equal to it with the paper's N(1, 0.02) / N(0, 0.02) init
        with torch.no_grad():
            assert not torch.allclose(_build("ssf", backbone).eval().embed(x), pristine(x), atol=1e-5)


@pytest.mark.parametrize("method_name", (*VISION, *PEFT))
def test_checkpoint_reproduces_predictions(method_name):
    backbone = TINY_CNN if method_name == "bn-tune" else TINY_TIMM
    model = _build(method_name, backbone, seed=0)
    model.train()
    with torch.no_grad():  # move every trained tensor (and BN statistics) away from its init
        for p in model.parameters():
            if p.requires_grad:
                p.add_(0.05 * torch.randn_like(p))
        model(torch.randn(8, 3, SIZE, SIZE))
    model.eval()
    state = trained_state(model, get_method(method_name))
    x = torch.randn(3, 3, SIZE, SIZE)
    with torch.no_grad():
        expected = model(x)
    fresh = _build(method_name, backbone, seed=1)
    loaded = fresh.load_state_dict(state, strict=False)
    assert not loaded.unexpected_keys
    with torch.no_grad():
        assert torch.allclose(fresh.eval()(x), expected, atol=1e-5)


# --- learning: each method lifts validation MCC above chance through train.fit -----------------------------------


@pytest.fixture(scope="module")
def task_data():
    """96 training and 48 validation 32-px images; class 1 carries a brighter upper-left quadrant."""
    generator = torch.Generator().manual_seed(0)
    y = torch.arange(144) % 2
    images = 0.5 * torch.randn(144, 3, SIZE, SIZE, generator=generator)
    images[:, :, : SIZE // 2, : SIZE // 2] += 1.0 * y.view(-1, 1, 1, 1)
    return images, y.numpy()


def _fit(method_name: str, backbone: str, task_data, *, epochs: int = 4):
    images, y = task_data
    method = get_method(method_name)
    model = _build(method_name, backbone)
    model.eval()
    train, val = torch.arange(96), torch.arange(96, 144)
    with torch.no_grad():
        model.head.standardize_from(model.embed(images[train]))
    config = AdaptConfig(epochs=epochs, batch_size=16, patience=epochs, augment="none")
    hook, wrapped = method.step_hook, model.backbone
    schedule = Schedule(config, 3e-3, 3e-3 * config.head_lr_scale,
                        on_step=None if hook is None else lambda step, total: hook(wrapped, step, total))
    data = TrainData(lambda rows, train: images[rows], train, y[:96], val, y[96:], 2,
                     torch.Generator().manual_seed(1))
    result = fit(model, data, schedule, device=torch.device("cpu"),
                 set_mode=lambda: set_train_mode(model, method, False), progress=False)
    return model, result


LEARN = [(m, TINY_CNN if m == "bn-tune" else TINY_VIT) for m in (*VISION, *PEFT)] + [("lora-r4", TINY_CNN)]


@pytest.mark.parametrize(("method_name", "backbone"), LEARN)
def test_a_few_epochs_lift_validation_mcc(task_data, method_name, backbone):
    # BN-tuning validates on running statistics, which (momentum 0.1) need ~30 steps to leave their random init
    epochs = 6 if get_method(method_name).norm_stats == "train" else 4
    _, result = _fit(method_name, backbone, task_data, epochs=epochs)
    assert result.best_score > 0.3, (method_name, result.history)


def test_adalora_rank_budget_follows_the_fits_step_count(task_data):
    """fit calls the hook after every optimizer step: the budget schedule spans the run's 6 x 4 steps, tinit and
    tfinal are the options' shares of it, and the allocator pruned ranks (init 4 -> target 2)."""
    model, result = _fit("adalora", TINY_VIT, task_data, epochs=4)
    config = model.backbone.peft_config["default"]
    total = 4 * 6  # 96 rows / batch 16
    assert model.backbone.base_model.rankallocator.peft_config is config
    assert (config.total_step, config.tinit, config.tfinal) == (total, int(0.1 * total), int(0.2 * total))
    kept = [int(np.sum(mask)) for mask in config.rank_pattern.values()]
    assert kept and sum(kept) < 4 * len(kept)


# --- the CLI ---------------------------------------------------------------------------------------------------


def test_vision_method_options_reach_the_cli(small_manifest, tmp_path, cli):
    from medtransfer.data.manifest import load_manifest
    from medtransfer.splits import SplitSpec, make_splits, save_splits

    splits = save_splits(make_splits(load_manifest(small_manifest), SplitSpec(n_folds=2)), tmp_path / "splits.json")
    result = cli("adapt", small_manifest, "--splits", splits, "--backbone", TINY_TIMM, "--weights", "random",
                 "--method", "vpt-deep", "--option", "prompt_length=3", "--regime", "full", "--folds", "0",
                 "--epochs", "1", "--out", tmp_path / "out")
    assert result.exit_code == 0, result.output
    table = pd.read_parquet(tmp_path / "out" / "results.parquet")
    assert table["status"].iloc[0] == "ok" and table["method"].iloc[0] == "vpt-deep"
    assert json.loads(table["hyperparameters"].iloc[0])["prompt_length"] == 3
    assert table["trainable_params"].iloc[0] == 2 * 3 * 32 + 2 * 32 + 2  # layers x length x width + head

    wrong = cli("adapt", small_manifest, "--splits", splits, "--backbone", TINY_CNN, "--weights", "random",
                "--method", "vpt-deep", "--out", tmp_path / "out2")
    assert wrong.exit_code == 2
    last_line = wrong.stderr.strip().splitlines()[-1].split("\r")[-1]
    assert last_line.startswith("error: method 'vpt-deep' cannot apply to backbone 'test-tiny-cnn' (family cnn)")


def test_methods_table_computes_shares_on_the_references(cli):
    result = cli("methods", "--reference", TINY_VIT, "--reference", TINY_CNN)
    assert result.exit_code == 0, result.output
    from medtransfer.adapt.catalog import method_catalog

    rows = {row["method"]: row for row in method_catalog((TINY_VIT, TINY_CNN))}
    assert rows["vpt-deep"][TINY_VIT] is not None and rows["vpt-deep"][TINY_CNN] is None
    assert rows["bn-tune"]["families"] == ["cnn"] and rows["lora"]["families"] == ["vit", "cnn"]
    assert rows["fft"][TINY_VIT] == 100.0
    assert rows["vpt-deep"]["paper"].startswith("Jia et al.") and "prompt_length=5" in rows["vpt-deep"]["defaults"]
    assert "vpt-deep" in result.stdout and "bn-tune" in result.stdout
