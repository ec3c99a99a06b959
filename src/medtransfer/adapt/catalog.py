"""The method catalogue behind ``medtransfer methods``: each method's paper, default hyperparameters and options,
the families it applies to and its % trainable parameters, computed by applying it to the reference architectures
(ViT-B/16 and ResNet-50 by default) built on the meta device: shapes only, no weights allocated or downloaded,
so the whole table takes seconds."""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable

import torch
from torch import nn

from medtransfer.adapt.config import AdaptConfig
from medtransfer.adapt.methods import METHODS, AdaptMethod
from medtransfer.adapt.model import Classifier, parameter_counts
from medtransfer.backbones.registry import get_spec
from medtransfer.backbones.vit import without_unused_projection
from medtransfer.errors import MedtransferError

REFERENCES = ("timm:vit_base_patch16_224", "resnet50")
META = torch.device("meta")


def defaults(method: AdaptMethod) -> str:
    """The hyperparameters a run uses unless told otherwise: lr, the method's options, its config defaults."""
    parts = [f"lr={method.default_lr:g}"]
    parts += [f"{k}={v}" for k, v in method.make_options().record().items()]
    parts += [f"{k}={v}" for k, v in method.config_defaults.items()]
    return ", ".join(parts)


def trainable_share(method: AdaptMethod, reference: str, backbone: nn.Module | None = None) -> float | None:
    """% of a 2-class classifier's parameters the method trains on ``reference``; None where the method does not
    apply to that backbone (its one-line refusal). Built on the meta device (``backbone``: a meta-device build to
    copy); a method whose initialisation reads weight values (peft's BOFT, SHiRA) is applied to random weights
    on the CPU instead."""
    try:
        return _share(method, reference, META, backbone)
    except MedtransferError as exc:
        if "meta" not in str(exc):
            return None
    try:
        return _share(method, reference, torch.device("cpu"), None)
    except MedtransferError:
        return None


def _share(method: AdaptMethod, reference: str, device: torch.device, backbone: nn.Module | None) -> float:
    spec = get_spec(reference)
    with device:
        backbone = without_unused_projection(copy.deepcopy(backbone) if backbone is not None else spec.build(False))
        adapted = method.apply(backbone, spec, method.make_options(), AdaptConfig(**method.config_defaults))
        trainable, total = parameter_counts(Classifier(adapted, spec.embed_dim, 2))
    return 100.0 * trainable / total


def method_catalog(references: tuple[str, ...] = REFERENCES,
                   progress: Callable[[str], None] | None = None) -> list[dict]:
    """One row per registered method: name, paper, lr, trains, options (with help), defaults, families and the %
    trainable per reference backbone (``None``: not applicable)."""
    specs = {name: get_spec(name) for name in references}
    with META:
        built = {name: spec.build(False) for name, spec in specs.items()}
    rows = []
    log = logging.getLogger("medtransfer.adapt")
    level = log.level
    log.setLevel(logging.ERROR)  # the table says where a method applies; its skip warnings would repeat it
    try:
        for method in METHODS.values():
            row = {"method": method.name, "paper": method.paper, "lr": method.default_lr, "trains": method.trains,
                   "options": method.options.describe(), "defaults": defaults(method), "families": []}
            for name, spec in specs.items():
                row[name] = trainable_share(method, name, built[name])
                if row[name] is not None and spec.family not in row["families"]:
                    row["families"].append(spec.family)
            if progress is not None:
                progress(method.name)
            rows.append(row)
    finally:
        log.setLevel(level)
    return rows
