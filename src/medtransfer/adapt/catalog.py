"""The method catalogue behind ``medtransfer methods``: each method's paper, defaults, the families it applies to
and its % trainable parameters, computed by applying it to randomly initialised reference architectures
(ViT-B/16 and ResNet-50 by default; nothing is downloaded or cached)."""

from __future__ import annotations

import copy
import dataclasses
import logging

from medtransfer.adapt.config import AdaptConfig
from medtransfer.adapt.methods import METHODS, PAPERS, AdaptMethod
from medtransfer.adapt.model import Classifier, parameter_counts
from medtransfer.adapt.vision import describe
from medtransfer.backbones.registry import load_backbone
from medtransfer.errors import MedtransferError

REFERENCES = ("timm:vit_base_patch16_224", "resnet50")


def defaults(method: AdaptMethod) -> str:
    """The hyperparameters a run uses unless told otherwise."""
    parts = [f"lr={method.default_lr:g}"]
    config = AdaptConfig(**method.config_defaults)
    if method.uses_rank:
        parts.append(f"rank={config.rank}, alpha={config.lora_alpha:g}")
    if method.options is not None and dataclasses.fields(method.options):
        parts.append(describe(method.options()))
    parts += [f"{k}={v}" for k, v in method.config_defaults.items() if k != "rank"]
    return ", ".join(parts)


def method_catalog(references: tuple[str, ...] = REFERENCES, progress=None) -> list[dict]:
    """One row per registered method: name, paper, defaults, families and % trainable per reference backbone."""
    built = [load_backbone(name, "random") for name in references]
    rows = []
    logging.getLogger("medtransfer.adapt").setLevel(logging.ERROR)  # the table says where a method applies
    for method in METHODS.values():
        row = {"method": method.name, "paper": method.paper or PAPERS.get(method.name, ""),
               "defaults": defaults(method), "families": []}
        for loaded in built:
            try:
                config = AdaptConfig(**method.config_defaults)
                backbone = method.apply(copy.deepcopy(loaded.model), loaded.spec, config)
                trainable, total = parameter_counts(Classifier(backbone, loaded.spec.embed_dim, 2))
                row[loaded.spec.name] = 100.0 * trainable / total
                if loaded.spec.family not in row["families"]:
                    row["families"].append(loaded.spec.family)
            except MedtransferError:
                row[loaded.spec.name] = None
        if progress is not None:
            progress(method.name)
        rows.append(row)
    return rows
