"""Hugging Face ViTs: DINOv2 (S/B/L), RAD-DINO, CLIP ViT-L/14 (OpenAI) and PubMedCLIP, through ``transformers``.

Random weights build from configs written here with the published hyperparameters (no hub access);
published weights come from ``from_pretrained(repo_id)`` (honours ``HF_HUB_OFFLINE`` and the local cache);
``--weights FOLDER`` loads ``from_pretrained(FOLDER)`` (a downloaded snapshot: config.json + weights),
``--weights FILE`` a state dict in the same key layout.

Module names are those of the installed transformers 5: its DINOv2 and Swin use ``q_proj`` / ``k_proj`` /
``v_proj`` / ``o_proj`` and ``mlp.fc1`` / ``mlp.fc2`` (transformers 4.x named them ``query`` / ``key`` /
``value`` / ``dense``; the published checkpoints still use those names and transformers renames them on load).
"""

from __future__ import annotations

import math
import tempfile
import types
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import torch
from torch import nn

from medtransfer.backbones.hub import download_guard, hub_offline
from medtransfer.backbones.hub_processor import check_published_processor
from medtransfer.backbones.registry import (
    BackboneSpec,
    PeftTargets,
    Preprocessing,
    checkpoint_refusal,
    register,
    unloadable_chain,
)
from medtransfer.backbones.vit import ViTEmbedder
from medtransfer.errors import MedtransferError

# OpenAI CLIP's statistics: openai/CLIP clip/clip.py ``_transform``; the same values in
# https://huggingface.co/openai/clip-vit-large-patch14/blob/main/preprocessor_config.json (image_mean / image_std)
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
# the DINOv2 linear-evaluation grid: class tokens of the last 1 or 4 blocks, with or without the average-pooled
# patch tokens (facebookresearch/dinov2 dinov2/eval/linear.py; the benchmark's n_last_blocks [1, 4] x
# avgpools [True, False], cosbidev/Deep-Sick src/configs/PEFT_runs/experiment/models/*.yaml), plus the
# mean of the patch tokens alone
VIT_GRID = ("cls", "mean", "cls_mean", "cls4", "last4")

HF_DINOV2_TARGETS = PeftTargets(
    attention=("attention.q_proj", "attention.k_proj", "attention.v_proj", "attention.o_proj"),
    mlp=("mlp.fc1", "mlp.fc2"),
    norm=("norm1", "norm2", "layernorm"),
)
HF_DINOV2_TARGETS = PeftTargets(
    attention=HF_DINOV2_TARGETS.attention,
    mlp=HF_DINOV2_TARGETS.mlp,
    norm=HF_DINOV2_TARGETS.norm,
    qv=("attention.q_proj", "attention.v_proj"),
    qkv=("attention.q_proj", "attention.k_proj", "attention.v_proj"),
    # vitX14_pretrain.yaml: modules_target [qkv, fc1, fc2] on DINOv2's fused qkv; transformers splits it in three
    seed=("attention.q_proj", "attention.k_proj", "attention.v_proj", "mlp.fc1", "mlp.fc2"),
)
HF_CLIP_TARGETS = PeftTargets(
    attention=("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.out_proj"),
    mlp=("mlp.fc1", "mlp.fc2"),
    norm=("layer_norm1", "layer_norm2", "pre_layrnorm", "post_layernorm"),
    qv=("self_attn.q_proj", "self_attn.v_proj"),
    qkv=("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"),
    # clip_large.yaml / pubmedclip.yaml: modules_target [k_proj, q_proj, v_proj]
    seed=("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"),
)


def hf_hint(repo_id: str, files: str = "config.json and model.safetensors") -> str:
    return f"download {files} from https://huggingface.co/{repo_id} into a folder"


def hf_from_pretrained(cls, repo_or_path: str | Path, what: str, hint: str = "", **kwargs) -> nn.Module:
    """``cls.from_pretrained`` behind the download guard; local folders take the same path.

    transformers fills tensors missing from a checkpoint with random values and only warns; a backbone
    with silently random layers is worse than an error, so missing tensors raise. Extra tensors (e.g. the
    text tower of a full CLIP checkpoint) are fine.
    """
    local = Path(str(repo_or_path)).exists()
    with download_guard(what, url=None if local else f"https://huggingface.co/{repo_or_path}", hint=hint):
        try:
            model, info = cls.from_pretrained(str(repo_or_path), output_loading_info=True,
                                              **{"local_files_only": not local and hub_offline(), **kwargs})
        except Exception as exc:  # an unloadable pytorch_model.bin (code inside, torn): refused in our words
            if unloadable_chain(exc) is None:
                raise
            raise MedtransferError(checkpoint_refusal(what, exc)) from None
    missing = list(info.get("missing_keys") or []) + [str(m) for m in info.get("mismatched_keys") or []]
    if missing:
        raise MedtransferError(
            f"the weights of {what} do not fit {cls.__name__}: {len(missing)} tensors missing or of another shape "
            f"(e.g. {missing[:2]}); is it the right checkpoint?"
        )
    return model


