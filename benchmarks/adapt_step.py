"""Training throughput of adapt's loop against the model's own ceiling, in one process.

ceiling: forward + backward of the same wrapped model (same method, precision, memory format) on random
         tensors already on the device, nothing else;
adapt:   ``medtransfer.adapt.train.fit`` on an in-memory uint8 PixelStore (on the device when it fits, as
         ``run_adapt`` does): batch sampling, augmentation, normalisation, forward, class-weighted loss,
         backward, gradient clipping, AdamW step and the LR schedule.
Both run ``--steps`` timed steps after ``--warmup`` steps. Target on a GPU: adapt >= 85 % of the ceiling (bf16).

``--method all`` (or a comma list) instead measures every method's forward + backward on the same backbone,
in one run, as images/s and as a ratio to the frozen backbone's forward + backward (``lp``: head only trains).

    python benchmarks/adapt_step.py --backbone resnet18 --method lora --batch-size 64 --steps 30
    python benchmarks/adapt_step.py --backbone timm:vit_tiny_patch16_224 --method all --batch-size 8 --steps 3
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import time
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from medtransfer.adapt.augment import AugmentSpec
from medtransfer.adapt.config import AdaptConfig
from medtransfer.adapt.data import PixelStore
from medtransfer.adapt.methods import get_method
from medtransfer.adapt.model import parameter_counts, set_train_mode
from medtransfer.adapt.task import build_model
from medtransfer.adapt.train import ImageInputs, Schedule, TrainData, autocast, autocast_dtype, fit
from medtransfer.backbones import get_spec, load_backbone
from medtransfer.device import resolve_device
from medtransfer.vocabulary import PRECISIONS


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@dataclass(frozen=True)
class Bench:
    """What both measurements share: the device, the batch and image sizes, the memory format, the step counts."""

    device: torch.device
    config: AdaptConfig
    batch_size: int
    size: int
    channels_last: bool
    steps: int
    warmup: int


def ceiling(model, method, bench: Bench) -> float:
    x = torch.randn(bench.batch_size, 3, bench.size, bench.size, device=bench.device)
    if bench.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 2, (bench.batch_size,), device=bench.device)
    forward = torch.compile(model) if bench.config.compile else model
    set_train_mode(model, method, bench.config.train_norms)
    scaler = torch.amp.GradScaler(bench.device.type,
                                  enabled=autocast_dtype(bench.config.precision, bench.device) == torch.float16)
    for step in range(bench.warmup + bench.steps):
        if step == bench.warmup:
            _sync(bench.device)
            start = time.perf_counter()
        with autocast(bench.device, bench.config.precision):
            logits = forward(x)
        scaler.scale(F.cross_entropy(logits.float(), y)).backward()
        model.zero_grad(set_to_none=True)
    _sync(bench.device)
    return bench.steps * bench.batch_size / (time.perf_counter() - start)


def adapt_loop(model, method, spec, bench: Bench) -> float:
    batch_size, device = bench.batch_size, bench.device
    n = batch_size * (bench.warmup + bench.steps)
    generator = torch.Generator().manual_seed(0)
    pixels = torch.randint(0, 256, (n, 1, bench.size, bench.size), dtype=torch.uint8, generator=generator)
    store = PixelStore(pixels=pixels, rows={str(i): i for i in range(n)}, source="random")
    store.to_device_if_small(device)
    inputs = ImageInputs(store, spec.preprocessing, device, augment=AugmentSpec(), channels_last=bench.channels_last,
                         generator=generator)
    labels = np.arange(n) % 2
    rows = torch.arange(n)
    schedule = Schedule(dataclasses.replace(bench.config, epochs=1, batch_size=batch_size, warmup_fraction=0.0),
                        lr=1e-4, head_lr=1e-3)

    def run(epoch_rows: torch.Tensor) -> float:
        data = TrainData(inputs, epoch_rows, labels[epoch_rows.numpy()], torch.zeros(0, dtype=torch.long),
                         np.zeros(0, dtype=int), n_classes=2, generator=generator)
        _sync(device)
        start = time.perf_counter()
        fit(model, data, schedule, device=device, set_mode=lambda: set_train_mode(model, method), progress=False)
        _sync(device)
        return time.perf_counter() - start

    run(rows[: batch_size * bench.warmup])
    return bench.steps * batch_size / run(rows[batch_size * bench.warmup:])


def compare_methods(names: list[str], spec, pristine, config, device, args) -> None:
    """images/s of every method's fwd + bwd on one backbone, relative to the frozen backbone (lp)."""
    from medtransfer.errors import MedtransferError

    size = spec.preprocessing.input_size
    channels_last = device.type == "cuda" and spec.family == "cnn"

    bench = Bench(device, config, args.batch_size, size, channels_last, args.steps, args.warmup)

    def speed(name: str) -> float:
        """fwd + bwd of the method at its own default options (paper defaults; presets at their rank)."""
        method = get_method(name)
        model = build_model(pristine, spec, method, n_classes=2, seed=0, config=config).to(device)
        if channels_last:
            model = model.to(memory_format=torch.channels_last)
        return ceiling(model, method, bench)

    base = speed("lp")
    print(f"frozen backbone (lp) fwd+bwd: {base:.1f} img/s ({args.backbone}, batch {args.batch_size}, {size}px)",
          flush=True)
    rows = []
    for name in names:  # printed as measured, so that a long CPU run shows its figures as it goes
        try:
            rate = speed(name)
            rows.append({"method": name, "images_per_s": round(rate, 2), "ratio_to_frozen": round(rate / base, 3)})
        except MedtransferError as exc:
            rows.append({"method": name, "images_per_s": None, "ratio_to_frozen": None, "note": str(exc)[:80]})
        row = rows[-1]
        shown = f"{row['images_per_s']:9.1f} img/s  x{row['ratio_to_frozen']:.3f}" if row["images_per_s"] else \
            f"not applicable: {row['note']}"
        print(f"{row['method']:<12} {shown}  (load {os.getloadavg()[0]:.1f})", flush=True)
    print(f"load average while measuring: {os.getloadavg()[0]:.2f} (1 min)")
    if args.json:
        with open(args.json, "w") as handle:
            json.dump({"backbone": args.backbone, "frozen_images_per_s": base, "methods": rows,
                       "load_average": os.getloadavg()[0]}, handle, indent=1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", default="resnet18")
    parser.add_argument("--method", default="lora", help="a method, a comma list, or all (compare methods)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--precision", default="auto", choices=PRECISIONS)
    parser.add_argument("--image-size", type=int, default=None, help="override the backbone's input size")
    parser.add_argument("--compile", action="store_true")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (CPU runs)")
    parser.add_argument("--json", default=None, help="also write the figures to this JSON file")
    args = parser.parse_args()

    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    spec = get_spec(args.backbone)
    if args.image_size:
        spec = dataclasses.replace(spec, preprocessing=dataclasses.replace(spec.preprocessing,
                                                                           input_size=args.image_size))
    size = spec.preprocessing.input_size
    config = AdaptConfig(precision=args.precision, compile=args.compile)
    pristine = load_backbone(args.backbone, "random").model
    if args.method == "all" or "," in args.method:
        from medtransfer.adapt.methods import METHODS

        names = list(METHODS) if args.method == "all" else args.method.split(",")
        compare_methods(names, spec, pristine, config, resolve_device(args.device), args)
        return
    method = get_method(args.method)
    channels_last = device.type == "cuda" and spec.family == "cnn"

    def fresh():
        model = build_model(pristine, spec, method, n_classes=2, seed=0, config=config).to(device)
        return model.to(memory_format=torch.channels_last) if channels_last else model

    model = fresh()
    trainable, total = parameter_counts(model)
    bench = Bench(device, config, args.batch_size, size, channels_last, args.steps, args.warmup)
    top = ceiling(model, method, bench)
    ours = adapt_loop(fresh(), method, spec, bench)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU ({torch.get_num_threads()} threads)"
    dtype = autocast_dtype(args.precision, device)
    figures = {
        "backbone": args.backbone, "method": method.label(method.make_options()), "device": name,
        "batch_size": args.batch_size, "image_size": size,
        "precision": {torch.bfloat16: "bf16", torch.float16: "fp16", None: "fp32"}[dtype],
        "channels_last": channels_last,
        "trainable_pct": round(100 * trainable / total, 3), "ceiling_images_per_s": round(top, 2),
        "adapt_images_per_s": round(ours, 2), "fraction_of_ceiling": round(ours / top, 3),
    }
    print(json.dumps(figures, indent=1))
    print(f"adapt {ours:.1f} img/s vs ceiling {top:.1f} img/s: {100 * ours / top:.1f}% "
          f"({figures['method']} on {args.backbone}, {name}, {figures['precision']})")
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(figures, handle, indent=1)


if __name__ == "__main__":
    main()
