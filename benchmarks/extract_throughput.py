"""Images/s of ``medtransfer extract`` against two references, same process, same model, same images.

- naive: a loop over the files (PIL decode per image, fp32, batch 1)
- ceiling: the model's forward on random tensors already on the device (same batch size and precision)
- extract: ``extract_features`` into a fresh store, decoding the files (wall clock of the whole call)
- extract (pixel cache): a second backbone's pass, reading the pixel cache instead of the files
- re-run: the same extract again (nothing to compute), as a fraction of the first run's wall time

Each rate is given per wall-clock second and per CPU-second of this process (``time.process_time``, all its
threads): on a shared machine the load drifts during a run and the CPU-normalised ratio is the steadier one.

    python benchmarks/extract_throughput.py --n 256 --image-size 256 --backbone resnet18 --batch-size 32
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import Image

from medtransfer.backbones import load_backbone
from medtransfer.data.images import load_image
from medtransfer.device import resolve_device, resolve_precision
from medtransfer.extract import ExtractOptions, extract_features, fill_pixel_cache
from medtransfer.extract.preprocess import to_input


def make_images(folder: Path, n: int, size: int) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:size, 0:size] / size
    rows = []
    for i in range(n):
        image = 0.5 + 0.3 * np.sin(6 * x + i) * np.cos(4 * y) + 0.05 * rng.standard_normal((size, size))
        path = folder / f"im{i:05d}.png"
        if i % 2:
            Image.fromarray((np.clip(image, 0, 1) * 65535).astype(np.uint16)).save(path)
        else:
            Image.fromarray((np.clip(image, 0, 1) * 255).astype(np.uint8)).save(path)
        rows.append({"image": str(path), "label": str(i % 2)})
    manifest = folder / "manifest.csv"
    pd.DataFrame(rows).to_csv(manifest, index=False)
    return manifest


def autocast(device: torch.device, dtype):
    return torch.autocast(device.type, dtype=dtype) if dtype is not None else contextlib.nullcontext()


def naive(backbone: str, paths: list[str], n: int) -> float:
    loaded = load_backbone(backbone, "random")
    model = loaded.model
    start, cpu = time.perf_counter(), time.process_time()
    with torch.inference_mode():
        for path in paths[:n]:
            model(to_input(load_image(path), loaded.preprocessing).unsqueeze(0))
    return n / (time.perf_counter() - start), n / (time.process_time() - cpu)


def ceiling(backbone: str, n: int, batch: int, device: torch.device, dtype) -> float:
    loaded = load_backbone(backbone, "random")
    model = loaded.model.to(device)
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    size = loaded.preprocessing.input_size
    x = torch.randn(batch, 3, size, size, device=device)
    if device.type == "cuda":
        x = x.contiguous(memory_format=torch.channels_last)
    steps = max(1, n // batch)
    with torch.inference_mode(), autocast(device, dtype):
        model(x)
        if device.type == "cuda":
            torch.cuda.synchronize()
        start, cpu = time.perf_counter(), time.process_time()
        for _ in range(steps):
            model(x).float().cpu()
        if device.type == "cuda":
            torch.cuda.synchronize()
    return steps * batch / (time.perf_counter() - start), steps * batch / (time.process_time() - cpu)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backbone", default="resnet18")
    parser.add_argument("--n", type=int, default=256, help="images")
    parser.add_argument("--naive-n", type=int, default=64, help="images for the (slow) naive loop")
    parser.add_argument("--image-size", type=int, default=256, help="side of the synthetic PNGs")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--precision", default="auto")
    parser.add_argument("--workers", type=int, default=-1, help="-1: by core count")
    parser.add_argument("--repeats", type=int, default=3, help="interleaved repeats; the best of each is kept")
    parser.add_argument("--workdir", default=None)
    args = parser.parse_args()

    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="mt-bench-"))
    device = resolve_device(args.device)
    dtype = resolve_precision(args.precision, device)
    workers = None if args.workers < 0 else args.workers
    manifest = make_images(workdir / "images", args.n, args.image_size)
    paths = pd.read_csv(manifest)["image"].tolist()
    common = ExtractOptions(weights="random", batch_size=args.batch_size, device=args.device, num_workers=workers,
                            progress=False, precision=args.precision)

    load_before = f"{os.getloadavg()[0]:.2f}"
    naive_ips, naive_cpu = naive(args.backbone, paths, min(args.naive_n, args.n))
    pixel_path = workdir / "pixels.zarr"
    size = load_backbone(args.backbone, "random").preprocessing.input_size
    start = time.perf_counter()
    fill_pixel_cache(pixel_path, paths, size=size, dtype="uint16", num_workers=workers or 0, progress=False)
    fill_wall = time.perf_counter() - start

    # interleaved repeats, best of each: on a shared machine the load drifts between measurements
    best = {"ceiling": (0.0, 0.0), "extract": (0.0, 0.0), "cached": (0.0, 0.0)}
    first_wall, first_loop, rerun_wall = float("inf"), 0.0, float("inf")
    for repeat in range(args.repeats):
        best["ceiling"] = tuple(map(max, best["ceiling"],
                                    ceiling(args.backbone, args.n, args.batch_size, device, dtype)))
        store = workdir / f"features-{repeat}.zarr"
        shutil.rmtree(store, ignore_errors=True)
        start, cpu = time.perf_counter(), time.process_time()
        first = extract_features(manifest, args.backbone, store, common)
        wall = time.perf_counter() - start
        best["extract"] = tuple(map(max, best["extract"], (args.n / wall, args.n / (time.process_time() - cpu))))
        first_wall, first_loop = min(first_wall, wall), max(first_loop, first.images_per_second)
        start = time.perf_counter()
        again = extract_features(manifest, args.backbone, store, common)
        rerun_wall = min(rerun_wall, time.perf_counter() - start)
        assert again.n_computed == 0
        cached_store = workdir / f"cached-{repeat}.zarr"
        shutil.rmtree(cached_store, ignore_errors=True)
        start, cpu = time.perf_counter(), time.process_time()
        cached = extract_features(manifest, args.backbone, cached_store, common, pixel_cache=pixel_path)
        wall = time.perf_counter() - start
        best["cached"] = tuple(map(max, best["cached"], (args.n / wall, args.n / (time.process_time() - cpu))))
        assert cached.n_computed == args.n
    (ceiling_ips, ceiling_cpu), (extract_ips, extract_cpu), (cached_ips, cached_cpu) = (
        best["ceiling"], best["extract"], best["cached"])

    cpus = torch.get_num_threads()
    print(f"device: {device} ({torch.cuda.get_device_name(device) if device.type == 'cuda' else f'{cpus} threads'})"
          f", backbone {args.backbone} random weights, {args.n} images {args.image_size}px -> "
          f"{size}px, batch {args.batch_size}, precision {args.precision}")
    print(f"load average before/after: {load_before} / {os.getloadavg()[0]:.2f}")
    print(f"{'':44s} {'wall img/s':>12s} {'vs ceiling':>10s} | {'img/CPU-s':>10s} {'vs ceiling':>10s}")

    def row(label: str, wall: float, cpu_rate: float | None) -> None:
        cpu_part = f"{cpu_rate:10.1f} {cpu_rate / ceiling_cpu:10.1%}" if cpu_rate else ""
        print(f"{label:44s} {wall:12.1f} {wall / ceiling_ips:10.1%} | {cpu_part}")

    row("naive (PIL per image, fp32, batch 1)", naive_ips, naive_cpu)
    row("ceiling (forward on device tensors)", ceiling_ips, ceiling_cpu)
    row("extract (decode files; whole call)", extract_ips, extract_cpu)
    row("  its loop only (ExtractResult)", first_loop, None)
    row("extract from the pixel cache (whole call)", cached_ips, cached_cpu)
    print(f"{'pixel cache fill (decode + resize once)':44s} {args.n / fill_wall:12.1f}")
    print(f"extract / naive: {extract_ips / naive_ips:.2f}x wall")
    print(f"{'re-run of a finished extract':44s} {rerun_wall:8.2f} s  = {rerun_wall / first_wall:5.1%} of the first "
          f"run ({first_wall:.2f} s)")


if __name__ == "__main__":
    main()
