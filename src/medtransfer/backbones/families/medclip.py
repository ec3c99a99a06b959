"""MedCLIP (Wang et al., EMNLP 2022) image encoders, rebuilt here without the unmaintained ``medclip`` package.

MedCLIP's vision models are a torchvision ResNet-50 whose ``fc`` is replaced by a 512-d projection
(``MedCLIPVisionModel``) and a Hugging Face Swin-T (``microsoft/swin-tiny-patch4-window7-224``) plus a
768->512 ``projection_head`` (``MedCLIPVisionModelViT``). The released checkpoints are zips holding one
``pytorch_model.bin``: the state dict of the whole ``MedCLIPModel`` (``vision_model.model.*``,
``vision_model.projection_head.*``, ``text_model.*``, ``logit_scale``).

Our embedding is the vision encoder's pooled output *before* the contrastive projection (ResNet: 2048-d global
average pool; Swin: 768-d mean of the final-normed tokens, the HF ``pooler_output``): it is what the
published 23M / 27M parameter figures count, and the richer feature for probing. The projection and the
text tower are not loaded.
"""

from __future__ import annotations

import re
import shutil
import tempfile
import zipfile
from collections.abc import Callable
from pathlib import Path

import torch
import torchvision
from torch import nn

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

MEDCLIP_URLS = {
    # from MedCLIP's medclip/medclip_resnet_weight.txt and medclip_vit_weight.txt
    "medclip-resnet": "https://storage.googleapis.com/pytrial/medclip-pretrained.zip",
    "medclip-swin": "https://storage.googleapis.com/pytrial/medclip-vit-pretrained.zip",
}
WEIGHTS_NAME = "pytorch_model.bin"
VISION_PREFIX = "vision_model.model."
MEDCLIP_MEAN, MEDCLIP_STD = 0.5862785803043838, 0.27950088968644304  # MedCLIP constants.IMG_MEAN / IMG_STD

MEDCLIP_PREPROCESSING = Preprocessing(
    input_size=224,
    resize="pad-square",  # MedCLIPFeatureExtractor: pad to square, resize to 224
    mean=(MEDCLIP_MEAN,) * 3,
    std=(MEDCLIP_STD,) * 3,
    interpolation="bicubic",
    channels="grayscale",  # images are converted to "L", then repeated to 3 channels by the model
)

# transformers 4.x Swin names (as in the MedCLIP checkpoint) -> transformers 5 names; mirrors the "swin"
# entry of transformers.conversion_mapping, which from_pretrained applies but load_state_dict does not
_SWIN_LEGACY_RENAMES = (
    ("attention.self.query", "attention.q_proj"),
    ("attention.self.key", "attention.k_proj"),
    ("attention.self.value", "attention.v_proj"),
    ("attention.self.relative_position_bias_table", "attention.relative_position_bias.relative_position_bias_table"),
    ("attention.output.dense", "attention.o_proj"),
    ("intermediate.dense", "mlp.fc1"),
    ("output.dense", "mlp.fc2"),
)


