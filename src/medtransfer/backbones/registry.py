"""The backbone registry: each backbone is declared once, with everything extract and adapt need to know.

Like timm's model registry with its pretrained configs: a ``BackboneSpec`` names the architecture, where its
published weights come from, its preprocessing, embedding and the module names PEFT methods target.
Adding a backbone is one ``register(BackboneSpec(...))`` call.
"""

from __future__ import annotations

import argparse
import hashlib
import pickle
import re
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch
from torch import nn

from medtransfer.errors import MedtransferError, first_line
from medtransfer.registry import Registry, did_you_mean

# torchvision's ImageNet statistics: ``ImageClassification`` defaults, pytorch/vision
# torchvision/transforms/_presets.py (the ``transforms()`` of every ``*_Weights.IMAGENET1K_*`` enum)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
RANDOM_SEED = 0

# ``--resize``: "upstream" keeps each backbone's published evaluation transform; "squash" resizes the whole
# image to input_size x input_size (what the COVID-19 prognosis benchmark fed: 224 px images); "pad" pads the
# shorter side with black to a square, then resizes (MedCLIP's ``MedCLIPFeatureExtractor``)
RESIZE_POLICIES: tuple[str, ...] = ("upstream", "squash", "pad")
_POLICY_RESIZE = {"squash": "squash", "pad": "pad-square"}


@dataclass(frozen=True)
class Preprocessing:
    """How a decoded image becomes the backbone's input; part of the feature-store key."""

    input_size: int = 224
    # "squash": resize to a square; "center-crop": shorter side, then crop;
    # "pad-square": pad the shorter side to a square (with black), then resize
    resize: str = "squash"
    crop_fraction: float = 1.0  # center-crop only: resize to input_size / crop_fraction first
    # center-crop only: how the crop's top / left offset is rounded, as the upstream processor does: "round"
    # (torchvision ``transforms/functional.py`` ``center_crop``: ``int(round((h - crop_h) / 2.0))``) or "floor"
    # (Hugging Face ``transformers/image_transforms.py`` ``center_crop``: ``(h - crop_h) // 2``)
    crop_offset: str = "round"
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    interpolation: str = "bilinear"  # "bilinear" or "bicubic", as the published preprocessing does
    # How images reach the 3 input channels: "rgb": colour images as they are, grayscale replicated to 3
    # channels; "grayscale": every image is converted to one gray channel first, then replicated (MedCLIP)
    channels: str = "rgb"

    def as_dict(self) -> dict:
        return asdict(self)

    def with_policy(self, policy: str) -> Preprocessing:
        """This preprocessing under a ``--resize`` policy; "upstream" is the preprocessing itself."""
        if policy not in RESIZE_POLICIES:
            raise MedtransferError(f"unknown --resize {policy!r}; use {', '.join(RESIZE_POLICIES)}")
        if policy == "upstream":
            return self
        return replace(self, resize=_POLICY_RESIZE[policy], crop_fraction=1.0)

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
    # the query and value projections (MED-PEFT's LoRA targets); empty when q, k, v are one fused Linear
    qv: tuple[str, ...] = ()
    # the input projections q, k, v (separate or fused ``qkv``), without the attention output projection
    qkv: tuple[str, ...] = ()
    # the published benchmark's own ``modules_target`` for this backbone (``--targets seed``), as peft
    # patterns; see SEED_TARGETS_SOURCE
    seed: tuple[str, ...] = ()

    @property
    def all(self) -> tuple[str, ...]:
        """The weight-matrix targets (attention + MLP linears, or convolutions): what LoRA wraps."""
        return self.attention + self.mlp + self.conv


SEED_TARGETS_SOURCE = (
    "cosbidev/Deep-Sick src/configs/PEFT_runs/experiment/models/*.yaml (modules_target), commit 99b9fb0"
)
TARGET_PRESETS: tuple[str, ...] = ("seed", "qv", "attn", "attn-mlp", "all-linear")
# attention + MLP linears (convolutions for CNNs): LoRA's original paper adapts attention only, but adapting
# every linear layer of the blocks is what later studies found best at equal rank (QLoRA, Dettmers et al. 2023,
# section 4), and it is what medtransfer trained before presets existed, so results stay comparable
DEFAULT_TARGET_PRESET = "attn-mlp"