def hf_state_dict_file(cls, config, path: Path) -> nn.Module:
    """A single weights file in the model's Hugging Face layout: loaded through ``from_pretrained`` (next to
    our config, in a temporary folder) so that transformers' renaming of older key layouts applies."""
    with tempfile.TemporaryDirectory() as tmp:
        config.save_pretrained(tmp)
        name = "model.safetensors" if path.suffix == ".safetensors" else "pytorch_model.bin"
        (Path(tmp) / name).symlink_to(path.resolve())
        return hf_from_pretrained(cls, tmp, f"the weights file {path}")


# ----------------------------------------------------------------------------------------------- DINOv2


def dinov2_config(size: str, image_size: int = 518):
    from transformers import Dinov2Config

    hidden, heads, layers = {"s": (384, 6, 12), "b": (768, 12, 12), "l": (1024, 16, 24)}[size]
    return Dinov2Config(
        hidden_size=hidden,
        num_attention_heads=heads,
        num_hidden_layers=layers,
        mlp_ratio=4,
        hidden_act="gelu",
        layer_norm_eps=1e-6,
        image_size=image_size,
        patch_size=14,
        layerscale_value=1.0,
        qkv_bias=True,
        use_swiglu_ffn=False,
    )


def _dinov2_tokens(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return model(pixel_values=x).last_hidden_state  # after the final layernorm; CLS first


DINOV2_INTERPOLATE_OFFSET = 0.1  # facebookresearch/dinov2 dinov2/models/vision_transformer.py (interpolate_offset)


def upstream_interpolate_pos_encoding(self, embeddings: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """DINOv2's own position-embedding interpolation (facebookresearch/dinov2
    dinov2/models/vision_transformer.py ``interpolate_pos_encoding``): bicubic with ``scale_factor =
    (grid + 0.1) / sqrt(N)``, not transformers' ``size=grid``; at 224 px (37 -> 16 patches) the two differ by
    about 3%, so features of the released weights at 224 px match upstream's only this way."""
    pos = self.position_embeddings
    n_patches, n_positions = embeddings.shape[1] - 1, pos.shape[1] - 1
    if n_patches == n_positions and height == width:
        return pos
    pos = pos.float()
    dim = embeddings.shape[-1]
    patch = self.patch_embeddings.patch_size
    patch_h, patch_w = (patch, patch) if isinstance(patch, int) else patch
    side = math.sqrt(n_positions)
    rows = height // patch_h + DINOV2_INTERPOLATE_OFFSET
    cols = width // patch_w + DINOV2_INTERPOLATE_OFFSET
    grid = pos[:, 1:].reshape(1, int(side), int(side), dim).permute(0, 3, 1, 2)
    grid = nn.functional.interpolate(grid, scale_factor=(rows / side, cols / side), mode="bicubic")
    if grid.shape[-2:] != (int(rows), int(cols)):
        raise MedtransferError(f"DINOv2 position interpolation gave a {tuple(grid.shape[-2:])} grid for "
                               f"{height}x{width} px")
    grid = grid.permute(0, 2, 3, 1).reshape(1, -1, dim)
    return torch.cat((pos[:, :1], grid), dim=1).to(embeddings.dtype)


def use_upstream_interpolation(model: nn.Module) -> nn.Module:
    """Make a transformers ``Dinov2Model`` interpolate its position embeddings as upstream DINOv2 does."""
    model.embeddings.interpolate_pos_encoding = types.MethodType(upstream_interpolate_pos_encoding, model.embeddings)
    return model


def wrap_dinov2(model: nn.Module, pooling: str = "cls") -> ViTEmbedder:
    return ViTEmbedder(
        use_upstream_interpolation(model), _dinov2_tokens, token_dim=model.config.hidden_size, num_prefix_tokens=1,
        pooling=pooling, blocks="encoder.layer", norm="layernorm",
    )


def _hf_builder(
    config_fn: Callable[[], object],
    model_cls_name: str,
    repo_id: str,
    wrap: Callable[[nn.Module], nn.Module],
    preprocessing: Preprocessing,
) -> Callable[[bool], nn.Module]:
    def build(pretrained: bool) -> nn.Module:
        import transformers

        cls = getattr(transformers, model_cls_name)
        if pretrained:
            model = hf_from_pretrained(cls, repo_id, f"{repo_id} (Hugging Face)", hint=hf_hint(repo_id))
            check_published_processor(repo_id, preprocessing, what=repo_id, offline=hub_offline())
        else:
            model = cls(config_fn())
        return wrap(model)

    return build


def _hf_local(
    config_fn: Callable[[], object],
    model_cls_name: str,
    wrap: Callable[[nn.Module], nn.Module],
    preprocessing: Preprocessing,
) -> Callable[[Path], nn.Module]:
    """FOLDER: ``from_pretrained(FOLDER)``, its processor config checked; FILE: a state dict in the model's
    own key layout."""

    def load(path: Path) -> nn.Module:
        import transformers

        cls = getattr(transformers, model_cls_name)
        if path.is_dir():
            if not (path / "config.json").exists():
                raise MedtransferError(f"{path} has no config.json; pass a Hugging Face model folder or a weights file")
            model = hf_from_pretrained(cls, path, f"the model folder {path}")
            check_published_processor(path, preprocessing, what=f"the model folder {path}", offline=True)
            return wrap(model)
        return wrap(hf_state_dict_file(cls, config_fn(), path))

    return load


# DINOv2's evaluation transform: resize 256 (bicubic), center-crop 224, ImageNet mean / std
# (facebookresearch/dinov2 dinov2/data/transforms.py ``make_classification_eval_transform``)
DINOV2_PREPROCESSING = Preprocessing(
    input_size=224, resize="center-crop", crop_fraction=224 / 256, interpolation="bicubic"
)
_DINOV2_SOURCES = (
    ("preprocessing", "facebookresearch/dinov2 dinov2/data/transforms.py make_classification_eval_transform"),
    ("position interpolation", "facebookresearch/dinov2 dinov2/models/vision_transformer.py"),
    ("seed targets", "cosbidev/Deep-Sick src/configs/PEFT_runs/experiment/models/vit{s,b,l}14_pretrain.yaml"),
)
_DINOV2 = {
    # name: (size, repo, embed dim, params of the HF model as built (M), published (M))
    "dinov2-s": ("s", "facebook/dinov2-small", 384, 22.06, 21.0),
    "dinov2-b": ("b", "facebook/dinov2-base", 768, 86.58, 86.0),
    "dinov2-l": ("l", "facebook/dinov2-large", 1024, 304.37, 300.0),
}
for _name, (_size, _repo, _dim, _n, _pub) in _DINOV2.items():
    register(
        BackboneSpec(
            name=_name,
            architecture=f"ViT-{_size.upper()}/14 (DINOv2)",
            source=f"Hugging Face {_repo}",
            embed_dim=_dim,
            n_params_m=_n,
            embedding_kind="cls-token",
            build=_hf_builder(lambda s=_size: dinov2_config(s), "Dinov2Model", _repo, wrap_dinov2,
                              DINOV2_PREPROCESSING),
            local_loader=_hf_local(lambda s=_size: dinov2_config(s), "Dinov2Model", wrap_dinov2,
                                   DINOV2_PREPROCESSING),
            preprocessing=DINOV2_PREPROCESSING,
            targets=HF_DINOV2_TARGETS,
            family="vit",
            published_params_m=_pub,
            published_params_note=(
                "DINOv2 README / paper figure; the released checkpoint also holds a 37x37-patch (518 px) "
                "position embedding and a mask token"
            ),
            # the released ViT-S/14 has 22.06M parameters, 5.03% above the README's rounded "21M"
            published_tolerance=0.06 if _size == "s" else 0.05,
            default_weights_hint=hf_hint(_repo),
            weights_id=_repo,
            feature_variants=VIT_GRID,
            sources=_DINOV2_SOURCES,
        )
    )

# RAD-DINO: DINOv2 ViT-B/14 trained on chest X-rays. The 518 px input is confirmed by its model card
# (https://huggingface.co/microsoft/rad-dino README "Encode an image": patch tokens of shape 768 x 37 x 37, and
# 37 patches x 14 px = 518). Its processor (a BitImageProcessor: shorter side, then centre crop, bicubic) and
# the single mean / std value repeated per channel below could not be read from the upstream file here (not in
# the reference corpora; searched docs, code and pages three times). They are therefore checked at load time:
# the published weights (hub, offline cache or a downloaded folder) come with that preprocessor_config.json,
# and ``hub_processor.check_published_processor`` refuses the model if any value here differs from it.
RAD_DINO_PROCESSOR = "https://huggingface.co/microsoft/rad-dino/blob/main/preprocessor_config.json"
RAD_DINO_PREPROCESSING = Preprocessing(
    input_size=518,
    resize="center-crop",
    crop_fraction=1.0,
    mean=(0.5307, 0.5307, 0.5307),
    std=(0.2583, 0.2583, 0.2583),
    interpolation="bicubic",
    crop_offset="floor",  # transformers' center_crop (BitImageProcessor)
)
RAD_DINO_CARD = "https://huggingface.co/microsoft/rad-dino (model card: 37x37 patch grid, so 518 px)"
register(
    BackboneSpec(
        name="rad-dino",
        architecture="ViT-B/14 (DINOv2, chest X-ray)",
        source="Hugging Face microsoft/rad-dino",
        embed_dim=768,
        n_params_m=86.58,
        embedding_kind="cls-token",
        build=_hf_builder(lambda: dinov2_config("b"), "Dinov2Model", "microsoft/rad-dino", wrap_dinov2,
                          RAD_DINO_PREPROCESSING),
        local_loader=_hf_local(lambda: dinov2_config("b"), "Dinov2Model", wrap_dinov2, RAD_DINO_PREPROCESSING),
        preprocessing=RAD_DINO_PREPROCESSING,
        targets=replace(HF_DINOV2_TARGETS, seed=()),
        family="vit",
        published_params_m=86.0,
        published_params_note="ViT-B/14 figure (DINOv2 README)",
        default_weights_hint=hf_hint("microsoft/rad-dino"),
        weights_id="microsoft/rad-dino",
        feature_variants=VIT_GRID,
        sources=(("input size", RAD_DINO_CARD),
                 ("resize, interpolation, mean/std",
                  f"{RAD_DINO_PROCESSOR} (not readable here; checked against it when the weights load)"),
                 ("position interpolation", "facebookresearch/dinov2 dinov2/models/vision_transformer.py")),
    )
)

# ------------------------------------------------------------------------------------------- PubMedCLIP


def pubmedclip_config():
    from transformers import CLIPVisionConfig

    return CLIPVisionConfig(
        hidden_size=768,
        intermediate_size=3072,
        num_hidden_layers=12,
        num_attention_heads=12,
        image_size=224,
        patch_size=32,
        projection_dim=512,
        hidden_act="quick_gelu",
        layer_norm_eps=1e-5,
    )


def _clip_tokens(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    # HF CLIP: pooler_output = post_layernorm(last_hidden_state[:, 0]); apply it to every token
    vm = model.vision_model
    return vm.post_layernorm(vm(pixel_values=x).last_hidden_state)


def _clip_project(model: nn.Module, v: torch.Tensor) -> torch.Tensor:
    return model.visual_projection(v)


def wrap_hf_clip(model: nn.Module, pooling: str = "cls") -> ViTEmbedder:
    return ViTEmbedder(
        model,
        _clip_tokens,
        token_dim=model.config.hidden_size,
        num_prefix_tokens=1,
        pooling=pooling,
        project_fn=_clip_project,
        project_dim=model.config.projection_dim,
        blocks="vision_model.encoder.layers",
        norm="vision_model.post_layernorm",
        projection="visual_projection",
    )


def clip_l_config():
    """openai/clip-vit-large-patch14's vision tower (https://huggingface.co/openai/clip-vit-large-patch14/blob/
    main/config.json, vision_config: hidden 1024, intermediate 4096, 24 layers, 16 heads, patch 14, 224 px,
    projection_dim 768; quick_gelu and layer_norm_eps 1e-5 are CLIPVisionConfig's defaults for it)."""
    from transformers import CLIPVisionConfig

    return CLIPVisionConfig(
        hidden_size=1024,
        intermediate_size=4096,
        num_hidden_layers=24,
        num_attention_heads=16,
        image_size=224,
        patch_size=14,
        projection_dim=768,
        hidden_act="quick_gelu",
        layer_norm_eps=1e-5,
    )


# https://huggingface.co/openai/clip-vit-large-patch14/blob/main/preprocessor_config.json: size 224 (shorter
# side), crop_size 224, resample 3 (bicubic), CLIP mean / std; the same for pubmed-clip-vit-base-patch32:
# https://huggingface.co/flaviagiammarino/pubmed-clip-vit-base-patch32/blob/8c9083276570b80ff91935dea11720b7ccfe113b/preprocessor_config.json
# (CLIPFeatureExtractor: size 224, do_center_crop, crop_size 224, resample 3, OpenAI CLIP image_mean / image_std)
PUBMEDCLIP_PROCESSOR = ("https://huggingface.co/flaviagiammarino/pubmed-clip-vit-base-patch32/blob/"
                        "8c9083276570b80ff91935dea11720b7ccfe113b/preprocessor_config.json")
CLIP_PREPROCESSING = Preprocessing(
    input_size=224, resize="center-crop", crop_fraction=1.0, mean=CLIP_MEAN, std=CLIP_STD, interpolation="bicubic",
    crop_offset="floor",  # transformers' center_crop (CLIPImageProcessor)
)
CLIP_L_REPO = "openai/clip-vit-large-patch14"
register(
    BackboneSpec(
        name="clip-l",
        architecture="ViT-L/14 (CLIP, OpenAI)",
        source=f"Hugging Face {CLIP_L_REPO} (OpenAI CLIP ViT-L/14)",
        embed_dim=1024,
        n_params_m=303.18,
        embedding_kind="cls-token (final-normed, before the 768-d projection)",
        build=_hf_builder(clip_l_config, "CLIPVisionModelWithProjection", CLIP_L_REPO, wrap_hf_clip,
                          CLIP_PREPROCESSING),
        local_loader=_hf_local(clip_l_config, "CLIPVisionModelWithProjection", wrap_hf_clip, CLIP_PREPROCESSING),
        preprocessing=CLIP_PREPROCESSING,
        targets=HF_CLIP_TARGETS,
        family="vit",
        published_params_m=304.0,
        published_params_delta=1024 * 768,
        published_params_note="CLIP ViT-L/14 image encoder incl. its 1024x768 projection (304M)",
        default_weights_hint=hf_hint(CLIP_L_REPO),
        weights_id=CLIP_L_REPO,
        feature_variants=(*VIT_GRID, "proj"),
        sources=(
            ("architecture, preprocessing",
             f"https://huggingface.co/{CLIP_L_REPO} config.json, preprocessor_config.json"),
            ("weights choice, seed targets",
             "cosbidev/Deep-Sick src/configs/PEFT_runs/experiment/models/clip_large.yaml"),
        ),
    )
)


register(
    BackboneSpec(
        name="pubmedclip",
        architecture="ViT-B/32 (CLIP, PubMed ROCO fine-tune)",
        source="Hugging Face flaviagiammarino/pubmed-clip-vit-base-patch32",
        embed_dim=768,
        n_params_m=87.85,
        embedding_kind="cls-token (final-normed, before the 512-d projection)",
        build=_hf_builder(
            pubmedclip_config,
            "CLIPVisionModelWithProjection",
            "flaviagiammarino/pubmed-clip-vit-base-patch32",
            wrap_hf_clip,
            CLIP_PREPROCESSING,
        ),
        local_loader=_hf_local(pubmedclip_config, "CLIPVisionModelWithProjection", wrap_hf_clip,
                               CLIP_PREPROCESSING),
        preprocessing=CLIP_PREPROCESSING,
        targets=HF_CLIP_TARGETS,
        family="vit",
        weights_id="flaviagiammarino/pubmed-clip-vit-base-patch32",
        feature_variants=(*VIT_GRID, "proj"),
        sources=(
            ("preprocessing", f"{PUBMEDCLIP_PROCESSOR} (size 224, center crop 224, resample 3 = bicubic, "
             "OpenAI CLIP mean/std)"),
            ("seed targets", "cosbidev/Deep-Sick src/configs/PEFT_runs/experiment/models/pubmedclip.yaml"),
        ),
        published_params_m=86.0,
        published_params_note="generic ViT-B figure; the CLIP ViT-B/32 image encoder with its projection has 87.85M",
        default_weights_hint=hf_hint("flaviagiammarino/pubmed-clip-vit-base-patch32"),
    )
)
