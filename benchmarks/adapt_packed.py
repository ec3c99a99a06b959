"""Packed vs one-by-one adapt runs, in one process: 8 few-shot LoRA runs (8 seeds of one shot count and fold) of
a ViT, trained by ``run_adapt(..., pack=1)`` one after another and by ``pack=8`` as one stacked model.

Prints both wall times, their ratio (packed throughput / one-by-one throughput), both sets of MCCs (they must
agree: packing changes the arithmetic's order, not the runs) and the largest test-probability difference.
``--json PATH`` also writes the figures. The default backbone is the test suite's tiny ViT (2 layers, 32 wide,
32 px; ``medtransfer.testing.backbones``, registered here); on a GPU give a benchmark backbone, e.g.
``--backbone timm:vit_base_patch16_224 --device cuda``, for the benchmark's shapes.

    python benchmarks/adapt_packed.py
    python benchmarks/adapt_packed.py --device cuda --image-size 224 --epochs 20 --batch-size 32
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from medtransfer.adapt import run_adapt
from medtransfer.data.manifest import load_manifest
from medtransfer.data.synthetic import SyntheticSpec, make_synthetic_dataset
from medtransfer.splits import SplitSpec, make_splits, save_splits
from medtransfer.testing.backbones import TINY_VIT, register_tiny_backbones


def measure(args: argparse.Namespace) -> dict:
    folder = Path(tempfile.mkdtemp(prefix="adapt-packed-"))
    manifest = make_synthetic_dataset(folder / "data", SyntheticSpec(n_patients=args.patients, image_size=72,
                                                                     signal=1.5))
    splits = save_splits(make_splits(load_manifest(manifest), SplitSpec(n_folds=3, shots=(args.shots,),
                                                                        fewshot_seeds=args.runs)),
                         folder / "splits.json")
    common = {"backbone": args.backbone, "method": args.method, "weights": "random", "regimes": ("fewshot",),
              "folds": (0,), "epochs": args.epochs, "batch_size": args.batch_size, "image_size": args.image_size,
              "patience": args.epochs, "device": args.device, "progress": False, "log": lambda _: None}
    figures: dict = {"backbone": args.backbone, "method": args.method, "runs": args.runs, "shots": args.shots,
                     "epochs": args.epochs, "image_size": args.image_size, "device": args.device,
                     "threads": torch.get_num_threads()}
    run_adapt(manifest, splits, out=folder / "warm-up", pack=1, **{**common, "epochs": 1, "seeds": (0,)})
    tables = {}
    for label, pack in (("one_by_one", 1), ("packed", args.runs)):
        start = time.perf_counter()
        tables[label] = run_adapt(manifest, splits, out=folder / label, pack=pack, **common)
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()
        figures[f"{label}_seconds"] = time.perf_counter() - start
        figures[f"{label}_mcc"] = tables[label].sort_values("seed")["mcc"].round(4).tolist()
        figures[f"{label}_train_seconds"] = float(tables[label]["train_seconds"].sum())
    figures["throughput_ratio"] = figures["one_by_one_seconds"] / figures["packed_seconds"]
    figures["train_throughput_ratio"] = figures["one_by_one_train_seconds"] / figures["packed_train_seconds"]
    a, p = (pd.read_parquet(folder / name / "predictions.parquet").sort_values(["seed", "id"])
            for name in ("one_by_one", "packed"))
    figures["max_probability_difference"] = float(np.abs(a["probability"].to_numpy()
                                                         - p["probability"].to_numpy()).max())
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", default=TINY_VIT)
    parser.add_argument("--method", default="lora")
    parser.add_argument("--runs", type=int, default=8)
    parser.add_argument("--shots", type=int, default=8)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--image-size", type=int, default=None)
    parser.add_argument("--patients", type=int, default=80)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    register_tiny_backbones()
    figures = measure(args)
    print(f"{args.runs} x {args.method} on {args.backbone} ({args.shots}-shot, {args.epochs} epochs, "
          f"{args.image_size or 'native'} px, {args.device}, {figures['threads']} threads)")
    print(f"one by one: {figures['one_by_one_seconds']:.1f} s (training {figures['one_by_one_train_seconds']:.1f} s)"
          f"   MCC {figures['one_by_one_mcc']}")
    print(f"packed:     {figures['packed_seconds']:.1f} s (training {figures['packed_train_seconds']:.1f} s)"
          f"   MCC {figures['packed_mcc']}")
    print(f"throughput ratio packed / one by one: {figures['throughput_ratio']:.2f}x whole run, "
          f"{figures['train_throughput_ratio']:.2f}x training; largest test-probability difference "
          f"{figures['max_probability_difference']:.2e}")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
