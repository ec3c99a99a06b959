"""The backbone registry: each backbone is declared once, with everything extract and adapt need to know.

Like timm's model registry with its pretrained configs: a ``BackboneSpec`` names the architecture, where its
published weights come from, its preprocessing, embedding and the module names PEFT methods target.
Adding a backbone is one ``register(BackboneSpec(...))`` call.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import nn

from medtransfer.errors import MedtransferError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
RANDOM_SEED = 0


@dataclass(frozen=True)
class Preprocessing:
    """How a decoded image becomes the backbone's input; part of the feature-store key."""

    input_size: int = 224
    resize: str = "squash"  # "squash": resize to a square; "center-crop": shorter side, then crop
    crop_fraction: float = 1.0  # center-crop only: resize to input_size / crop_fraction first
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD

    def as_dict(self) -> dict:
        return asdict(self)

    def fingerprint(self) -> str:
        return hashlib.sha256(repr(sorted(self.as_dict().items())).encode()).hexdigest()[:8]


@dataclass(frozen=True)
class PeftTargets:
    """Module-name patterns that adaptation methods target (matched as in peft: name suffixes)."""

    attention: tuple[str, ...] = ()
    mlp: tuple[str, ...] = ()
    conv: tuple[str, ...] = ()

    @property
    def all(self) -> tuple[str, ...]:
        return self.attention + self.mlp + self.conv


Builder = Callable[[bool], nn.Module]
"""Build the embedding model; argument ``pretrained`` loads the published weights through the real path."""


@dataclass(frozen=True)
class BackboneSpec:
    name: str
    architecture: str
    source: str  # where published weights come from, as a user would look it up
    embed_dim: int
    n_params_m: float  # published parameter count of the embedding model, millions
    embedding_kind: str  # e.g. "global-average-pool", "cls-token", "image-embedding"
    build: Builder = field(repr=False)
    preprocessing: Preprocessing = Preprocessing()
    targets: PeftTargets = PeftTargets()
    family: str = "cnn"  # "cnn" or "vit": decides which PEFT targets apply
    state_dict_loader: Callable[[nn.Module, Path], None] | None = field(default=None, repr=False)


@dataclass
class LoadedBackbone:
    """A built model plus a plain statement of which weights it carries."""

    spec: BackboneSpec
    model: nn.Module  # forward(images: B x 3 x H x W, normalized) -> B x embed_dim
    weights: str  # as requested: "default", "random" or a path
    weights_source: str  # what a person should read, e.g. "random initialisation (seed 0)"
    weights_fingerprint: str

    @property
    def preprocessing(self) -> Preprocessing:
        return self.spec.preprocessing


REGISTRY: dict[str, BackboneSpec] = {}


def register(spec: BackboneSpec) -> BackboneSpec:
    if spec.name in REGISTRY:
        raise ValueError(f"backbone {spec.name!r} registered twice")
    REGISTRY[spec.name] = spec
    return spec


def get_spec(name: str) -> BackboneSpec:
    if name not in REGISTRY:
        raise MedtransferError(
            f"unknown backbone {name!r}; known: {', '.join(sorted(REGISTRY))} (see `medtransfer backbones`)"
        )
    return REGISTRY[name]


def load_backbone(name: str, weights: str = "default") -> LoadedBackbone:
    """Build ``name`` with ``weights``: "default" (published weights), "random", or a local checkpoint path."""
    spec = get_spec(name)
    if weights == "random":
        torch.manual_seed(RANDOM_SEED)
        model = spec.build(False)
        source = f"random initialisation (seed {RANDOM_SEED}); no pretrained weights"
    elif weights == "default":
        model = spec.build(True)
        source = spec.source
    else:
        path = Path(weights).expanduser()
        if not path.exists():
            raise MedtransferError(
                f"weights file not found: {path}; pass --weights default, --weights random or an existing file"
            )
        torch.manual_seed(RANDOM_SEED)
        model = spec.build(False)
        (spec.state_dict_loader or load_state_dict_file)(model, path)
        source = f"local checkpoint {path.resolve()}"
    model.eval()
    return LoadedBackbone(
        spec=spec,
        model=model,
        weights=weights,
        weights_source=source,
        weights_fingerprint=state_fingerprint(model),
    )


def load_state_dict_file(model: nn.Module, path: Path) -> None:
    """Load a plain (or ``{"state_dict": ...}``-wrapped) torch checkpoint, insisting every key matches."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for corrupt files
        raise MedtransferError(f"cannot read checkpoint {path}: {exc}") from exc
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise MedtransferError(f"checkpoint {path} holds no state dict")
    result = model.load_state_dict(state, strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise MedtransferError(
            f"checkpoint {path} does not fit this architecture: {len(result.missing_keys)} missing keys "
            f"(e.g. {result.missing_keys[:2]}), {len(result.unexpected_keys)} unexpected "
            f"(e.g. {result.unexpected_keys[:2]})"
        )


def state_fingerprint(model: nn.Module) -> str:
    """A content hash of the weights (names, shapes and a strided sample of values): cheap even for ViT-L."""
    digest = hashlib.sha256()
    for key, tensor in sorted(model.state_dict().items()):
        flat = tensor.detach().reshape(-1)
        sample = flat[:: max(1, flat.numel() // 256)].float().cpu().numpy().tobytes()
        digest.update(key.encode() + str(tuple(tensor.shape)).encode() + sample)
    return digest.hexdigest()[:16]


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
