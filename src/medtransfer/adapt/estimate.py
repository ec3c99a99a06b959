"""How long an adapt run will take, measured before it starts: one timed training step of the real model on
the real input size, scaled by the images every task will see. Said as a warning when a CPU run will take hours,
so that a newcomer learns it in seconds, not after a night, and knows which flags make it shorter."""

from __future__ import annotations

import time

import torch
from torch import nn

from medtransfer.splits.tasks import Task

WARN_SECONDS = 3600.0  # warn from one hour on
PROBE_BATCH = 4


def seconds_per_image(model: nn.Module, image_size: int, *, n_classes: int) -> float:
    """Wall time of one forward + backward per image of ``model`` (a backbone) on the CPU, with a linear head."""
    # eval mode: the timing must not move BatchNorm's running statistics of the pristine model every task copies
    was_training = model.training
    model.eval()
    images = torch.rand(PROBE_BATCH, 3, image_size, image_size)
    with torch.enable_grad():
        start = time.perf_counter()
        features = model(images)
        features = features if isinstance(features, torch.Tensor) else features[0]
        head = nn.Linear(features.reshape(PROBE_BATCH, -1).shape[1], n_classes)
        head(features.reshape(PROBE_BATCH, -1)).sum().backward()
        elapsed = time.perf_counter() - start
    model.zero_grad(set_to_none=True)
    model.train(was_training)
    return elapsed / PROBE_BATCH


def run_seconds(tasks: list[Task], *, epochs: int, per_image: float) -> float:
    """Every task trains on its train rows for up to ``epochs`` and evaluates its val rows each epoch (about a
    third of a training step per image) and its test rows once."""
    images = sum(epochs * (len(t.train) + len(t.val) / 3) + len(t.test) / 3 for t in tasks)
    return images * per_image


def hours(seconds: float) -> str:
    return f"{seconds / 3600:.1f} h" if seconds >= 3600 else f"{seconds / 60:.0f} min"
