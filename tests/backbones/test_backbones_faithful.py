"""Issue 12, faithful backbones: one test per numbered point, on random weights and tiny inputs.

Each test fails on the code before the change (noted per test).
"""

from __future__ import annotations

import argparse
import json
import math

import numpy as np
import pytest
import torch
import torchvision
from PIL import Image
from torch import nn
from typer.testing import CliRunner

from medtransfer.backbones import get_spec, load_backbone, preset_patterns, resolve_targets
from medtransfer.backbones.registry import RESIZE_POLICIES, backbone_markdown, backbone_table
from medtransfer.cli import app
from medtransfer.errors import MedtransferError
from medtransfer.extract.embed import make_embedder
from medtransfer.extract.preprocess import to_input


def _x(size: int, n: int = 1) -> torch.Tensor:
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(0))


# ---- 1. clip-l is OpenAI's ViT-L/14 through transformers; the LAION model is its own entry -----------------


def test_point1_clip_l_is_openai_vit_l14_with_hf_qkv_names():
    spec = get_spec("clip-l")  # old: open_clip ViT-L-14 laion400m_e32
    assert spec.weights_id == "openai/clip-vit-large-patch14"
    assert preset_patterns(spec, "seed") == ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj")
    laion = get_spec("clip-l-laion400m")
    assert "laion400m_e32" in laion.source
    # the architecture as built from openai/clip-vit-large-patch14's config (meta device: no memory)
    from transformers import CLIPVisionModelWithProjection

    from medtransfer.backbones.families.hf_vits import clip_l_config

    with torch.device("meta"):
        model = CLIPVisionModelWithProjection(clip_l_config())
    names = [n for n, _ in model.named_modules()]
    assert sum(n.endswith("self_attn.q_proj") for n in names) == 24
    assert model.config.hidden_size == 1024 and model.config.projection_dim == 768


# ---- 2. CLIP-family default embedding is the pre-projection feature; proj keeps the projected one ----------


@pytest.mark.parametrize("name, width, projected", [("pubmedclip", 768, 512), ("biomedclip", 768, 512)])
def test_point2_clip_family_default_is_pre_projection(name, width, projected):
    lb = load_backbone(name, "random")
    spec = lb.spec
    assert spec.embed_dim == width  # old: 512 (after the projection head)
    x = _x(spec.preprocessing.input_size)
    with torch.no_grad():
        out = make_embedder(lb.model, ("proj", "cls"), name)(x)
        tokens = lb.model.tokens(x)
    assert out["features"].shape == (1, width) and out["features_proj"].shape == (1, projected)
    assert torch.allclose(out["features"], tokens[:, 0], atol=1e-6)  # the class token after the final norm
    assert torch.allclose(out["features_cls"], out["features"])
    assert torch.allclose(out["features_proj"], lb.model._project(tokens[:, 0]), atol=1e-5)


def test_point2_proj_refused_without_projection():
    lb = load_backbone("dinov2-s", "random")
    with pytest.raises(MedtransferError, match="no image-text projection"):
        make_embedder(lb.model, ("proj",), "dinov2-s")


# ---- 3. the DINOv2 linear-eval grid (n = 1 or 4, with or without pooled patches) for every ViT family -------


def _grid_reference(model, x: torch.Tensor, prefix: int) -> dict[str, torch.Tensor]:
    """Independent reference: run the blocks, normalise each of the last 4 outputs with the final norm,
    then build DINOv2's create_linear_input for n in (1, 4), avgpool in (False, True)."""
    outputs: list[torch.Tensor] = []
    hooks = [b.register_forward_hook(lambda _m, _i, o: outputs.append(o[0] if isinstance(o, tuple) else o))
             for b in list(model.block_list())]
    try:
        model.tokens(x)
    finally:
        for h in hooks:
            h.remove()
    norm = model.final_norm()
    last = [norm(t) for t in outputs[-4:]]
    pooled = last[-1][:, prefix:].mean(dim=1)
    cls1, cls4 = last[-1][:, 0], torch.cat([t[:, 0] for t in last], dim=1)
    return {"cls": cls1, "cls_mean": torch.cat([cls1, pooled], 1), "cls4": cls4,
            "last4": torch.cat([cls4, pooled], 1)}