def rename_legacy_swin(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    out = {}
    for key, value in state.items():
        if key.endswith("relative_position_index"):
            continue  # a buffer recomputed at build time (not persistent in transformers 5)
        for old, new in _SWIN_LEGACY_RENAMES:
            key = re.sub(rf"(^|\.){re.escape(old)}(\.|$)", rf"\g<1>{new}\g<2>", key)
        out[key] = value
    return out


def vision_tensors(state: dict[str, torch.Tensor], drop: tuple[str, ...]) -> dict[str, torch.Tensor]:
    """The image encoder's tensors of a MedCLIP checkpoint, prefix removed, projection dropped."""
    state = strip_ddp_prefix(state)
    if not any(k.startswith(VISION_PREFIX) for k in state):
        return {k: v for k, v in state.items() if not k.startswith(drop)}  # already an encoder state dict
    return {
        k.removeprefix(VISION_PREFIX): v
        for k, v in state.items()
        if k.startswith(VISION_PREFIX) and not k.removeprefix(VISION_PREFIX).startswith(drop)
    }


# ---- the two encoders --------------------------------------------------------------------------------


def medclip_resnet_encoder() -> nn.Module:
    model = torchvision.models.resnet50(weights=None)
    model.fc = nn.Identity()  # MedCLIP's fc is the 2048->512 projection; we embed before it
    return model


def swin_tiny_config():
    from transformers import SwinConfig

    return SwinConfig(  # microsoft/swin-tiny-patch4-window7-224
        image_size=224,
        patch_size=4,
        num_channels=3,
        embed_dim=96,
        depths=[2, 2, 6, 2],
        num_heads=[3, 6, 12, 24],
        window_size=7,
        mlp_ratio=4.0,
        qkv_bias=True,
        hidden_act="gelu",
        layer_norm_eps=1e-5,
        drop_path_rate=0.1,
    )


def _swin_tokens(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return model(pixel_values=x).last_hidden_state  # after the final layernorm


def medclip_swin_encoder() -> nn.Module:
    from transformers import SwinModel

    model = SwinModel(swin_tiny_config())
    # mean of the final tokens == SwinModel.pooler_output, what MedCLIPVisionModelViT projects
    return ViTEmbedder(model, _swin_tokens, token_dim=768, num_prefix_tokens=0, pooling="mean")


def load_medclip_resnet(model: nn.Module, path: Path) -> None:
    state = vision_tensors(read_medclip_checkpoint(path), drop=("fc.",))
    load_state_dict_strict(model, state, path)


def load_medclip_swin(model: nn.Module, path: Path) -> None:
    state = rename_legacy_swin(vision_tensors(read_medclip_checkpoint(path), drop=("projection_head.",)))
    target = model.backbone if isinstance(model, ViTEmbedder) else model
    load_state_dict_strict(target, state, path)


def read_medclip_checkpoint(path: Path) -> dict[str, torch.Tensor]:
    """``pytorch_model.bin``, a folder holding it, or the released zip."""
    if path.is_dir():
        found = sorted(path.rglob(WEIGHTS_NAME))
        if not found:
            raise MedtransferError(f"{path} holds no {WEIGHTS_NAME}; unzip the MedCLIP release there or pass the file")
        path = found[0]
    if path.suffix == ".zip":
        with tempfile.TemporaryDirectory() as tmp:
            return read_medclip_checkpoint(_unzip(path, Path(tmp)))
    return read_state_dict(path)


def _unzip(archive: Path, into: Path) -> Path:
    try:
        with zipfile.ZipFile(archive) as zf:
            zf.extractall(into)
    except zipfile.BadZipFile as exc:
        raise MedtransferError(f"{archive} is not a valid zip; download it again") from exc
    return into


def medclip_cache_dir() -> Path:
    return Path(torch.hub.get_dir()) / "medtransfer" / "medclip"


def fetch_medclip(name: str) -> Path:
    """Download (once) and unzip the released checkpoint; returns the cached ``pytorch_model.bin``."""
    folder = medclip_cache_dir() / name
    found = sorted(folder.rglob(WEIGHTS_NAME)) if folder.exists() else []
    if found:
        return found[0]
    url = MEDCLIP_URLS[name]
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        archive = Path(tmp) / Path(url).name
        torch.hub.download_url_to_file(url, str(archive), progress=False)
        _unzip(archive, Path(tmp) / "x")
        found = sorted((Path(tmp) / "x").rglob(WEIGHTS_NAME))
        if not found:
            raise MedtransferError(f"the MedCLIP archive {url} holds no {WEIGHTS_NAME}")
        shutil.copy2(found[0], folder / WEIGHTS_NAME)
    return folder / WEIGHTS_NAME


def _builder(
    name: str, make: Callable[[], nn.Module], load: Callable[[nn.Module, Path], None]
) -> tuple[Callable[[bool], nn.Module], Callable[[Path], nn.Module]]:
    # no find_file: ``read_medclip_checkpoint`` takes the file, a folder holding it or the zip
    return checkpoint_loaders(
        make, load, lambda: fetch_medclip(name), f"MedCLIP ({name})", MEDCLIP_URLS[name], _hint(name)
    )


def _hint(name: str) -> str:
    return f"download {MEDCLIP_URLS[name]} (a zip holding {WEIGHTS_NAME})"


_r_build, _r_local = _builder("medclip-resnet", medclip_resnet_encoder, load_medclip_resnet)
register(
    BackboneSpec(
        name="medclip-resnet",
        architecture="ResNet-50 (MedCLIP)",
        source="MedCLIP release medclip-pretrained.zip (ResNet-50 vision encoder)",
        embed_dim=2048,
        n_params_m=23.51,
        embedding_kind="vision-encoder embedding (global-average-pool, before the 512-d projection)",
        build=_r_build,
        local_loader=_r_local,
        preprocessing=MEDCLIP_PREPROCESSING,
        # medclip_resnet50.yaml: modules_target [conv1]
        targets=PeftTargets(conv=("conv1", "conv2", "conv3"), norm=("bn1", "bn2", "bn3", "downsample.1"),
                            seed=("conv1",)),
        family="cnn",
        weights_id=MEDCLIP_URLS["medclip-resnet"],
        sources=(("preprocessing", "RyanWangZf/MedCLIP medclip/constants.py, medclip/modeling_medclip.py"),
                 ("seed targets", "cosbidev/Deep-Sick src/configs/PEFT_runs/experiment/models/medclip_resnet50.yaml")),
        published_params_m=23.0,
        published_params_note="ResNet-50 encoder without its 2048x512 projection",
        default_weights_hint=_hint("medclip-resnet"),
    )
)

_s_build, _s_local = _builder("medclip-swin", medclip_swin_encoder, load_medclip_swin)
register(
    BackboneSpec(
        name="medclip-swin",
        architecture="Swin-T (MedCLIP)",
        source="MedCLIP release medclip-vit-pretrained.zip (Swin-T vision encoder)",
        embed_dim=768,
        n_params_m=27.52,
        embedding_kind="vision-encoder embedding (Swin pooler output, before the 512-d projection)",
        build=_s_build,
        local_loader=_s_local,
        preprocessing=MEDCLIP_PREPROCESSING,
        targets=PeftTargets(
            attention=("attention.q_proj", "attention.k_proj", "attention.v_proj", "attention.o_proj"),
            mlp=("mlp.fc1", "mlp.fc2"),
            norm=("layernorm_before", "layernorm_after", "layernorm", "embeddings.norm", "downsample.norm"),
            qv=("attention.q_proj", "attention.v_proj"),
            qkv=("attention.q_proj", "attention.k_proj", "attention.v_proj"),
            # medclip_vision.yaml: modules_target [query, value, keys, dense] in transformers 4.x Swin names;
            # "keys" matches no module, "dense" matches attention.output.dense, intermediate.dense and
            # output.dense: in transformers 5 names q_proj, v_proj, o_proj, fc1, fc2
            seed=("attention.q_proj", "attention.v_proj", "attention.o_proj", "mlp.fc1", "mlp.fc2"),
        ),
        family="vit",
        weights_id=MEDCLIP_URLS["medclip-swin"],
        sources=(("preprocessing", "RyanWangZf/MedCLIP medclip/constants.py, medclip/modeling_medclip.py"),
                 ("seed targets", "cosbidev/Deep-Sick src/configs/PEFT_runs/experiment/models/medclip_vision.yaml")),
        published_params_m=27.0,
        published_params_note="Swin-T encoder (28M with its ImageNet head) without the 768x512 projection",
        default_weights_hint=_hint("medclip-swin"),
    )
)
