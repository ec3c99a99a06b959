"""Cost of a study in device-hours from the cost model (``cost.py``), and ``study calibrate``.

``estimate`` multiplies each job's images by its backbone's FLOPs per image and divides by the chosen device
profile's throughput: no model is built. ``calibrate`` times forward and forward + backward of each backbone
on the device it runs on (a GPU node) and stores the achieved TFLOP/s as a profile the plan then uses.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from medtransfer.study.cost import (
    MODES,
    PUBLISHED_GPU_HOURS,
    DeviceProfile,
    all_profiles,
    backbone_flops,
    flops_table,
    save_profile,
    select_profile,
)
from medtransfer.study.plan import Plan


@dataclass
class Estimate:
    profile: str
    hours_by_kind: dict[str, float]  # extract, adapt, probe
    adapt_hours_by_method: dict[str, float]
    pending_hours: float
    total_hours: float
    pack: int
    packed_total_hours: float  # the same grid with few-shot runs packed ``pack`` per model
    hours_by_profile: dict[str, float]  # total hours of the same grid on every known profile
    published: dict[str, float | str]
    gflops: dict[str, dict[str, float]]  # backbone -> mode -> GFLOPs per image
    assumptions: list[str] = field(default_factory=list)


def _job_tflop(job, flops: dict, pack: int) -> tuple[float, float, str]:
    """(TFLOP of the job, of it packed, the mode it runs in); packing shares a frozen backbone's forward
    passes of the val and test images, which every few-shot run of one fold evaluates alike."""
    from medtransfer.adapt.methods import get_method

    if job.kind == "extract":
        work = job.work["forward"] * flops["forward"]
        return work / 1e12, work / 1e12, "forward"
    method = get_method(job.work["method"])
    frozen = method.backbone_eval
    mode = "forward" if frozen else ("train_full" if job.work["method"] == "fft" else "train_frozen")
    # a frozen backbone without augmentation embeds each image once, not per epoch (adapt.run ``embeds_once``)
    epochs = 1 if frozen else job.work["epochs"]
    train = epochs * job.work["train"] * flops[mode]
    evaluate = (epochs * job.work["val"] + job.work["test"]) * flops["forward"]
    shared = evaluate / pack if frozen and job.params.get("regime") == "fewshot" else evaluate
    return (train + evaluate) / 1e12, (train + shared) / 1e12, mode


def estimate(plan: Plan, *, profile: str | None = None, pack: int = 1) -> Estimate:
    """Device-hours of every job on ``profile`` (default: the study's device on this host), and of the pending
    ones; probe fits on cached features run on CPU and are counted as 0 device-hours."""
    chosen = select_profile(profile, plan.study.device)
    table = flops_table()
    flops = {backbone: backbone_flops(backbone, table) for backbone in plan.study.backbones}
    hours = {"extract": 0.0, "adapt": 0.0, "probe": 0.0}
    by_method: dict[str, float] = {}
    pending = packed = 0.0
    tflop_by_mode: dict[tuple[str, str], tuple[float, float]] = {}
    for job in plan.jobs:
        if job.kind not in ("extract", "adapt"):
            continue
        work, work_packed, mode = _job_tflop(job, flops[job.backbone], pack)
        seconds = work / chosen.tflops(job.backbone, mode) / 3600
        hours[job.kind] += seconds
        if job.kind == "adapt":
            by_method[job.work["method"]] = by_method.get(job.work["method"], 0.0) + seconds
        pending += seconds * (job.job_id not in plan.done)
        packed += work_packed / chosen.tflops(job.backbone, mode) / 3600
        total, total_packed = tflop_by_mode.get((job.backbone, mode), (0.0, 0.0))
        tflop_by_mode[(job.backbone, mode)] = (total + work, total_packed + work_packed)
    by_profile = {name: sum(work / p.tflops(backbone, mode) for (backbone, mode), (work, _) in
                            tflop_by_mode.items()) / 3600 for name, p in all_profiles().items()}
    published = dict(PUBLISHED_GPU_HOURS)
    published["ours_on_that_profile"] = by_profile.get(PUBLISHED_GPU_HOURS["profile"], 0.0)
    return Estimate(
        profile=chosen.name, hours_by_kind=hours, adapt_hours_by_method=by_method, pending_hours=pending,
        total_hours=sum(hours.values()), pack=pack, packed_total_hours=packed,
        hours_by_profile=by_profile, published=published,
        gflops={b: {m: f[m] / 1e9 for m in MODES} for b, f in flops.items()},
        assumptions=_assumptions(chosen, pack, plan))


def _assumptions(profile: DeviceProfile, pack: int, plan: Plan) -> list[str]:
    if profile.measured:
        rate = f"throughput measured by `study calibrate` ({', '.join(sorted(profile.measured))}); other " \
               "backbones at the median measured TFLOP/s"
    else:
        rate = f"peak {profile.peak_tflops:g} TFLOP/s ({profile.peak_source}) x efficiency {profile.efficiency:g}, " \
               f"an ASSUMPTION (not measured: run `medtransfer study calibrate` on the device)"
    lines = [
        f"device profile {profile.name}: {rate}",
        "FLOPs per image from the architecture at its input size (torch FlopCounterMode: matmuls and "
        "convolutions); fft trains all weights, PEFT methods back-propagate activations through frozen weights, "
        "lp embeds each image once through a frozen backbone",
        "adapt: every run trains its maximum epochs (early stopping only shortens it); few-shot runs at small "
        "batches reach less than the profile's efficiency, which this model does not lower",
        f"packing {pack} few-shot runs per model shares a frozen backbone's val/test forward passes (lp); "
        "PEFT runs keep their FLOPs (each run's adapters change the activations), packing only fills the GPU",
        "probe fits on cached features run on CPU in seconds and count 0 device-hours; image decoding and data "
        "loading are not counted",
        f"published benchmark: ~{PUBLISHED_GPU_HOURS['gpu_hours']:,.0f} {PUBLISHED_GPU_HOURS['profile']} GPU-hours "
        "for its grid (as issue 26 quotes it)",
    ]
    if plan.estimated:
        lines.append(f"tasks without a manifest yet ({', '.join(sorted(plan.estimated))}): sizes from "
                     "tasks.*.expected_images / expected_centers")
    return lines


def calibrate(backbones: list[str], device: str = "auto", *, batch_size: int = 0, name: str = "",
              on_backbone=None) -> DeviceProfile:
    """Time forward / forward + backward of each backbone on ``device`` and store the achieved TFLOP/s as the
    profile ``name`` (default: "<device> (calibrated)", which `study plan` then picks on that host).

    Random weights (throughput does not depend on their values); ``batch_size`` 0: 32 on CUDA, 4 on CPU."""
    import torch

    from medtransfer.backbones import load_backbone
    from medtransfer.device import resolve_device, resolve_precision
    from medtransfer.study.cost import BUILTIN_PROFILES, local_profile_name

    torch_device = resolve_device(device)
    autocast = resolve_precision("auto", torch_device)
    batch = batch_size or (32 if torch_device.type == "cuda" else 4)
    base = local_profile_name(device).removesuffix(" (calibrated)")
    measured: dict[str, dict[str, float]] = {}
    for backbone in backbones:
        if on_backbone is not None:
            on_backbone(backbone)
        flops = backbone_flops(backbone)
        model = load_backbone(backbone, "random").model.to(torch_device)
        size = flops["input_size"]
        measured[backbone] = {}
        for mode in MODES:
            model.train(mode != "forward")
            for parameter in model.parameters():
                parameter.requires_grad_(mode == "train_full")
            seconds = []
            for _ in range(3):  # the first is warm-up (allocator, kernels), the rest timed
                images = torch.randn(batch, 3, size, size, device=torch_device,
                                     requires_grad=mode == "train_frozen")
                start = time.perf_counter()
                with torch.autocast(torch_device.type, dtype=autocast, enabled=autocast is not None), \
                        torch.set_grad_enabled(mode != "forward"):
                    out = model(images)
                    if mode != "forward":
                        out.float().sum().backward()
                if torch_device.type == "cuda":
                    torch.cuda.synchronize()
                seconds.append(time.perf_counter() - start)
            images_per_second = batch / (sum(seconds[1:]) / len(seconds[1:]))
            measured[backbone][mode] = images_per_second * flops[mode] / 1e12
        del model
    known = BUILTIN_PROFILES.get(base)
    peak = known.peak_tflops if known else 0.0
    efficiency = (sum(m["train_frozen"] for m in measured.values()) / len(measured) / peak) if peak else 0.0
    profile = DeviceProfile(
        name=name or f"{base} (calibrated)", peak_tflops=0.0, efficiency=efficiency,
        peak_source=known.peak_source if known else f"{torch_device}: no datasheet figure",
        efficiency_source=f"measured by study calibrate, batch {batch}, autocast {autocast}", measured=measured)
    save_profile(profile)
    return profile