@pytest.mark.parametrize("name", ["dinov2-s", "pubmedclip", "biomedclip", "mrm", "open_clip:ViT-B-32"])
def test_point3_feature_grid_for_every_vit_family(name):
    """old: cls4 did not exist, and last4 was refused for open_clip and HF CLIP towers."""
    lb = load_backbone(name, "random")
    x = _x(lb.spec.preprocessing.input_size)
    kinds = ("cls", "cls_mean", "cls4", "last4")
    with torch.no_grad():
        out = make_embedder(lb.model, kinds, name)(x)
        ref = _grid_reference(lb.model, x, lb.model.num_prefix_tokens)
    width = lb.model.token_dim
    for kind, factor in zip(kinds, (1, 2, 4, 5), strict=True):
        assert out[f"features_{kind}"].shape == (1, factor * width), kind
        assert torch.allclose(out[f"features_{kind}"], ref[kind], atol=1e-5), kind
    # the last block's normalised output is the token sequence itself
    assert torch.allclose(out["features_cls"], lb.model.tokens(x)[:, 0], atol=1e-5)


def test_point3_grid_listed_per_entry():
    rows = {r["name"]: r for r in backbone_table()}
    for name in ("dinov2-b", "rad-dino", "clip-l", "clip-l-laion400m", "pubmedclip", "biomedclip", "mrm", "cxr-mae"):
        assert {"cls", "cls_mean", "cls4", "last4"} <= set(rows[name]["feature_variants"]), name


# ---- 4. MRM and CXR-MAE use their own statistics and evaluation transforms ------------------------------------


def test_point4_mae_statistics_and_transforms():
    mrm, mae = get_spec("mrm").preprocessing, get_spec("cxr-mae").preprocessing
    # old: ImageNet mean / std, squash, bicubic for both
    assert mrm.mean == (0.4978,) * 3 and mrm.std == (0.2449,) * 3
    assert (mrm.resize, mrm.crop_fraction, mrm.interpolation) == ("center-crop", 1.0, "bilinear")
    assert mae.mean == (0.5056,) * 3 and mae.std == (0.252,) * 3
    assert (mae.resize, round(mae.input_size / mae.crop_fraction), mae.interpolation) == ("center-crop", 256, "bicubic")
    # a mid-gray pixel at the data set's mean becomes 0 after normalisation
    image = np.full((40, 30), 0.4978, dtype=np.float32)
    assert torch.allclose(to_input(image, mrm), torch.zeros(3, 224, 224), atol=1e-4)


# ---- 5. upstream evaluation transforms by default; --resize upstream|squash|pad ----------------------------


def test_point5_upstream_transforms_match_torchvision():
    """old: torchvision CNNs were squashed to 224."""

    image = np.random.default_rng(0).random((300, 200)).astype(np.float32)
    for name, weights in (("resnet50", torchvision.models.ResNet50_Weights.IMAGENET1K_V1),
                          ("resnet50-v2", torchvision.models.ResNet50_Weights.IMAGENET1K_V2),
                          ("densenet121", torchvision.models.DenseNet121_Weights.IMAGENET1K_V1)):
        prep = get_spec(name).preprocessing
        preset = weights.transforms()
        assert prep.resize == "center-crop" and round(prep.input_size / prep.crop_fraction) == preset.resize_size[0]
        ours = to_input(image, prep)
        tensor = torch.from_numpy(image)[None].expand(3, -1, -1)
        theirs = preset(tensor)
        assert ours.shape == theirs.shape == (3, 224, 224)
        assert (ours - theirs).abs().mean() < 0.02, name  # antialias / rounding differences only


def test_point5_resize_policies_change_the_group_fingerprint():
    prep = get_spec("resnet50").preprocessing
    variants = {policy: prep.with_policy(policy) for policy in RESIZE_POLICIES}
    assert variants["upstream"] == prep
    assert variants["squash"].resize == "squash" and variants["pad"].resize == "pad-square"
    assert len({v.fingerprint() for v in variants.values()}) == 3
    with pytest.raises(MedtransferError, match="--resize"):
        prep.with_policy("stretch")
    # a wide image keeps its edges under squash and pad, loses them under the center crop
    image = np.zeros((100, 300), dtype=np.float32)
    image[:, :20] = 1.0  # a bright strip at the left edge
    seen = {p: float(to_input(image, v)[0, :, :5].mean()) for p, v in variants.items()}
    assert seen["squash"] > seen["upstream"] and seen["upstream"] < -1.5  # cropped away: black after normalise


