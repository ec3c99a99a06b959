"""ViT-B/16 masked-autoencoder CXR checkpoints (MRM, CXR-MAE, as used by MED-PEFT), from a local file.

These are MAE-style encoders in timm's key layout (``patch_embed.proj``, ``blocks.N.attn.qkv`` ...,
``norm``), saved as ``{"model": state_dict}`` together with the MAE decoder (and, for MRM, a BERT head).
We build timm's ``vit_base_patch16_224`` (no classifier), keep the encoder tensors, and resample the
position embedding when the checkpoint was pre-trained at another resolution. There is no download: the
weights are published as files on GitHub / Google Drive, so ``--weights PATH`` is required.

Embedding: the CLS token after the encoder's final norm (the norm is trained during MAE pre-training;
a fine-tuning ``fc_norm`` is not, so the global-pool fine-tuning head is not used).
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
from torch import nn

from medtransfer.backbones.families.open_clip_models import VIT_GRID, timm_vit_targets
from medtransfer.backbones.registry import (
    BackboneSpec,
    Preprocessing,
    load_state_dict_strict,
    read_state_dict,
    register,
)
from medtransfer.backbones.vit import ViTEmbedder
from medtransfer.errors import MedtransferError

MAE_SOURCES = {
    "mrm": (
        "MRM (Zhou et al., ICLR 2023) ViT-B/16 MIMIC-CXR checkpoint MRM.pth",
        "download MRM.pth from https://github.com/RL4M/MRM-pytorch (release link in its README)",
    ),
    "cxr-mae": (
        "CXR-MAE (Xiao et al., WACV 2023) ViT-B/16 checkpoint vit-b_CXR_0.5M_mae.pth",
        "download vit-b_CXR_0.5M_mae.pth from https://github.com/lambert-x/medical_mae (README links)",
    ),
}


def _timm_tokens(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return model.forward_features(x)  # after the final norm; CLS first


def build_timm_vit_b16(pooling: str = "cls") -> ViTEmbedder:
    import timm

    model = timm.create_model("vit_base_patch16_224", pretrained=False, num_classes=0, global_pool="token")
    return ViTEmbedder(
        model, _timm_tokens, token_dim=model.num_features, num_prefix_tokens=model.num_prefix_tokens, pooling=pooling,
        blocks="blocks", norm="norm",
    )


# Upstream evaluation transforms (grayscale replicated to 3 channels, one statistic per channel):
# MRM: Resize(224) + CenterCrop(224), torchvision's default bilinear, Normalize(0.4978, 0.2449)
#   (RL4M/MRM-pytorch NIH_ChestX-ray/utils/data_utils.py, transform_test)
# CXR-MAE: Resize(int(224 / (224 / 256)) = 256, BICUBIC) + CenterCrop(224), Normalize(0.5056, 0.252)
#   (lambert-x/medical_mae util/datasets.py, build_transform for chestxray / covidx / chexpert)
MRM_PREPROCESSING = Preprocessing(
    input_size=224, resize="center-crop", crop_fraction=1.0, mean=(0.4978,) * 3, std=(0.2449,) * 3,
    interpolation="bilinear",
)
CXR_MAE_PREPROCESSING = Preprocessing(
    input_size=224, resize="center-crop", crop_fraction=224 / 256, mean=(0.5056,) * 3, std=(0.252,) * 3,
    interpolation="bicubic",
)
MAE_PREPROCESSING = {
    "mrm": (MRM_PREPROCESSING, "RL4M/MRM-pytorch NIH_ChestX-ray/utils/data_utils.py"),
    "cxr-mae": (CXR_MAE_PREPROCESSING, "lambert-x/medical_mae util/datasets.py"),
}


def encoder_tensors(state: dict[str, torch.Tensor], own: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Keep the encoder's tensors: strip wrapper prefixes, drop decoder / text / head tensors."""
    for prefix in ("module.", "model.", "encoder.", "backbone."):
        if not any(k in own for k in state) and all(k.startswith(prefix) for k in state):
            state = {k.removeprefix(prefix): v for k, v in state.items()}
    return {k: v for k, v in state.items() if k in own}


def resample_pos_embed(pos_embed: torch.Tensor, target: torch.Tensor, num_prefix_tokens: int = 1) -> torch.Tensor:
    """Bicubic resampling of a (1, prefix + g*g, D) position embedding to ``target``'s grid."""
    if pos_embed.shape == target.shape:
        return pos_embed
    from timm.layers import resample_abs_pos_embed

    n_old = pos_embed.shape[1] - num_prefix_tokens
    n_new = target.shape[1] - num_prefix_tokens
    g_old, g_new = math.isqrt(n_old), math.isqrt(n_new)
    if g_old * g_old != n_old or g_new * g_new != n_new or pos_embed.shape[-1] != target.shape[-1]:
        raise MedtransferError(
            f"cannot resample a position embedding of shape {tuple(pos_embed.shape)} to {tuple(target.shape)}"
        )
    return resample_abs_pos_embed(
        pos_embed, new_size=(g_new, g_new), old_size=(g_old, g_old), num_prefix_tokens=num_prefix_tokens
    )


def load_mae_checkpoint(model: ViTEmbedder, path: Path) -> None:
    vit = model.backbone
    own = vit.state_dict()
    state = encoder_tensors(read_state_dict(path, wrappers=("model", "state_dict")), own)
    if not state:
        raise MedtransferError(
            f"checkpoint {path} holds no ViT-B/16 encoder tensors (patch_embed.*, blocks.*); is it an MAE checkpoint?"
        )
    if "pos_embed" in state:
        state["pos_embed"] = resample_pos_embed(state["pos_embed"], own["pos_embed"], vit.num_prefix_tokens)
    load_state_dict_strict(vit, state, path)


def _local(path: Path) -> nn.Module:
    if path.is_dir():
        files = sorted([*path.glob("*.pth"), *path.glob("*.pt"), *path.glob("*.bin"), *path.glob("*.safetensors")])
        if len(files) != 1:
            raise MedtransferError(f"{path} is a folder with {len(files)} checkpoint files; pass the file itself")
        path = files[0]
    model = build_timm_vit_b16()
    load_mae_checkpoint(model, path)
    return model


def _builder(name: str):
    what, hint = MAE_SOURCES[name]

    def build(pretrained: bool) -> nn.Module:
        if pretrained:
            raise MedtransferError(f"{name} has no automatic download: {hint}, then pass --weights PATH")
        return build_timm_vit_b16()

    return build


for _name, (_what, _hint) in MAE_SOURCES.items():
    register(
        BackboneSpec(
            name=_name,
            architecture="ViT-B/16 (MAE, chest X-ray)",
            source=f"local checkpoint: {_what}",
            embed_dim=768,
            n_params_m=85.8,
            embedding_kind="cls-token",
            build=_builder(_name),
            local_loader=_local,
            preprocessing=MAE_PREPROCESSING[_name][0],
            targets=timm_vit_targets("backbone.norm", seed=True),
            feature_variants=VIT_GRID,
            sources=(
                ("preprocessing", MAE_PREPROCESSING[_name][1]),
                ("seed targets", "cosbidev/Deep-Sick src/configs/PEFT_runs/experiment/models/medmae.yaml"),
            ),
            family="vit",
            published_params_m=86.0,
            published_params_note="ViT-B/16 figure (with its 1000-class head: 86.6M)",
            default_weights_hint=_hint,
        )
    )
