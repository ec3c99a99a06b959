"""The ``medtransfer`` command line: each command is a thin call into a function a notebook can call too.

Errors the user can fix (MedtransferError) print as one line on stderr and exit with status 2.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from medtransfer.errors import MedtransferError

app = typer.Typer(
    help="How well do pretrained backbones transfer to your medical-imaging task?\n\n"
    "Pipeline: manifest -> splits -> extract (feature store) -> probe / adapt -> report.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
console = Console()


def user_errors(command: Callable) -> Callable:
    """Turn MedtransferError into a one-line message and exit status 2, never a traceback."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except MedtransferError as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(2) from None

    return wrapper


def _int_list(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise MedtransferError(f"expected comma-separated integers, got {text!r}") from None


@app.command()
@user_errors
def demo(
    workdir: Annotated[Path, typer.Option(help="Folder for the synthetic data, splits, features and results.")] = Path(
        "medtransfer-demo"
    ),
    backbone: Annotated[str, typer.Option(help="Backbone to extract with.")] = "resnet18",
    weights: Annotated[
        str, typer.Option(help="'random' needs no download; 'default' loads the published weights.")
    ] = "random",
    patients: Annotated[int, typer.Option(help="Synthetic patients (about 1.45 images each).")] = 200,
) -> None:
    """Run the whole pipeline offline on a synthetic chest-X-ray-like data set and print the results."""
    from medtransfer.demo import run_demo

    run_demo(workdir, backbone=backbone, weights=weights, n_patients=patients, console=console)


@app.command()
@user_errors
def splits(
    manifest: Annotated[Path, typer.Argument(help="Manifest (CSV or Parquet) with image and label columns.")],
    out: Annotated[Path, typer.Option(help="Where to write the splits JSON.")] = Path("splits.json"),
    strategy: Annotated[
        str, typer.Option(help="kfold (stratified, patient-grouped), loco (leave one center out) or holdout.")
    ] = "kfold",
    folds: Annotated[int, typer.Option(help="Number of folds (kfold).")] = 5,
    shots: Annotated[str, typer.Option(help="Few-shot sizes per class, e.g. 2,4,8,16,32; empty for none.")] = "",
    seeds: Annotated[int, typer.Option(help="Number of few-shot draws (seeds 0..N-1) per fold and shot count.")] = 5,
    val_fraction: Annotated[float, typer.Option(help="Share of each fold's training part held out as val.")] = 0.2,
    test_fraction: Annotated[float, typer.Option(help="Share of the data held out as test (holdout).")] = 0.2,
    seed: Annotated[int, typer.Option(help="Seed of the fold assignment.")] = 0,
    label_column: Annotated[str, typer.Option(help="Manifest column holding the label.")] = "label",
) -> None:
    """Make folds and few-shot subsets: the single definition of folds that probe and adapt read."""
    from medtransfer.data.manifest import load_manifest
    from medtransfer.splits import SplitSpec, make_splits, save_splits

    loaded = load_manifest(manifest, label_column=label_column, check_files=False)
    spec = SplitSpec(strategy=strategy, n_folds=folds, val_fraction=val_fraction, test_fraction=test_fraction,
                     shots=_int_list(shots), fewshot_seeds=seeds, seed=seed)
    made = make_splits(loaded, spec)
    save_splits(made, out)
    sizes = ", ".join(f"{len(f.train)}/{len(f.val)}/{len(f.test)}" for f in made.folds)
    console.print(f"{len(made.folds)} {strategy} fold(s) (train/val/test: {sizes}) -> {out}")


@app.command()
@user_errors
def extract(
    manifest: Annotated[Path, typer.Argument(help="Manifest (CSV or Parquet) with image and label columns.")],
    backbone: Annotated[list[str], typer.Option(help="Backbone name (repeat for several); see `backbones`.")],
    store: Annotated[Path, typer.Option(help="Feature store (Zarr folder), created if absent.")] = Path(
        "features.zarr"
    ),
    weights: Annotated[
        str, typer.Option(help="'default' (published weights), 'random', or a local checkpoint path.")
    ] = "default",
    batch_size: Annotated[int, typer.Option(help="Images per forward pass.")] = 32,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda or cuda:N.")] = "auto",
    workers: Annotated[int, typer.Option(help="DataLoader decode workers; -1 picks by core count.")] = -1,
    label_column: Annotated[str, typer.Option(help="Manifest column holding the label.")] = "label",
) -> None:
    """Embed every image once with each frozen backbone; re-running computes only what is missing."""
    from medtransfer.extract import extract_features

    for name in backbone:
        result = extract_features(manifest, name, store, weights=weights, label_column=label_column,
                                  batch_size=batch_size, device=device,
                                  num_workers=None if workers < 0 else workers)
        speed = f" ({result.images_per_second:.1f} img/s)" if result.n_computed else ", the rest already in the store"
        console.print(
            f"{name}: {result.n_computed} of {result.n_images} images computed{speed} -> {store}/{result.group_key}\n"
            f"  weights: {result.weights_source}"
        )


@app.command()
@user_errors
def probe(
    store: Annotated[Path, typer.Option(help="Feature store written by `extract`.")],
    splits: Annotated[Path, typer.Option(help="Splits JSON written by `splits`.")],
    backbone: Annotated[list[str], typer.Option(help="Backbone(s) whose features to probe.")],
    out: Annotated[Path, typer.Option(help="Results folder (results.parquet/.csv, predictions.parquet).")] = Path(
        "results"
    ),
    head: Annotated[list[str], typer.Option(help="Probe head(s); logreg by default.")] = ["logreg"],  # noqa: B006
    weights: Annotated[
        str | None, typer.Option(help="Pick the feature group by weights when the store holds several.")
    ] = None,
    manifest: Annotated[
        Path | None, typer.Option(help="Check that the splits file was made from this manifest.")
    ] = None,
) -> None:
    """Fit probe heads on cached features, full data and every few-shot subset of the splits file."""
    from medtransfer.data.manifest import load_manifest
    from medtransfer.demo import fold_table
    from medtransfer.probe import run_probe
    from medtransfer.splits import load_splits

    if manifest is not None:
        load_splits(splits).check_manifest(load_manifest(manifest, check_files=False).fingerprint)

    table = run_probe(store, splits, backbone, out, heads=head, weights=weights)
    for name in backbone:
        console.print(fold_table(table[table["backbone"] == name], name))
    console.print(f"results -> {out / 'results.csv'}")
    if (table["status"] != "ok").any():
        raise typer.Exit(1)


@app.command()
def backbones() -> None:
    """List the registered backbones (also: timm:<model>, open_clip:<arch>/<tag>, hf:<repo-id>)."""
    from rich.table import Table

    from medtransfer.backbones import backbone_table

    table = Table(
        title="Backbones (also timm:<model>, open_clip:<arch>/<tag>, hf:<repo-id>; --weights default|random|PATH)"
    )
    for column, justify in (("name", "left"), ("params (M)", "right"), ("dim", "right"), ("input", "right"),
                            ("source", "left")):
        table.add_column(column, justify=justify)
    for row in backbone_table():
        table.add_row(row["name"], f"{row['params_m']:.1f}", str(row["dim"]), str(row["input_size"]), row["source"])
    console.print(table)


@app.command()
@user_errors
def report(
    results_dirs: Annotated[
        list[Path], typer.Argument(help="Results folder(s) written by probe/adapt, or folders holding several.")
    ],
    out: Annotated[Path, typer.Option(help="Folder for index.html and tables/ (CSV, LaTeX).")] = Path("report"),
) -> None:
    """Write a self-contained HTML report (opens from disk, no network) plus CSV and LaTeX tables."""
    from medtransfer.report import build_report

    page = build_report(results_dirs, out)
    console.print(f"report -> {page}")


@app.command()
@user_errors
def summary(
    results_dir: Annotated[list[Path], typer.Argument(help="Results folder(s) written by probe/adapt.")],
) -> None:
    """Print the key table: MCC and PR-AUC (mean ± std over folds) per backbone and strategy, best marked *."""
    from medtransfer.report import summarize

    typer.echo(summarize(results_dir))


def main() -> None:
    app()