def test_point5_extract_resize_makes_another_group_and_notes_the_old_one(tmp_path, capsys):
    from medtransfer.extract import extract_features

    for i in range(3):
        Image.fromarray((np.random.default_rng(i).random((40, 60)) * 255).astype(np.uint8)).save(tmp_path / f"{i}.png")
    (tmp_path / "m.csv").write_text("image,label\n" + "".join(f"{i}.png,{i % 2}\n" for i in range(3)))
    store = tmp_path / "f.zarr"
    first = extract_features(tmp_path / "m.csv", "resnet18", store, weights="random", progress=False,
                             resize="squash", device="cpu")
    second = extract_features(tmp_path / "m.csv", "resnet18", store, weights="random", progress=False,
                              device="cpu")
    assert first.group_key != second.group_key and second.n_computed == 3
    note = capsys.readouterr()
    assert f"store group {first.group_key}" in note.out + note.err and "left intact" in note.out + note.err
    from medtransfer.cache_schema import list_groups

    groups = {g.key: g for g in list_groups(store)}
    assert groups[first.group_key].preprocessing["resize"] == "squash" and groups[first.group_key].complete


# ---- 6. ResNet-50: classic V1 weights as resnet50, V2 as resnet50-v2 ----------------------------------------


def test_point6_resnet50_weights():
    assert get_spec("resnet50").weights_id == torchvision.models.ResNet50_Weights.IMAGENET1K_V1.url  # old: V2
    assert get_spec("resnet50-v2").weights_id == torchvision.models.ResNet50_Weights.IMAGENET1K_V2.url
    assert "IMAGENET1K_V1" in get_spec("resnet50").source


# ---- 7. PEFT target presets ------------------------------------------------------------------------------------


def test_point7_presets_resolve_per_family():
    dino = load_backbone("dinov2-s", "random").model
    spec = get_spec("dinov2-s")
    counts = {p: len(resolve_targets(dino, preset_patterns(spec, p, dino)))
              for p in ("seed", "qv", "attn", "attn-mlp", "all-linear")}
    assert counts == {"seed": 12 * 5, "qv": 12 * 2, "attn": 12 * 4, "attn-mlp": 12 * 6, "all-linear": 12 * 6}
    # fused qkv: q and v cannot be selected alone
    with pytest.raises(MedtransferError, match="fused"):
        preset_patterns(get_spec("biomedclip"), "qv")
    assert preset_patterns(get_spec("mrm"), "seed") == ("attn.qkv", "mlp.fc1", "mlp.fc2")
    # CNNs: the benchmark's conv1 (peft's suffix rule: stem and every bottleneck's conv1)
    resnet = load_backbone("resnet50", "random").model
    assert len(resolve_targets(resnet, preset_patterns(get_spec("resnet50"), "seed"))) == 1 + 16
    with pytest.raises(MedtransferError, match="CNN"):
        preset_patterns(get_spec("resnet50"), "qv")
    with pytest.raises(MedtransferError, match="not in the published benchmark"):
        preset_patterns(get_spec("resnet50-v2"), "seed")


