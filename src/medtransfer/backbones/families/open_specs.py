"""Open specs: any ``timm:<model>``, ``open_clip:<arch>/<tag>`` or ``hf:<repo-id-or-folder>`` as a backbone.

The spec is derived from the library's own metadata (timm's pretrained config, open_clip's model and
pretrained configs, the HF config and image-processor config); parameter counts come from a build on the
``meta`` device (no memory, no init). PEFT targets are inferred from the built module tree
(``infer_targets``) and checked to select only modules of the intended type.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from medtransfer.backbones.families.hf_vits import CLIP_MEAN, CLIP_STD, hf_from_pretrained, hf_state_dict_file
from medtransfer.backbones.families.open_clip_models import (
    build_vision_tower,
    find_open_clip_file,
    load_open_clip_tower,
    wrap_tower,
)
from medtransfer.backbones.hub import checkpoint_loaders, download_guard, hub_offline
from medtransfer.backbones.registry import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    BackboneSpec,
    PeftTargets,
    Preprocessing,
    count_parameters,
    register_open_spec,
    resolve_targets,
)
from medtransfer.errors import MedtransferError

# ---- PEFT target inference ---------------------------------------------------------------------------

ATTENTION_LINEARS = {
    "qkv",
    "q_proj",
    "k_proj",
    "v_proj",
    "o_proj",
    "out_proj",
    "query",
    "key",
    "value",
    "q",
    "k",
    "v",
    "proj",
    "in_proj",
    "c_attn",
}
MLP_LINEARS = {"fc1", "fc2", "c_fc", "c_proj", "dense", "up_proj", "down_proj", "gate_proj", "w1", "w2", "w3"}
ATTENTION_PARENTS = ("attn", "attention", "self_attn", "self", "attention.self")
NORM_TYPES = (nn.LayerNorm, nn.BatchNorm2d, nn.BatchNorm1d, nn.GroupNorm)


def _suffix(name: str, parts: int) -> str:
    return ".".join(name.split(".")[-parts:])


def _patterns(model: nn.Module, names: list[str], allowed: tuple[type, ...]) -> tuple[str, ...]:
    """Shortest dotted suffixes (1, 2, ... components, never a bare index) that select only ``allowed`` types."""
    out: list[str] = []
    modules = dict(model.named_modules())
    for name in names:
        if any(name == p or name.endswith("." + p) for p in out):
            continue
        first = 2 if name.rsplit(".", 1)[-1].isdigit() else 1
        for parts in range(first, name.count(".") + 2):
            cand = _suffix(name, parts)
            if all(isinstance(modules[m], allowed) for m in resolve_targets(model, (cand,))):
                out.append(cand)
                break
    return tuple(out)


def infer_targets(model: nn.Module) -> tuple[PeftTargets, str]:
    """PEFT targets and family ("vit" when attention linears exist) read off a built model."""
    attention, mlp, conv, norm = [], [], [], []
    mha: list[str] = []
    mha_out: list[str] = []  # the Linear out_proj of each MultiheadAttention, for methods that cannot wrap MHA
    for name, module in model.named_modules():
        last = name.rsplit(".", 1)[-1]
        parent = name.rsplit(".", 2)[-2] if name.count(".") >= 1 else ""
        if any(name.startswith(m + ".") for m in mha):
            if isinstance(module, nn.Linear):
                mha_out.append(name)
            continue  # inside nn.MultiheadAttention: peft's LoRA wraps the whole module
        if isinstance(module, nn.MultiheadAttention):
            mha.append(name)
            attention.append(name)
        elif (
            isinstance(module, nn.Linear)
            and last in ATTENTION_LINEARS
            and (last != "proj" or parent in ATTENTION_PARENTS)
            and ("attn" in name or "attention" in name)
        ):
            attention.append(name)
        elif isinstance(module, nn.Linear) and last in MLP_LINEARS and "attention.output" not in name:
            mlp.append(name)
        elif isinstance(module, nn.Conv2d):
            conv.append(name)
        elif isinstance(module, NORM_TYPES) and any(p.requires_grad for p in module.parameters(recurse=False)):
            norm.append(name)
    # a CNN with an attention pool (open_clip's ModifiedResNet) is still a CNN
    family = "vit" if len(attention) > len(conv) else "cnn"
    linear = (nn.Linear, nn.MultiheadAttention)
    return (
        PeftTargets(
            attention=_patterns(model, attention, linear),
            attention_linear=_patterns(model, [n for n in attention if n not in mha] + mha_out, (nn.Linear,))
            if mha
            else (),
            mlp=_patterns(model, mlp, (nn.Linear,)) if family == "vit" else (),
            conv=_patterns(model, conv, (nn.Conv2d,)) if family == "cnn" else (),
            norm=_patterns(model, norm, NORM_TYPES),
        ),
        family,
    )


def _meta_count(make: Callable[[], nn.Module]) -> tuple[nn.Module, int]:
    with torch.device("meta"):
        model = make()
    return model, count_parameters(model)


# ---- timm: -------------------------------------------------------------------------------------------


def resolve_timm(model_name: str) -> BackboneSpec:
    import timm
    from timm.data import resolve_data_config

    if not timm.is_model(model_name):
        raise MedtransferError(
            f'timm knows no model {model_name!r}; list candidates with `python -c "import timm; '
            f"print(timm.list_models('*{model_name.split('.')[0][:12]}*'))\"`"
        )

    def make(pretrained: bool = False, **kw) -> nn.Module:
        return timm.create_model(model_name, pretrained=pretrained, num_classes=0, **kw)

    meta_model, n = _meta_count(make)
    cfg = resolve_data_config({}, model=meta_model)
    crop = float(cfg.get("crop_pct", 1.0) or 1.0)
    size = int(cfg["input_size"][-1])
    targets, family = infer_targets(meta_model)
    hub_id = (getattr(meta_model, "pretrained_cfg", {}) or {}).get("hf_hub_id") or model_name

    def build(pretrained: bool) -> nn.Module:
        if not pretrained:
            return make()
        with download_guard(
            f"timm {model_name}",
            url=f"https://huggingface.co/{hub_id}",
            hint=f"download model.safetensors from https://huggingface.co/{hub_id}",
        ):
            return make(pretrained=True)

    def load_local(path: Path) -> nn.Module:
        if path.is_dir():
            files = [p for n_ in ("model.safetensors", "pytorch_model.bin") if (p := path / n_).exists()]
            if not files:
                raise MedtransferError(f"{path} holds no model.safetensors / pytorch_model.bin")
            path = files[0]
        with download_guard(f"timm {model_name} from {path}"):
            return make(pretrained=True, pretrained_cfg_overlay={"file": str(path)})

    return BackboneSpec(
        name=f"timm:{model_name}",
        architecture=f"timm {model_name}",
        source=f"timm {model_name} (Hugging Face {hub_id})",
        embed_dim=int(meta_model.num_features),
        n_params_m=n / 1e6,
        embedding_kind=f"timm pooled features (global_pool={getattr(meta_model, 'global_pool', '?')!s})",
        build=build,
        local_loader=load_local,
        preprocessing=Preprocessing(
            input_size=size,
            resize="center-crop" if crop < 1.0 else "squash",
            crop_fraction=crop if crop < 1.0 else 1.0,
            mean=tuple(float(v) for v in cfg["mean"]),
            std=tuple(float(v) for v in cfg["std"]),
            interpolation="bicubic" if cfg.get("interpolation") == "bicubic" else "bilinear",
        ),
        targets=targets,
        family=family,
    )


# ---- open_clip: --------------------------------------------------------------------------------------


def resolve_open_clip(rest: str) -> BackboneSpec:
    import open_clip
    from open_clip.pretrained import download_pretrained

    arch, _, tag = rest.partition("/")
    cfg = open_clip.get_model_config(arch)
    if cfg is None:
        raise MedtransferError(
            f"open_clip knows no architecture {arch!r}; see open_clip.list_models() (write open_clip:<arch>/<tag>)"
        )
    pcfg = open_clip.get_pretrained_cfg(arch, tag) if tag else {}
    if tag and not pcfg:
        tags = ", ".join(open_clip.list_pretrained_tags_by_model(arch)) or "none"
        raise MedtransferError(f"open_clip {arch} has no pretrained tag {tag!r}; known tags: {tags}")

    def make() -> nn.Module:
        visual = build_vision_tower(cfg["embed_dim"], cfg["vision_cfg"], quick_gelu=pcfg.get("quick_gelu", False))
        return wrap_tower(visual, cfg["embed_dim"])

    meta_model, n = _meta_count(make)
    targets, family = infer_targets(meta_model)
    size = cfg["vision_cfg"].get("image_size", 224)
    size = size[-1] if isinstance(size, (list, tuple)) else size
    hub = pcfg.get("hf_hub", "").rstrip("/")

    def fetch() -> str:
        if not tag:  # a MedtransferError passes the download guard unchanged
            tags = ", ".join(open_clip.list_pretrained_tags_by_model(arch)) or "none"
            raise MedtransferError(f"open_clip:{arch} has no pretrained tag; write open_clip:{arch}/<tag> ({tags})")
        return download_pretrained(pcfg)

    build, load_local = checkpoint_loaders(
        make,
        load_open_clip_tower,
        fetch,
        f"open_clip {arch}/{tag}",
        url=f"https://huggingface.co/{hub}" if hub else None,
        hint=f"download the weights of https://huggingface.co/{hub}" if hub else "",
        find_file=find_open_clip_file,
    )

    return BackboneSpec(
        name=f"open_clip:{rest}",
        architecture=f"open_clip {arch}",
        source=f"open_clip {arch}, pretrained={tag!r}" if tag else f"open_clip {arch} (no pretrained tag)",
        embed_dim=int(cfg["embed_dim"]),
        n_params_m=n / 1e6,
        embedding_kind="image-embedding (open_clip encode_image)",
        build=build,
        local_loader=load_local,
        preprocessing=Preprocessing(
            input_size=int(size),
            resize="center-crop",
            crop_fraction=1.0,
            mean=tuple(pcfg.get("mean") or CLIP_MEAN),
            std=tuple(pcfg.get("std") or CLIP_STD),
            interpolation=pcfg.get("interpolation", "bicubic"),
        ),
        targets=targets,
        family=family,
    )


# ---- hf: ---------------------------------------------------------------------------------------------


class HFEmbedder(nn.Module):
    """Any transformers vision backbone: ``pooler_output`` if it has one, else the CLS token (ViTs) or the
    spatial mean (CNN feature maps)."""

    def __init__(self, backbone: nn.Module) -> None:
        super().__init__()
        self.backbone = backbone

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.backbone(pixel_values=x)
        pooled = getattr(out, "pooler_output", None)
        if pooled is None:
            hidden = out.last_hidden_state
            pooled = hidden[:, 0] if hidden.dim() == 3 else hidden.mean(dim=(2, 3))
        return pooled.flatten(1)


def _vision_part(model: nn.Module) -> nn.Module:
    """CLIP-like dual encoders: keep the vision tower."""
    if hasattr(model, "vision_model") and (hasattr(model, "text_model") or hasattr(model, "text_projection")):
        return model.vision_model
    return model


def _hf_config(repo: str):
    from transformers import AutoConfig

    local = Path(repo).exists()
    with download_guard(
        f"the config of {repo}",
        url=None if local else f"https://huggingface.co/{repo}",
        # the architecture comes from config.json, so --weights random needs it too
        instead=f"download config.json (and the weights) of https://huggingface.co/{repo} into a folder and "
        "pass --backbone hf:FOLDER (with any --weights, random included)",
    ):
        return AutoConfig.from_pretrained(repo, local_files_only=not local and hub_offline())


def _hf_preprocessing(repo: str, config) -> Preprocessing:
    size = getattr(getattr(config, "vision_config", config), "image_size", 224)
    size = size[-1] if isinstance(size, (list, tuple)) else int(size)
    try:
        from transformers import AutoImageProcessor

        proc = AutoImageProcessor.from_pretrained(repo, local_files_only=not Path(repo).exists() and hub_offline())
    except Exception:  # no processor config: the model config's image size, ImageNet statistics
        return Preprocessing(input_size=size)
    crop = getattr(proc, "crop_size", None) or {}
    rsz = getattr(proc, "size", None) or {}
    short = rsz.get("shortest_edge") if isinstance(rsz, dict) else None
    if getattr(proc, "do_center_crop", False) and crop:
        size = int(crop.get("height", size))
        frac = size / short if short else 1.0
        resize = "center-crop"
    else:
        size = int(rsz.get("height", short or size)) if isinstance(rsz, dict) else size
        frac, resize = 1.0, "squash"
    mean = tuple(float(v) for v in (getattr(proc, "image_mean", None) or IMAGENET_MEAN))
    std = tuple(float(v) for v in (getattr(proc, "image_std", None) or IMAGENET_STD))
    resample = getattr(proc, "resample", 2)
    return Preprocessing(
        input_size=size,
        resize=resize,
        crop_fraction=min(1.0, frac),
        mean=mean,
        std=std,
        interpolation="bicubic" if int(getattr(resample, "value", resample) or 2) == 3 else "bilinear",
    )


def resolve_hf(repo: str) -> BackboneSpec:
    from transformers import AutoModel

    config = _hf_config(repo)

    def make() -> nn.Module:
        return HFEmbedder(_vision_part(AutoModel.from_config(config)))

    try:
        meta_model, n = _meta_count(make)
    except ValueError as exc:  # AutoModel knows no class for this config
        raise MedtransferError(f"hf:{repo} is not a model transformers' AutoModel can build ({exc})") from exc
    vcfg = getattr(config, "vision_config", config)
    dim = getattr(vcfg, "hidden_size", None) or (getattr(vcfg, "hidden_sizes", None) or [None])[-1]
    if dim is None:
        raise MedtransferError(f"cannot tell the embedding size of hf:{repo} from its config")
    targets, family = infer_targets(meta_model)

    def build(pretrained: bool) -> nn.Module:
        if not pretrained:
            return make()
        return HFEmbedder(
            _vision_part(
                hf_from_pretrained(
                    AutoModel, repo, f"hf:{repo}", hint=f"download https://huggingface.co/{repo} into a folder"
                )
            )
        )

    def load_local(path: Path) -> nn.Module:
        if path.is_dir():
            return HFEmbedder(_vision_part(hf_from_pretrained(AutoModel, path, f"the model folder {path}")))
        return HFEmbedder(_vision_part(hf_state_dict_file(AutoModel, config, path)))

    return BackboneSpec(
        name=f"hf:{repo}",
        architecture=f"{type(meta_model.backbone).__name__} ({getattr(config, 'model_type', '?')})",
        source=f"Hugging Face {repo}",
        embed_dim=int(dim),
        n_params_m=n / 1e6,
        embedding_kind="pooler output, else CLS token / spatial mean",
        build=build,
        local_loader=load_local,
        preprocessing=_hf_preprocessing(repo, config),
        targets=targets,
        family=family,
    )


register_open_spec("timm", resolve_timm)
register_open_spec("open_clip", resolve_open_clip)
register_open_spec("hf", resolve_hf)
