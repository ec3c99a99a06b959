"""Finding a backbone's feature group without building the backbone, so that re-running ``extract`` on a
complete store (``--backbone seed``: eleven models, several GB of weights) builds no model and takes seconds.

A group's key hashes the *content* of the weights (``backbones.registry.state_fingerprint``), which needs the
model built. Instead, every group records ``weights_identity``: what the weights are, told without building
them:

- ``default``: the published weights the registry names (``BackboneSpec.source`` and ``weights_id``);
- ``random``: the seed, the architecture and the versions of the packages that build it (another version may
  initialise differently);
- a local checkpoint file or folder: a fingerprint of each file (size, modification time, and a hash of its
  first and last MiB), so that a changed checkpoint is built and hashed again.

A group is reused without a build when its backbone, weights, ``weights_identity``, preprocessing (the
registry's declared one under ``--resize``, plus the pixel-cache source when that changes the inputs), feature
dtype and embedding variants all match, its done chunks read back intact, and the manifest adds no row to it.
Anything else (a new image, a new variant, a changed checkpoint, ``--repair``) takes the usual path: build, hash,
plan.

Stores written before ``weights_identity`` existed: a ``default`` or ``random`` group's identity is rebuilt
from the attributes it always recorded (``weights_source``, ``architecture``, ``versions``), so those groups
are reused without a build too; a local-checkpoint group has no file fingerprint, so its first re-run builds
the model once (as before) and stamps the identity on the group, and later re-runs skip the build.
"""

from __future__ import annotations

import hashlib
from contextlib import suppress
from importlib import metadata
from pathlib import Path

from medtransfer.backbones.registry import RANDOM_SEED, BackboneSpec

IDENTITY_ATTR = "weights_identity"
_BUILDER_PACKAGES = ("medtransfer", "torch", "torchvision", "timm", "transformers", "open_clip_torch")
_EDGE = 1 << 20  # bytes hashed at each end of a checkpoint file


def builder_versions() -> dict[str, str]:
    """Versions of the packages that build a backbone (those ``random`` weights depend on)."""
    versions = {}
    for package in _BUILDER_PACKAGES:
        with suppress(metadata.PackageNotFoundError):
            versions[package] = metadata.version(package)
    return versions


def _random_identity(architecture: str, versions: dict) -> str:
    packages = ",".join(f"{k}={versions[k]}" for k in _BUILDER_PACKAGES if k in versions)
    return f"random|seed {RANDOM_SEED}|{architecture}|{packages}"


def file_identity(path: Path) -> str:
    """Size, modification time and a hash of the first and last MiB of every file under ``path``: cheap for a
    multi-GB checkpoint, and changed by any rewrite of it."""
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    digest = hashlib.blake2b(digest_size=16)
    for file in files:
        stat = file.stat()
        digest.update(f"{file.relative_to(path) if path.is_dir() else file.name}|{stat.st_size}|"
                      f"{stat.st_mtime_ns}|".encode())
        with file.open("rb") as handle:
            digest.update(handle.read(_EDGE))
            if stat.st_size > 2 * _EDGE:
                handle.seek(-_EDGE, 2)
                digest.update(handle.read(_EDGE))
    return digest.hexdigest()


def weights_identity(spec: BackboneSpec, weights: str) -> str | None:
    """What ``load_backbone(spec.name, weights)`` would carry, without building it; None when it cannot be
    told (a checkpoint path that does not exist: the build path says so)."""
    if weights == "default":
        return f"default|{spec.source}|{spec.weights_id}"
    if weights == "random":
        return _random_identity(spec.architecture, builder_versions())
    path = Path(weights).expanduser()
    if not path.exists():
        return None
    return f"file|{file_identity(path)}"


def recorded_identity(attrs: dict, spec: BackboneSpec) -> str | None:
    """The identity a group records, or for a group written before it was recorded, the one rebuilt from its
    other attributes (``default``: the source it was loaded from; ``random``: architecture and versions)."""
    if IDENTITY_ATTR in attrs:
        return attrs[IDENTITY_ATTR]
    weights = attrs.get("weights")
    if weights == "default" and attrs.get("weights_source") == spec.source:
        return f"default|{spec.source}|{spec.weights_id}"
    if weights == "random" and "architecture" in attrs:
        return _random_identity(attrs["architecture"], {
            k: v for k, v in dict(attrs.get("versions", {})).items() if k in _BUILDER_PACKAGES})
    return None