def test_point7_adapt_records_preset_and_wrapped_modules(tmp_path):
    """adapt --targets: the preset resolves on the registry entry, the row records it and the wrapped count;
    a non-default preset is part of the method label, so its rows sit beside the default's."""
    from dataclasses import replace

    from medtransfer.adapt import run_adapt
    from medtransfer.backbones import REGISTRY, register
    from medtransfer.data.manifest import load_manifest
    from medtransfer.data.synthetic import SyntheticSpec, make_synthetic_dataset
    from medtransfer.splits import SplitSpec, make_splits, save_splits
    from medtransfer.testing.backbones import TINY_VIT, tiny_backbones

    manifest = make_synthetic_dataset(tmp_path / "data", SyntheticSpec(n_patients=60, image_size=32))
    splits = save_splits(make_splits(load_manifest(manifest), SplitSpec(n_folds=2, shots=(2,), fewshot_seeds=1)),
                         tmp_path / "splits.json")
    name = "test-tiny-vit-presets"
    with tiny_backbones():
        base = REGISTRY[TINY_VIT]
        register(replace(base, name=name, targets=replace(
            base.targets, qv=("attention.q_proj", "attention.v_proj"),
            qkv=("attention.q_proj", "attention.k_proj", "attention.v_proj"),
            seed=("attention.q_proj", "attention.k_proj", "attention.v_proj"))))
        try:
            wrapped, labels = {}, {}
            for preset in ("qv", "seed", "attn-mlp"):
                table = run_adapt(manifest, splits, backbone=name, method="lora", out=tmp_path / "results",
                                  weights="random", regimes=("full",), folds=(0,), epochs=1, batch_size=16,
                                  progress=False, log=lambda _: None, targets=preset)
                row = table.iloc[0]
                assert row["status"] == "ok", row["error"]
                assert row["peft_targets"] == preset
                assert json.loads(row["hyperparameters"])["targets"] == preset
                wrapped[preset], labels[preset] = int(row["n_wrapped_modules"]), row["method"]
            assert wrapped == {"qv": 2 * 2, "seed": 2 * 3, "attn-mlp": 2 * 6}  # 2 blocks
            assert labels == {"qv": "lora-r8-qv", "seed": "lora-r8-seed", "attn-mlp": "lora-r8"}
            import pandas as pd

            assert sorted(pd.read_parquet(tmp_path / "results" / "results.parquet")["method"]) == sorted(
                labels.values())
            with pytest.raises(MedtransferError, match="--targets must be one of"):
                run_adapt(manifest, splits, backbone=name, method="lora", out=tmp_path / "x", weights="random",
                          regimes=("full",), folds=(0,), epochs=1, progress=False, log=lambda _: None,
                          targets="everything")
            with pytest.raises(MedtransferError, match="targets for method .fft."):  # fft wraps nothing
                run_adapt(manifest, splits, backbone=name, method="fft", out=tmp_path / "x", weights="random",
                          targets="qv")
        finally:
            REGISTRY.pop(name, None)


# ---- 8. DINOv2 position embeddings interpolated as upstream ----------------------------------------------------


def _upstream_reference(pos_embed: torch.Tensor, height: int, width: int, patch: int) -> torch.Tensor:
    """facebookresearch/dinov2 dinov2/models/vision_transformer.py interpolate_pos_encoding, written out."""
    n = pos_embed.shape[1] - 1
    dim = pos_embed.shape[-1]
    w0, h0 = height // patch + 0.1, width // patch + 0.1
    grid = nn.functional.interpolate(
        pos_embed[:, 1:].reshape(1, int(math.sqrt(n)), int(math.sqrt(n)), dim).permute(0, 3, 1, 2),
        scale_factor=(float(w0 / math.sqrt(n)), float(h0 / math.sqrt(n))), mode="bicubic",
    )
    grid = grid.permute(0, 2, 3, 1).reshape(1, -1, dim)
    return torch.cat((pos_embed[:, :1], grid), dim=1)


def test_point8_dinov2_interpolates_like_upstream():
    from transformers import Dinov2Model

    from medtransfer.backbones.families.hf_vits import dinov2_config

    lb = load_backbone("dinov2-s", "random")
    emb = lb.model.backbone.embeddings
    tokens = torch.zeros(1, 16 * 16 + 1, 384)
    ours = emb.interpolate_pos_encoding(tokens, 224, 224)
    ref = _upstream_reference(emb.position_embeddings.detach(), 224, 224, 14)
    assert ours.shape == (1, 257, 384) and torch.allclose(ours, ref, atol=1e-6)
    # transformers' own size= interpolation (the old behaviour) differs by a few percent
    torch.manual_seed(0)
    plain = Dinov2Model(dinov2_config("s"))
    plain.load_state_dict(lb.model.backbone.state_dict())
    old = plain.embeddings.interpolate_pos_encoding(tokens, 224, 224)
    relative = (old - ref)[:, 1:].norm() / ref[:, 1:].norm()
    assert relative > 0.005
    # at the native 518 px nothing is interpolated
    assert torch.equal(emb.interpolate_pos_encoding(torch.zeros(1, 37 * 37 + 1, 384), 518, 518),
                       emb.position_embeddings)