def preset_patterns(spec: BackboneSpec, preset: str, model: nn.Module | None = None) -> tuple[str, ...]:
    """The module patterns a ``--targets`` preset selects on ``spec``'s family (before any method filtering).

    seed: the benchmark's ``modules_target``; qv: q and v projections (MED-PEFT); attn: q, k, v and the output
    projection; attn-mlp: attn + the MLP linears; all-linear: every ``nn.Linear`` of the built ``model``.
    CNNs have no attention: attn-mlp and all-linear give every declared convolution, qv and attn are refused.
    """
    if preset not in TARGET_PRESETS:
        raise MedtransferError(f"unknown --targets {preset!r}; use {', '.join(TARGET_PRESETS)}")
    targets = spec.targets
    if preset == "seed":
        if not targets.seed:
            raise MedtransferError(
                f"backbone {spec.name!r} was not in the published benchmark: --targets seed does not apply "
                f"(use {', '.join(p for p in TARGET_PRESETS if p != 'seed')})"
            )
        return targets.seed
    if spec.family == "cnn":
        if preset in ("qv", "attn"):
            raise MedtransferError(
                f"backbone {spec.name!r} is a CNN without attention: --targets {preset} does not apply "
                "(use seed, attn-mlp or all-linear: its convolutions)"
            )
        return targets.conv
    if preset == "qv":
        if not targets.qv:
            raise MedtransferError(
                f"backbone {spec.name!r} computes q, k and v in one fused Linear ({', '.join(targets.qkv)}): "
                "--targets qv cannot select q and v alone; use attn or attn-mlp"
            )
        return targets.qv
    if preset == "attn":
        return targets.attention
    if preset == "attn-mlp":
        return targets.attention + targets.mlp
    if model is None:
        raise MedtransferError("--targets all-linear needs the built model to list its Linear layers")
    return tuple(name for name, module in model.named_modules() if name and isinstance(module, nn.Linear))


def preset_table(spec: BackboneSpec) -> dict[str, list[str] | str]:
    """Each preset's patterns for ``medtransfer backbones --json`` (the reason when it does not apply)."""
    out: dict[str, list[str] | str] = {}
    for preset in TARGET_PRESETS:
        if preset == "all-linear":
            out[preset] = "every nn.Linear" if spec.family == "vit" else list(spec.targets.conv)
            continue
        try:
            out[preset] = list(preset_patterns(spec, preset))
        except MedtransferError as exc:
            out[preset] = f"n/a: {str(exc).split(': ', 1)[-1]}"
    return out


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
    weights_id: str = ""  # the published weights: a Hugging Face repo id, a URL or a file name
    # the extra feature variants ``extract --embedding`` can store for it (``vocabulary.EMBEDDING_KINDS``)
    feature_variants: tuple[str, ...] = ()
    # where each constant above comes from (URL or repository path), shown by ``medtransfer backbones``
    sources: tuple[tuple[str, str], ...] = ()


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
    # the published benchmark's backbones (``--backbone seed``): each has a model config in cosbidev/Deep-Sick
    # src/configs/PEFT_runs/experiment/models/ (commit 99b9fb0); RAD-DINO has none there, so it is not one of them
    # (and its ``--targets seed`` is refused)
    "resnet50", "densenet121", "dinov2-s", "dinov2-b", "dinov2-l", "clip-l", "biomedclip", "pubmedclip",
    "medclip-resnet", "medclip-swin",
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
        f"unknown backbone {name!r}{did_you_mean(name, REGISTRY)}; known: {', '.join(sorted(REGISTRY))}, or an "
        f"open spec ({opens}) "
        "(see `medtransfer backbones`)"
    )


