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

from medtransfer.errors import MedtransferError, first_line
from medtransfer.registry import Registry

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
RANDOM_SEED = 0


@dataclass(frozen=True)
class Preprocessing:
    """How a decoded image becomes the backbone's input; part of the feature-store key."""

    input_size: int = 224
    # "squash": resize to a square; "center-crop": shorter side, then crop;
    # "pad-square": pad the shorter side to a square (with black), then resize
    resize: str = "squash"
    crop_fraction: float = 1.0  # center-crop only: resize to input_size / crop_fraction first
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    interpolation: str = "bilinear"  # "bilinear" or "bicubic", as the published preprocessing does
    # How images reach the 3 input channels: "rgb": colour images as they are, grayscale replicated to 3
    # channels; "grayscale": every image is converted to one gray channel first, then replicated (MedCLIP)
    channels: str = "rgb"

    def as_dict(self) -> dict:
        return asdict(self)

    def fingerprint(self) -> str:
        return hashlib.sha256(repr(sorted(self.as_dict().items())).encode()).hexdigest()[:8]


@dataclass(frozen=True)
class PeftTargets:
    """Module-name patterns that adaptation methods target, matched as peft matches ``target_modules``:
    a module named ``n`` is targeted by pattern ``t`` when ``n == t`` or ``n.endswith("." + t)``.

    ``attention`` / ``mlp``: the linear layers of ViT blocks (LoRA, adapters); ``conv``: a CNN's
    convolutions; ``norm``: normalisation layers (LN-tuning, or BatchNorm for CNNs). BitFit trains every
    parameter whose name ends in ``bias_suffix``. A test checks every pattern resolves on the built model.
    ``attention_linear``: Linear-only attention patterns for methods that cannot wrap a fused attention module
    (open_clip's ``nn.MultiheadAttention``: only peft's LoRA can); empty when ``attention`` is Linear already.
    """

    attention: tuple[str, ...] = ()
    attention_linear: tuple[str, ...] = ()
    mlp: tuple[str, ...] = ()
    conv: tuple[str, ...] = ()
    norm: tuple[str, ...] = ()
    bias_suffix: str = "bias"

    @property
    def all(self) -> tuple[str, ...]:
        """The weight-matrix targets (attention + MLP linears, or convolutions): what LoRA wraps."""
        return self.attention + self.mlp + self.conv


def matches_target(module_name: str, patterns: tuple[str, ...] | list[str]) -> bool:
    """peft's rule for a list of ``target_modules``: exact name or dotted suffix."""
    return any(module_name == t or module_name.endswith("." + t) for t in patterns)


def resolve_targets(model: nn.Module, patterns: tuple[str, ...] | list[str]) -> list[str]:
    """Names of the modules of ``model`` that ``patterns`` select."""
    return [name for name, _ in model.named_modules() if name and matches_target(name, patterns)]


Builder = Callable[[bool], nn.Module]
"""Build the embedding model; argument ``pretrained`` loads the published weights through the real path."""


@dataclass(frozen=True)
class BackboneSpec:
    """One backbone, declared once.

    Parameter counts. ``n_params_m`` is the parameter count of the *embedding model* exactly as
    ``load_backbone`` builds it (what extract runs and what adapt's "trainable %" is relative to; a test
    asserts it to 0.5%). ``published_params_m`` is the figure the papers / model cards quote and
    ``published_params_delta`` the parameters that figure counts but our embedding model leaves out
    (positive, e.g. ResNet-18's 1000-class head) or that we keep but the figure leaves out (negative).
    A test asserts ``count(model) + delta`` is within ``published_tolerance`` of the published figure.
    """

    name: str
    architecture: str
    source: str  # where published weights come from, as a user would look it up
    embed_dim: int
    n_params_m: float  # parameter count of the embedding model as built, millions
    embedding_kind: str  # e.g. "global-average-pool", "cls-token", "image-embedding"
    build: Builder = field(repr=False)
    preprocessing: Preprocessing = Preprocessing()
    targets: PeftTargets = PeftTargets()
    family: str = "cnn"  # "cnn" or "vit": decides which PEFT targets apply
    state_dict_loader: Callable[[nn.Module, Path], None] | None = field(default=None, repr=False)
    # builds the model from a local file or folder (``--weights PATH``); overrides build + state_dict_loader
    local_loader: Callable[[Path], nn.Module] | None = field(default=None, repr=False)
    published_params_m: float | None = None
    published_params_delta: int = 0
    published_params_note: str = ""
    published_tolerance: float = 0.05
    default_weights_hint: str = ""  # what to do when the published weights cannot be fetched


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