# ---- 9. loader bugs ------------------------------------------------------------------------------------------------


def test_point9_densenet_legacy_keys(tmp_path):
    model = torchvision.models.densenet121()
    legacy = {}
    for key, value in model.state_dict().items():
        if key.endswith("num_batches_tracked"):
            continue  # the 2017 checkpoint predates this buffer
        for part in ("norm1", "norm2", "conv1", "conv2", "relu1", "relu2"):
            if "denselayer" in key and f".{part}." in key:
                key = key.replace(f".{part}.", f".{part[:-1]}.{part[-1]}.")
        legacy[key] = value
    assert any(".norm.1." in k for k in legacy)
    path = tmp_path / "densenet121-a639ec97.pth"
    torch.save(legacy, path)
    lb = load_backbone("densenet121", str(path))  # old: "does not fit this architecture"
    ours = lb.model.state_dict()
    assert torch.equal(ours["features.denseblock1.denselayer1.norm1.weight"],
                       legacy["features.denseblock1.denselayer1.norm.1.weight"])


def test_point9_mae_checkpoint_with_argparse_namespace(tmp_path):
    encoder = load_backbone("mrm", "random").model.backbone
    state = {"model": {k: v.clone() + 1 for k, v in encoder.state_dict().items()},
             "args": argparse.Namespace(lr=1e-3, model="vit_base_patch16")}
    path = tmp_path / "MRM.pth"
    torch.save(state, path)
    lb = load_backbone("mrm", str(path))  # old: refused by weights_only=True
    assert torch.equal(lb.model.backbone.state_dict()["cls_token"], state["model"]["cls_token"])


# ---- what it must show: backbones --json and the README table ---------------------------------------------------


def test_backbones_json_and_markdown_cli():
    runner = CliRunner()
    result = runner.invoke(app, ["backbones", "--json"])
    assert result.exit_code == 0, result.output
    rows = {r["name"]: r for r in json.loads(result.output)}
    clip = rows["clip-l"]
    assert clip["weights_id"] == "openai/clip-vit-large-patch14" and clip["dim"] == 1024
    assert clip["input_size"] == 224 and clip["resize"] == "center-crop" and clip["interpolation"] == "bicubic"
    assert clip["mean"] == [0.48145466, 0.4578275, 0.40821073]
    assert "proj" in clip["feature_variants"] and clip["peft_presets"]["qv"] == ["self_attn.q_proj", "self_attn.v_proj"]
    assert all(r["sources"] for n, r in rows.items() if not n.startswith("test-"))
    md = runner.invoke(app, ["backbones", "--markdown"])
    assert md.exit_code == 0 and md.output.strip() == backbone_markdown().strip()
    both = runner.invoke(app, ["backbones", "--json", "--markdown"])
    assert both.exit_code == 2 and "pass one of them" in both.output and "Traceback" not in both.output


def test_readme_table_is_generated():
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    rows = [r for r in backbone_table() if not r["name"].startswith("test-")]  # tests register tiny entries
    assert backbone_markdown(rows) in readme, "stale README table: regenerate with `medtransfer backbones --markdown`"


def test_the_seed_set_and_seed_targets_agree():
    """A backbone of ``--backbone seed`` (the benchmark's set) has the benchmark's ``--targets seed``; one
    without seed targets (RAD-DINO: no model config in the benchmark) is not in the set."""
    from medtransfer.backbones.registry import SEED_BACKBONES

    assert "rad-dino" not in SEED_BACKBONES
    for name in SEED_BACKBONES:
        assert get_spec(name).targets.seed, name
    with pytest.raises(MedtransferError, match="not in the published benchmark"):
        preset_patterns(get_spec("rad-dino"), "seed")


def test_densenet_seed_targets_are_the_dense_layers_first_convs_not_the_stem():
    """README: ``conv1`` on DenseNet is every dense layer's first conv; the stem is ``features.conv0``."""
    model = torchvision.models.densenet121()
    wrapped = resolve_targets(model, preset_patterns(get_spec("densenet121"), "seed", model))
    assert len(wrapped) == 58 and all(name.endswith(".conv1") and "denselayer" in name for name in wrapped)
