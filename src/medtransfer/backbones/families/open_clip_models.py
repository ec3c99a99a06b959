"""open_clip image towers: CLIP ViT-L/14 (LAION-400M, ``clip-l-laion400m``) and BiomedCLIP (ViT-B/16 timm trunk).

``clip-l`` is OpenAI's ViT-L/14 through transformers (hf_vits.py), as the benchmark used.

Only the image tower is built (``open_clip.model._build_vision_tower``, the function ``create_model`` uses),
so the text tower is neither built nor counted. Published weights are fetched with open_clip's own
downloader (``download_pretrained`` / ``download_pretrained_from_hf``: the HF cache, honouring
``HF_HUB_OFFLINE``), and the ``visual.*`` tensors of the full CLIP state dict are loaded into the tower.
``--weights FILE`` takes the same open_clip checkpoint (full CLIP or image-tower-only state dict).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from medtransfer.backbones.families.hf_vits import CLIP_MEAN, CLIP_STD
from medtransfer.backbones.hub import checkpoint_loaders
from medtransfer.backbones.registry import (
    BackboneSpec,
    PeftTargets,
    Preprocessing,
    load_state_dict_strict,
    read_state_dict,
    register,
    strip_ddp_prefix,
)
from medtransfer.backbones.vit import ViTEmbedder
from medtransfer.errors import MedtransferError

# open_clip's own ViT blocks use nn.MultiheadAttention (fused in_proj inside; peft's LoRA wraps the whole
# module; other methods get its ``out_proj`` linear) and an ``mlp`` Sequential of ``c_fc`` / ``c_proj`` linears.
OPEN_CLIP_VIT_TARGETS = PeftTargets(
    attention=("attn",),
    attention_linear=("attn.out_proj",),
    mlp=("mlp.c_fc", "mlp.c_proj"),
    norm=("ln_1", "ln_2", "ln_pre", "ln_post"),
    qkv=("attn",),
)
VIT_GRID = ("cls", "mean", "cls_mean", "cls4", "last4")  # as hf_vits.VIT_GRID (DINOv2's linear-eval grid)


def timm_vit_targets(final_norm: str, seed: bool = False) -> PeftTargets:
    """timm-style ViT (BiomedCLIP's trunk, torch.hub DINOv2, MAE checkpoints): fused qkv + proj, fc1 / fc2.
    ``final_norm`` names the last LayerNorm unambiguously (a bare "norm" would also select the Identity
    ``patch_embed.norm``)."""
    return PeftTargets(
        attention=("attn.qkv", "attn.proj"),
        mlp=("mlp.fc1", "mlp.fc2"),
        norm=("norm1", "norm2", final_norm),
        qkv=("attn.qkv",),
        # biomedclip.yaml / medmae.yaml: modules_target [qkv, fc1, fc2]
        seed=("attn.qkv", "mlp.fc1", "mlp.fc2") if seed else (),
    )


# open_clip's PreprocessCfg defaults (mlfoundations/open_clip src/open_clip/transform.py, open_clip_torch 3.3.0):
# size 224, OPENAI_DATASET_MEAN / STD, interpolation "bicubic", resize_mode "shortest" (shorter side + centre crop)
OPEN_CLIP_PREPROCESSING = Preprocessing(
    input_size=224, resize="center-crop", crop_fraction=1.0, mean=CLIP_MEAN, std=CLIP_STD, interpolation="bicubic"
)


def build_vision_tower(embed_dim: int, vision_cfg: dict, quick_gelu: bool = False) -> nn.Module:
    from open_clip.model import _build_vision_tower

    return _build_vision_tower(embed_dim, vision_cfg, quick_gelu=quick_gelu)


def visual_state_dict(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The image tower's tensors from an open_clip checkpoint (full CLIP or tower-only; DDP prefix removed)."""
    state = strip_ddp_prefix(state)
    if any(k.startswith("visual.") for k in state):
        return {k.removeprefix("visual."): v for k, v in state.items() if k.startswith("visual.")}
    return state


def load_open_clip_file(visual: nn.Module, path: Path) -> None:
    state = visual_state_dict(read_state_dict(path))
    if not state:
        raise MedtransferError(f"checkpoint {path} holds no image-tower (visual.*) tensors")
    load_state_dict_strict(visual, state, path)


def load_open_clip_tower(model: nn.Module, path: Path) -> None:
    """``load_open_clip_file`` into the tower of a built model: a ``ViTEmbedder`` keeps it as ``backbone``;
    towers used as they are (``wrap_tower``) are the tower."""
    load_open_clip_file(getattr(model, "backbone", model), path)


def find_open_clip_file(path: Path) -> Path:
    """``--weights FOLDER``: the open_clip checkpoint in it (a Hugging Face snapshot of an open_clip repo)."""
    if not path.is_dir():
        return path
    files = sorted(path.glob("open_clip_*.safetensors")) + sorted(path.glob("open_clip_*.bin"))
    if not files:
        raise MedtransferError(f"{path} holds no open_clip_model.safetensors / open_clip_pytorch_model.bin")
    return files[0]


# ---- embedding wrappers ------------------------------------------------------------------------------


def _oc_vit_tokens(visual: nn.Module, x: torch.Tensor) -> torch.Tensor:
    # VisionTransformer.forward without pooling; ln_post on every token (final_ln_after_pool=False)
    return visual.ln_post(visual.transformer(visual._embeds(x)))


def _oc_vit_project(visual: nn.Module, v: torch.Tensor) -> torch.Tensor:
    return v @ visual.proj if visual.proj is not None else v


def wrap_open_clip_vit(visual: nn.Module, pooling: str = "cls", project: bool = False) -> ViTEmbedder:
    return ViTEmbedder(
        visual,
        _oc_vit_tokens,
        token_dim=visual.transformer.width,
        num_prefix_tokens=1,
        pooling=pooling,
        project_fn=_oc_vit_project,
        project_dim=visual.output_dim,
        project=project,
        blocks="transformer.resblocks",
        norm="ln_post",
        projection="proj",
    )


def _timm_tower_tokens(visual: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return visual.trunk.forward_features(x)  # timm applies the final norm


def _timm_tower_project(visual: nn.Module, v: torch.Tensor) -> torch.Tensor:
    return visual.head(v)


def wrap_open_clip_timm(visual: nn.Module, embed_dim: int, pooling: str = "cls", project: bool = False) -> ViTEmbedder:
    return ViTEmbedder(
        visual,
        _timm_tower_tokens,
        token_dim=visual.trunk.num_features,
        num_prefix_tokens=visual.trunk.num_prefix_tokens,
        pooling=pooling,
        project_fn=_timm_tower_project,
        project_dim=embed_dim,
        project=project,
        blocks="trunk.blocks",
        norm="trunk.norm",
        projection="head",
    )


def wrap_tower(visual: nn.Module, embed_dim: int, pooling: str = "cls") -> nn.Module:
    """ViTEmbedder for ViT towers; other towers (ModifiedResNet, ConvNeXt trunks) are used as they are.

    Open specs (``open_clip:<arch>/<tag>``) keep open_clip's ``encode_image`` output (projected) as their
    default embedding, as their spec declares; the grid variants are pre-projection."""
    from open_clip.timm_model import TimmModel
    from open_clip.transformer import VisionTransformer

    if (
        isinstance(visual, VisionTransformer)
        and visual.attn_pool is None
        and not visual.final_ln_after_pool
        and visual.pool_type == "tok"
    ):
        return wrap_open_clip_vit(visual, pooling, project=True)
    if (
        isinstance(visual, TimmModel)
        and hasattr(visual.trunk, "forward_features")
        and getattr(visual.trunk, "global_pool", None) == "token"
    ):
        return wrap_open_clip_timm(visual, embed_dim, pooling, project=True)
    return visual


# ---- the registered towers ---------------------------------------------------------------------------


def _open_clip_builder(
    make_tower: Callable[[], nn.Module],
    fetch: Callable[[], str],
    what: str,
    url: str,
    hint: str,
    wrap: Callable[[nn.Module], nn.Module],
) -> tuple[Callable[[bool], nn.Module], Callable[[Path], nn.Module]]:
    def fetch_file() -> str:
        path = fetch()
        if not path:  # a MedtransferError passes the download guard unchanged
            raise MedtransferError(f"open_clip knows no download for {what}; {hint} and pass --weights PATH")
        return path

    return checkpoint_loaders(
        lambda: wrap(make_tower()), load_open_clip_tower, fetch_file, what, url, hint, find_open_clip_file
    )


def _clip_l_tower() -> nn.Module:
    import open_clip

    cfg = open_clip.get_model_config("ViT-L-14")
    quick = open_clip.get_pretrained_cfg("ViT-L-14", "laion400m_e32").get("quick_gelu", False)
    return build_vision_tower(cfg["embed_dim"], cfg["vision_cfg"], quick_gelu=quick)


def _clip_l_fetch() -> str:
    import open_clip
    from open_clip.pretrained import download_pretrained

    return download_pretrained(open_clip.get_pretrained_cfg("ViT-L-14", "laion400m_e32"))


_clip_l_build, _clip_l_local = _open_clip_builder(
    _clip_l_tower,
    _clip_l_fetch,
    "open_clip ViT-L-14 laion400m_e32",
    "https://huggingface.co/timm/vit_large_patch14_clip_224.laion400m_e32",
    "download open_clip_model.safetensors from https://huggingface.co/timm/vit_large_patch14_clip_224.laion400m_e32",
    wrap_open_clip_vit,
)
register(
    BackboneSpec(
        name="clip-l-laion400m",
        architecture="ViT-L/14 (CLIP, LAION-400M)",
        source="open_clip ViT-L-14, pretrained='laion400m_e32' (LAION-400M)",
        embed_dim=1024,
        n_params_m=303.97,
        embedding_kind="cls-token (ln_post, before the 768-d projection)",
        weights_id="https://huggingface.co/timm/vit_large_patch14_clip_224.laion400m_e32",
        feature_variants=(*VIT_GRID, "proj"),
        sources=(("preprocessing", "mlfoundations/open_clip src/open_clip/pretrained.py (laion400m_e32: "
                                   "OpenAI mean/std, bicubic, 224)"),),
        build=_clip_l_build,
        local_loader=_clip_l_local,
        preprocessing=OPEN_CLIP_PREPROCESSING,
        targets=OPEN_CLIP_VIT_TARGETS,
        family="vit",
        published_params_m=300.0,
        published_params_note="ViT-L/14 image encoder figure (CLIP paper: 304M incl. projection)",
        default_weights_hint="download open_clip_model.safetensors from "
        "https://huggingface.co/timm/vit_large_patch14_clip_224.laion400m_e32",
    )
)

BIOMEDCLIP_REPO = "microsoft/BiomedCLIP-PubMedBERT_256-vit_base_patch16_224"
BIOMEDCLIP_VISION_CFG = {
    # from the repo's open_clip_config.json (model_cfg.vision_cfg); embed_dim 512
    "timm_model_name": "vit_base_patch16_224",
    "timm_model_pretrained": False,
    "timm_pool": "",
    "timm_proj": "linear",
    "image_size": 224,
}


def _biomedclip_tower() -> nn.Module:
    return build_vision_tower(512, BIOMEDCLIP_VISION_CFG)


def _biomedclip_fetch() -> str:
    from open_clip.pretrained import download_pretrained_from_hf

    return download_pretrained_from_hf(BIOMEDCLIP_REPO)  # open_clip_model.safetensors, else the .bin


_biomedclip_build, _biomedclip_local = _open_clip_builder(
    _biomedclip_tower,
    _biomedclip_fetch,
    f"open_clip hf-hub:{BIOMEDCLIP_REPO}",
    f"https://huggingface.co/{BIOMEDCLIP_REPO}",
    f"download open_clip_pytorch_model.bin from https://huggingface.co/{BIOMEDCLIP_REPO}",
    lambda visual: wrap_open_clip_timm(visual, 512),
)
register(
    BackboneSpec(
        name="biomedclip",
        architecture="ViT-B/16 (CLIP, PMC-15M)",
        source=f"open_clip hf-hub:{BIOMEDCLIP_REPO}",
        embed_dim=768,
        n_params_m=86.19,
        embedding_kind="cls-token (trunk.norm, before the 512-d projection)",
        weights_id=BIOMEDCLIP_REPO,
        feature_variants=(*VIT_GRID, "proj"),
        sources=(
            ("preprocessing", f"https://huggingface.co/{BIOMEDCLIP_REPO} open_clip_config.json (commit "
                              "2584124: vision_cfg image_size 224; its preprocess_cfg sets only mean/std, the "
                              "OpenAI CLIP values, as the copy in huggingface.co/ZiyueWang/biomedclip config.json "
                              "shows); the rest are open_clip's PreprocessCfg defaults (src/open_clip/transform.py): "
                              "bicubic, resize_mode shortest + center crop"),
            ("seed targets", "cosbidev/Deep-Sick src/configs/PEFT_runs/experiment/models/biomedclip.yaml"),
        ),
        build=_biomedclip_build,
        local_loader=_biomedclip_local,
        preprocessing=OPEN_CLIP_PREPROCESSING,
        targets=timm_vit_targets("trunk.norm", seed=True),
        family="vit",
        published_params_m=86.0,
        published_params_note="ViT-B/16 figure; ours includes the 768x512 projection (0.39M)",
        default_weights_hint=f"download open_clip_pytorch_model.bin from https://huggingface.co/{BIOMEDCLIP_REPO}",
    )
)