REGISTRY: Registry[BackboneSpec] = Registry("backbone")
SEED_BACKBONES: tuple[str, ...] = (
    # the published benchmark's backbones (``--backbone seed``)
    "resnet50", "densenet121", "dinov2-s", "dinov2-b", "dinov2-l", "clip-l", "biomedclip", "pubmedclip",
    "medclip-resnet", "medclip-swin", "rad-dino",
)  # fmt: skip
OPEN_SPEC_RESOLVERS: dict[str, Callable[[str], BackboneSpec]] = {}
"""``prefix`` -> function turning ``"prefix:rest"`` into a spec (``timm:``, ``open_clip:``, ``hf:``)."""
_OPEN_SPEC_CACHE: dict[str, BackboneSpec] = {}


def register_open_spec(prefix: str, resolver: Callable[[str], BackboneSpec]) -> None:
    OPEN_SPEC_RESOLVERS[prefix] = resolver


def register(spec: BackboneSpec) -> BackboneSpec:
    return REGISTRY.add(spec)


def get_spec(name: str) -> BackboneSpec:
    """A registered name, or an open spec ``timm:<model>``, ``open_clip:<arch>/<tag>``, ``hf:<repo-id>``."""
    if name in REGISTRY:
        return REGISTRY[name]
    prefix, sep, rest = name.partition(":")
    if sep and prefix in OPEN_SPEC_RESOLVERS:
        if not rest:
            raise MedtransferError(f"empty open spec {name!r}; write e.g. {prefix}:<model name>")
        if name not in _OPEN_SPEC_CACHE:
            _OPEN_SPEC_CACHE[name] = OPEN_SPEC_RESOLVERS[prefix](rest)
        return _OPEN_SPEC_CACHE[name]
    opens = ", ".join(f"{p}:<name>" for p in sorted(OPEN_SPEC_RESOLVERS))
    raise MedtransferError(
        f"unknown backbone {name!r}; known: {', '.join(sorted(REGISTRY))}, or an open spec ({opens}) "
        "(see `medtransfer backbones`)"
    )


def backbone_table() -> list[dict]:
    """One row per registered backbone, for ``medtransfer backbones``."""
    return [
        {
            "name": spec.name,
            "params_m": round(spec.n_params_m, 1),
            "dim": spec.embed_dim,
            "input_size": spec.preprocessing.input_size,
            "source": spec.source,
            "seed": spec.name in SEED_BACKBONES,  # in the published benchmark's set (``--backbone seed``)
        }
        for spec in REGISTRY.values()
    ]


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
        if spec.local_loader is not None:
            model = spec.local_loader(path)
        else:
            if path.is_dir():
                raise MedtransferError(
                    f"{path} is a folder; backbone {name!r} loads a single checkpoint file (.pth/.bin/.safetensors)"
                )
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


def read_state_dict(path: Path, wrappers: tuple[str, ...] = ("state_dict", "model")) -> dict[str, torch.Tensor]:
    """Read a torch (``.pth``/``.pt``/``.bin``) or safetensors checkpoint; unwrap ``{"state_dict": ...}``."""
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for corrupt files
        raise MedtransferError(f"cannot read checkpoint {path}: {first_line(exc, 160)}") from exc
    for key in wrappers:
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
            break
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise MedtransferError(f"checkpoint {path} holds no state dict of tensors")
    return state


def strip_ddp_prefix(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Checkpoints saved from a ``DistributedDataParallel`` / ``DataParallel`` model prefix every key "module."."""
    return {k.removeprefix("module."): v for k, v in state.items()}


def load_state_dict_file(model: nn.Module, path: Path) -> None:
    """Load a plain (or ``{"state_dict": ...}``-wrapped) checkpoint, insisting every key matches."""
    load_state_dict_strict(model, read_state_dict(path), path)


def load_state_dict_strict(model: nn.Module, state: dict[str, torch.Tensor], path: Path | str) -> None:
    """``load_state_dict`` that turns missing / unexpected keys and shape mismatches into one-line errors."""
    own = model.state_dict()
    wrong = [k for k, v in state.items() if k in own and tuple(v.shape) != tuple(own[k].shape)]
    if wrong:
        k = wrong[0]
        raise MedtransferError(
            f"checkpoint {path} does not fit this architecture: {len(wrong)} tensors have other shapes "
            f"(e.g. {k}: {tuple(state[k].shape)} vs {tuple(own[k].shape)})"
        )
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
