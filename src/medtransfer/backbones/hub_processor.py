"""The published ``preprocessor_config.json`` of a Hugging Face model, checked against our registry entry.

A registry constant that differs from the authors' processor silently changes every feature in the store. When
the weights come from a Hugging Face snapshot (the hub, its offline cache, or a downloaded folder), the authors'
processor file is next to them, so the declared ``Preprocessing`` is checked against it at load time and a
difference is an error naming both. Without the file (a bare weights file, a folder saved without its processor)
there is nothing to check, and the registry's cited values are used as they are.

The file's keys are those of transformers' image processors (``image_mean``, ``image_std``, ``size``,
``crop_size``, ``do_center_crop``, ``resample`` as a PIL code: 2 bilinear, 3 bicubic); see
https://huggingface.co/docs/transformers/main_classes/image_processor.
"""

from __future__ import annotations

import json
from pathlib import Path

from medtransfer.backbones.registry import Preprocessing
from medtransfer.errors import MedtransferError

PROCESSOR_FILE = "preprocessor_config.json"
# PIL resampling codes (PIL.Image.Resampling: BILINEAR = 2, BICUBIC = 3), as transformers stores ``resample``
_RESAMPLE_NAMES = {2: "bilinear", 3: "bicubic"}
_TOLERANCE = 1e-4


def find_processor_file(repo_or_path: str | Path, *, offline: bool) -> Path | None:
    """The processor file of a local model folder, or of a hub repo (from the cache when ``offline``)."""
    local = Path(str(repo_or_path))
    if local.exists():
        candidate = local / PROCESSOR_FILE if local.is_dir() else None
        return candidate if candidate is not None and candidate.is_file() else None
    try:
        from huggingface_hub import hf_hub_download

        return Path(hf_hub_download(str(repo_or_path), PROCESSOR_FILE, local_files_only=offline))
    except Exception:  # noqa: BLE001 -- no file in the repo, or not in the offline cache: nothing to check against
        return None


def _edge(value: object) -> int | None:
    """``size`` / ``crop_size`` as transformers writes them: an int, ``{"shortest_edge": n}`` or height/width."""
    if isinstance(value, int):
        return value
    if isinstance(value, dict):
        if "shortest_edge" in value:
            return int(value["shortest_edge"])
        if "height" in value and value.get("height") == value.get("width"):
            return int(value["height"])
    return None


def processor_differences(config: dict, declared: Preprocessing) -> list[str]:
    """Each way ``declared`` departs from the published processor config (empty when they agree)."""
    differences: list[str] = []
    for key, ours in (("image_mean", declared.mean), ("image_std", declared.std)):
        theirs = config.get(key)
        if theirs is None:
            continue
        theirs = [float(theirs)] * 3 if isinstance(theirs, (int, float)) else [float(v) for v in theirs]
        if len(theirs) != len(ours) or any(abs(a - b) > _TOLERANCE for a, b in zip(theirs, ours, strict=True)):
            differences.append(f"{key} {theirs} (ours {list(ours)})")
    center_crop = bool(config.get("do_center_crop", False))
    final = _edge(config.get("crop_size")) if center_crop else _edge(config.get("size"))
    if final is not None and final != declared.input_size:
        differences.append(f"input size {final} (ours {declared.input_size})")
    if center_crop and declared.resize == "center-crop":
        short_side = _edge(config.get("size"))
        ours_short = round(declared.input_size / declared.crop_fraction)
        if short_side is not None and short_side != ours_short:
            differences.append(f"shorter side resized to {short_side} before the crop (ours {ours_short})")
    resample = _RESAMPLE_NAMES.get(config.get("resample"))  # type: ignore[arg-type]
    if resample is not None and resample != declared.interpolation:
        differences.append(f"interpolation {resample} (ours {declared.interpolation})")
    return differences


def check_published_processor(repo_or_path: str | Path, declared: Preprocessing, *, what: str,
                              offline: bool) -> None:
    """Refuse a model whose published processor disagrees with the registry's preprocessing."""
    path = find_processor_file(repo_or_path, offline=offline)
    if path is None:
        return
    try:
        config = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise MedtransferError(f"{path} (the processor config of {what}) is unreadable: {exc}") from exc
    differences = processor_differences(config, declared)
    if differences:
        raise MedtransferError(
            f"the published preprocessing of {what} ({path}) differs from medtransfer's registry entry: "
            f"{'; '.join(differences)}. Features would not match the authors' pipeline; please report this "
            "registry defect (medtransfer backbones --json shows the declared values)"
        )
