"""Cost of a study in device-hours, from a short calibration of each backbone on the current device.

Calibration times a few batches of forward (no grad, eval) and forward + backward (all parameters trainable)
at the backbone's input size with *random* weights (throughput does not depend on the weights' values) and
caches images/s per (device, backbone, input size, precision) in ``~/.cache/medtransfer/calibration.json``.
"""

from __future__ import annotations

import json
import os
import platform
import time
from dataclasses import dataclass, field
from pathlib import Path

from medtransfer.study.plan import Plan


def default_cache() -> Path:
    """``$MEDTRANSFER_CACHE/calibration.json`` (read at each call, so a test or a job can point it elsewhere)."""
    return Path(os.environ.get("MEDTRANSFER_CACHE", Path.home() / ".cache" / "medtransfer")) / "calibration.json"


@dataclass
class Estimate:
    device: str
    hours_by_kind: dict[str, float]
    pending_hours: float
    total_hours: float
    throughput: dict[str, dict[str, float]]  # backbone -> forward / train images per second
    assumptions: list[str] = field(default_factory=list)


def device_name(device: str = "auto") -> tuple[str, str]:
    """(torch device string, a stable human name of it for the cache key)."""
    import torch

    from medtransfer.device import resolve_device

    resolved = resolve_device(device)
    if resolved.type == "cuda":
        return str(resolved), torch.cuda.get_device_name(resolved)
    return str(resolved), f"cpu {platform.processor() or platform.machine()} x{os.cpu_count()} threads " \
                          f"{torch.get_num_threads()}"


def calibrate(backbone: str, device: str = "auto", *, batch_size: int = 0, cache: Path | None = None,
              refresh: bool = False) -> dict[str, float]:
    """Images per second of ``backbone`` forward and forward + backward on ``device`` (cached).

    ``batch_size`` 0: 32 on CUDA, 4 on CPU. A smaller batch calibrates large models on a CPU in reasonable
    time; per-image throughput at batch 1 is lower than at the training batch, so the estimate errs high."""
    cache = cache or default_cache()
    import torch

    from medtransfer.backbones import get_spec, load_backbone
    from medtransfer.device import resolve_precision

    torch_device, name = device_name(device)
    spec = get_spec(backbone)
    autocast = resolve_precision("auto", torch.device(torch_device))
    key = f"{name} | {backbone} | {spec.preprocessing.input_size} px | {autocast}"
    table = json.loads(cache.read_text()) if cache.is_file() else {}
    if key in table and not refresh:
        return table[key]
    batch = batch_size or (32 if torch_device.startswith("cuda") else 4)
    model = load_backbone(backbone, "random").model.to(torch_device)
    size = spec.preprocessing.input_size
    images = torch.randn(batch, 3, size, size, device=torch_device)

    def timed(train: bool) -> float:
        model.train(train)
        for parameter in model.parameters():
            parameter.requires_grad_(train)
        seconds = []
        for _ in range(3):  # the first is warm-up (allocator, kernels), the rest timed
            start = time.perf_counter()
            with torch.autocast(torch.device(torch_device).type, dtype=autocast, enabled=autocast is not None), \
                    torch.set_grad_enabled(train):
                out = model(images)
                if train:
                    out.float().pow(2).mean().backward()
            if torch_device.startswith("cuda"):
                torch.cuda.synchronize()
            seconds.append(time.perf_counter() - start)
        return batch / (sum(seconds[1:]) / len(seconds[1:]))

    measured = {"forward": timed(False), "train": timed(True), "batch": batch}
    table = json.loads(cache.read_text()) if cache.is_file() else {}
    table[key] = measured
    cache.parent.mkdir(parents=True, exist_ok=True)
    temporary = cache.with_name(f".tmp-{os.getpid()}-{cache.name}")
    temporary.write_text(json.dumps(table, indent=1, sort_keys=True))
    temporary.replace(cache)
    return measured


def estimate(plan: Plan, *, cache: Path | None = None, batch_size: int = 0, on_backbone=None) -> Estimate:
    """Device-hours of every job and of the pending ones (probe fits on cached features are not counted);
    ``batch_size``: the calibration batch of backbones not calibrated yet on this device (0: the default)."""
    from medtransfer.adapt.methods import get_method

    torch_device, name = device_name(plan.study.device)
    throughput = {}
    for backbone in plan.study.backbones:
        if on_backbone is not None:
            on_backbone(backbone)
        throughput[backbone] = calibrate(backbone, plan.study.device, batch_size=batch_size, cache=cache)
    hours = {"extract": 0.0, "adapt": 0.0}
    pending = 0.0
    for job in plan.jobs:
        speed = throughput.get(job.backbone)
        if speed is None or job.kind not in hours:
            continue
        if job.kind == "extract":
            seconds = job.work["forward"] / speed["forward"]
        else:
            frozen = get_method(job.work["method"]).backbone_eval  # a frozen backbone costs forward passes only
            train_speed = speed["forward"] if frozen else speed["train"]
            seconds = job.work["epochs"] * (job.work["train"] / train_speed + job.work["val"] / speed["forward"])
            seconds += job.work["test"] / speed["forward"]
        hours[job.kind] += seconds / 3600
        pending += seconds / 3600 * (job.job_id not in plan.done)
    assumptions = [
        f"device {torch_device} ({name}); throughput measured with random weights, batches of "
        f"{_batches(throughput)} images, autocast as `--precision auto`",
        "adapt: every run trains its maximum epochs (early stopping only shortens it), PEFT methods cost a full "
        "forward + backward (activations are back-propagated through the frozen layers too), lp a forward",
        "extract: one forward per image; probe fits on cached features run on CPU in seconds and are not counted",
        "image decoding, data loading and the full regime's refits are not counted",
    ]
    if plan.estimated:
        assumptions.append(f"tasks without a manifest yet ({', '.join(sorted(plan.estimated))}): sizes from "
                           "tasks.*.expected_images / expected_centers")
    return Estimate(device=name, hours_by_kind=hours, pending_hours=pending, total_hours=sum(hours.values()),
                    throughput=throughput, assumptions=assumptions)


def _batches(throughput: dict[str, dict[str, float]]) -> str:
    """The calibration batch sizes, with the backbones of each when they differ (``4 (resnet50), 1 (dinov2-l)``)."""
    by_batch: dict[int, list[str]] = {}
    for backbone, measured in throughput.items():
        by_batch.setdefault(int(measured["batch"]), []).append(backbone)
    if len(by_batch) <= 1:
        return str(next(iter(by_batch), 0))
    return ", ".join(f"{batch} ({', '.join(names)})" for batch, names in sorted(by_batch.items(), reverse=True))
