"""``medtransfer demo``: the whole pipeline on a synthetic data set, offline, in about a minute on 2 cores."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from rich.console import Console

from medtransfer.data.manifest import load_manifest
from medtransfer.data.synthetic import SyntheticSpec, make_synthetic_dataset
from medtransfer.extract import extract_features
from medtransfer.listing import Listing, show
from medtransfer.probe import run_probe
from medtransfer.render import fold_table
from medtransfer.splits import SplitSpec, make_splits, save_splits


@dataclass(frozen=True)
class DemoResult:
    manifest: Path
    splits: Path
    store: Path
    results: Path
    weights_source: str
    table: pd.DataFrame


def run_demo(
    workdir: str | Path = "medtransfer-demo",
    backbone: str = "resnet18",
    weights: str = "random",
    n_patients: int = 200,
    console: Console | None = None,
    show_table: Callable[[Listing], None] | None = None,
) -> DemoResult:
    """Generate data, split, extract, probe, and print the per-fold table (through ``show_table``: the CLI's
    ``--json`` prints its rows instead); every artefact stays in ``workdir``."""
    console = console or Console()
    show_table = show_table or (lambda listing: show(listing, console))
    workdir = Path(workdir)
    console.print(f"[bold]1/4[/] synthetic chest-X-ray-like data set -> {workdir / 'data'}")
    manifest_path = make_synthetic_dataset(workdir / "data", SyntheticSpec(n_patients=n_patients))
    manifest = load_manifest(manifest_path)
    console.print(
        f"    {len(manifest)} images (8- and 16-bit PNG), {manifest.table['patient'].nunique()} patients, "
        f"{manifest.table['center'].nunique()} centers"
    )

    console.print("[bold]2/4[/] 5-fold stratified, patient-grouped splits with few-shot subsets")
    splits_path = save_splits(
        make_splits(manifest, SplitSpec(strategy="kfold", n_folds=5, shots=(2, 4, 8, 16), fewshot_seeds=3)),
        workdir / "splits.json",
    )

    store = workdir / "features.zarr"
    console.print(f"[bold]3/4[/] extract {backbone} features -> {store}")
    extracted = extract_features(manifest_path, backbone, store, weights=weights)
    console.print(f"    [bold yellow]weights used:[/] {extracted.weights_source}")

    console.print("[bold]4/4[/] probe (logistic regression, C tuned on each fold's validation rows)")
    results_dir = workdir / "results"
    table = run_probe(store, splits_path, [backbone], results_dir)
    show_table(fold_table(table, f"{backbone} ({extracted.weights_source})"))
    console.print(f"results: {results_dir / 'results.csv'} (per-sample predictions beside it)")
    return DemoResult(manifest_path, splits_path, store, results_dir, extracted.weights_source, table)