def backbone_table() -> list[dict]:
    """One row per registered backbone, for ``medtransfer backbones`` (``--json``, ``--markdown``)."""
    rows = []
    for spec in REGISTRY.values():
        prep = spec.preprocessing
        rows.append({
            "name": spec.name,
            "architecture": spec.architecture,
            "params_m": round(spec.n_params_m, 1),
            "dim": spec.embed_dim,
            "default_embedding": spec.embedding_kind,
            "source": spec.source,
            "weights_id": spec.weights_id,
            "input_size": prep.input_size,
            "resize": prep.resize,
            "resize_to": round(prep.input_size / prep.crop_fraction)
            if prep.resize == "center-crop" else prep.input_size,
            "interpolation": prep.interpolation,
            "mean": list(prep.mean),
            "std": list(prep.std),
            "channels": prep.channels,
            "feature_variants": list(spec.feature_variants),
            "peft_presets": preset_table(spec),
            "sources": dict(spec.sources),
            "seed": spec.name in SEED_BACKBONES,  # in the published benchmark's set (``--backbone seed``)
        })
    return rows


def backbone_markdown(rows: list[dict] | None = None) -> str:
    """The README's backbone table (``medtransfer backbones --markdown``), from ``backbone_table``."""
    rows = backbone_table() if rows is None else rows
    lines = [
        "| name | weights | input | resize (upstream) | interp. | mean / std | default embedding (dim) | "
        "variants | seed targets | sources |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        resize = {"center-crop": f"short side {r['resize_to']}, center-crop", "squash": "squash",
                  "pad-square": "pad to square"}[r["resize"]]
        stats = "/".join(f"{m:g}" for m in dict.fromkeys(r["mean"])) + " / " + "/".join(
            f"{v:g}" for v in dict.fromkeys(r["std"]))
        seed = r["peft_presets"]["seed"]
        seed = ", ".join(seed) if isinstance(seed, list) else "-"
        sources = "; ".join(f"{k}: {v}" for k, v in r["sources"].items())
        lines.append(
            f"| `{r['name']}` | {r['weights_id'] or r['source']} | {r['input_size']} | {resize} | "
            f"{r['interpolation']} | {stats} | {r['default_embedding']} ({r['dim']}) | "
            f"{', '.join(r['feature_variants']) or '-'} | {seed} | {sources} |"
        )
    return "\n".join(lines)


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
            # MAE-family checkpoints (MRM, CXR-MAE) store their training ``args`` as an argparse.Namespace:
            # allow-list that one type instead of unpickling arbitrary objects (weights_only stays on)
            with torch.serialization.safe_globals([argparse.Namespace]):
                state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for corrupt files
        raise MedtransferError(checkpoint_refusal(path, exc)) from None
    for key in wrappers:
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
            break
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise MedtransferError(f"checkpoint {path} holds no state dict of tensors")
    return state


def unloadable_chain(exc: BaseException) -> BaseException | None:
    """The error in ``exc``'s chain that says a checkpoint file cannot be loaded as tensors (torch's weights-only
    unpickler refusing a global, a torn pickle or zip), or None when the failure is about something else."""
    seen: BaseException | None = exc
    while seen is not None:
        text = str(seen)
        if isinstance(seen, pickle.UnpicklingError | EOFError) or "Weights only load failed" in text \
                or "PytorchStreamReader" in text or "invalid load key" in text:
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


def checkpoint_refusal(path: Path | str, exc: BaseException) -> str:
    """Why a checkpoint is not loaded, in our words (torch's own message advises turning ``weights_only`` off,
    which would run whatever code the file holds: https://pytorch.org/docs/stable/generated/torch.load.html)."""
    cause = unloadable_chain(exc) or exc
    text = str(cause)
    if isinstance(cause, pickle.UnpicklingError) or "Weights only load failed" in text:
        found = re.search(r"GLOBAL ([\w.]+)", text)
        what = f" (e.g. {found.group(1)})" if found else ""
        return (f"refusing checkpoint {path}: it holds code or Python objects that are not tensors{what}, and "
                "loading those can run code; medtransfer loads tensors only -- re-save it as a state dict of tensors "
                "(or .safetensors) where it was made")
    return (f"cannot read checkpoint {path}: the file is damaged or not a torch/safetensors checkpoint "
            f"({type(cause).__name__}: {first_line(cause, 120)})")


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
