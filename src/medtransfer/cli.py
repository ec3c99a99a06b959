"""The ``medtransfer`` command line: each command is a thin call into a function a notebook can call too.

Errors the user can fix (MedtransferError) print as one line on stderr and exit with status 2.
"""

from __future__ import annotations

import functools
import json
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


def _float_list(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise MedtransferError(f"expected comma-separated numbers, got {text!r}") from None


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
    fractions: Annotated[
        str, typer.Option(help="Label fractions of each fold's train, e.g. 0.01,0.1 (per seed, nested).")
    ] = "",
    fewshot_per_center: Annotated[
        bool, typer.Option("--fewshot-per-center", help="Few-shot: N shots per class per center.")
    ] = False,
) -> None:
    """Make folds and few-shot subsets: the single definition of folds that probe and adapt read."""
    from medtransfer.data.manifest import load_manifest
    from medtransfer.splits import SplitSpec, make_splits, save_splits

    loaded = load_manifest(manifest, label_column=label_column, check_files=False)
    spec = SplitSpec(strategy=strategy, n_folds=folds, val_fraction=val_fraction, test_fraction=test_fraction,
                     shots=_int_list(shots), fewshot_seeds=seeds, seed=seed,
                     fractions=_float_list(fractions), fewshot_per_center=fewshot_per_center)
    made = make_splits(loaded, spec)
    save_splits(made, out)
    sizes = ", ".join(f"{len(f.train)}/{len(f.val)}/{len(f.test)}" for f in made.folds)
    console.print(f"{len(made.folds)} {strategy} fold(s) (train/val/test: {sizes}) -> {out}")


@app.command()
@user_errors
def extract(
    manifest: Annotated[Path, typer.Argument(help="Manifest (CSV or Parquet) with image and label columns.")],
    backbone: Annotated[
        list[str], typer.Option(help="Backbone (repeatable; 'seed' = the benchmark's 11); see `backbones`.")
    ],
    store: Annotated[
        Path, typer.Option(help="Feature store: a Zarr folder, or an HDF5 file (.h5), created if absent.")
    ] = Path("features.zarr"),
    format: Annotated[  # noqa: A002
        str, typer.Option("--format", help="zarr or hdf5; auto: hdf5 for a .h5/.hdf5 store, else zarr.")
    ] = "auto",
    weights: Annotated[
        str, typer.Option(help="'default' (published weights), 'random', or a local checkpoint path.")
    ] = "default",
    batch_size: Annotated[int, typer.Option(help="Images per forward pass.")] = 32,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda or cuda:N.")] = "auto",
    precision: Annotated[str, typer.Option(help="auto (bf16 on GPU, fp32 on CPU), fp32, bf16 or fp16.")] = "auto",
    embedding: Annotated[
        list[str], typer.Option(help="Extra embeddings stored beside the default (ViTs; DINOv2's linear-eval "
                                     "grid): cls, cls_mean, cls4 (last 4 class tokens), last4 (cls4 + pooled "
                                     "patches), mean; proj (CLIP-style models: the projected class token).")
    ] = [],  # noqa: B006
    layers: Annotated[
        bool, typer.Option("--layers", help="Also store last4: DINOv2 linear-eval features (last 4 class tokens).")
    ] = False,
    resize: Annotated[
        str, typer.Option(help="upstream (each backbone's published eval transform, e.g. short side 256 + "
                               "center-crop 224), squash (whole image to a square, as the benchmark fed) or pad "
                               "(pad to square, MedCLIP); another choice is another store group.")
    ] = "upstream",
    pixel_cache: Annotated[
        Path | None,
        typer.Option(help="Decode + resize each image once into this Zarr pixel cache; later backbones read it."),
    ] = None,
    pixel_size: Annotated[int, typer.Option(help="Pixel-cache image size; 0: the largest backbone input.")] = 0,
    workers: Annotated[int, typer.Option(help="DataLoader decode workers; -1 picks by core count.")] = -1,
    label_column: Annotated[str, typer.Option(help="Manifest column holding the label.")] = "label",
) -> None:
    """Embed every image once with each frozen backbone; re-running computes only what is missing."""
    from medtransfer.extract import extract_many

    def report(result) -> None:
        speed = f" ({result.images_per_second:.1f} img/s)" if result.n_computed else ", the rest already in the store"
        copied = f", {result.n_copied} reused from other studies" if result.n_copied else ""
        console.print(
            f"{result.backbone}: {result.n_computed} of {result.n_images} images computed{speed}{copied} -> "
            f"{store}/{result.group_key}\n  weights: {result.weights_source}"
        )

    extract_many(
        manifest, backbone, store, weights=weights, label_column=label_column, batch_size=batch_size, device=device,
        num_workers=None if workers < 0 else workers, fmt=format, precision=precision,
        embeddings=[*embedding, *(["last4"] if layers else [])], pixel_cache=pixel_cache,
        pixel_size=pixel_size or None, on_result=report, resize=resize,
    )


cache_app = typer.Typer(help="Inspect and check feature stores.", no_args_is_help=True)
app.add_typer(cache_app, name="cache")


@cache_app.command("info")
@user_errors
def cache_info(
    store: Annotated[Path, typer.Argument(help="Feature store (Zarr folder or .h5 file).")],
    json_output: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """List the store's groups: backbone, weights, rows, dim, dtype, size on disk, complete?"""
    import json

    from rich.table import Table

    from medtransfer.cache_schema import store_info

    groups = store_info(store)
    if json_output:
        typer.echo(json.dumps(groups, indent=2))
        return
    table = Table(title=str(store))
    for column in ("group", "backbone", "weights", "n", "dim", "dtype", "embeddings", "MB", "complete"):
        table.add_column(column)
    for g in groups:
        table.add_row(g["key"], g["backbone"], g["weights"], f"{g['n_valid']}/{g['n']}", str(g["dim"]), g["dtype"],
                      ",".join(["default", *g["embeddings"]]), f"{g['bytes_on_disk'] / 1e6:.1f}",
                      "yes" if g["complete"] else "[red]no[/]")
    console.print(table)


@cache_app.command("verify")
@user_errors
def cache_verify(
    store: Annotated[Path, typer.Argument(help="Feature store (Zarr folder or .h5 file).")],
    no_files: Annotated[bool, typer.Option("--no-files", help="Skip re-hashing the source images.")] = False,
) -> None:
    """Check every group: chunks done, no NaN/inf rows, images unchanged since extraction. Exit 1 on problems."""
    from medtransfer.cache_schema import verify_store

    problems = verify_store(store, check_files=not no_files)
    for p in problems:
        typer.echo(f"{'warning' if p.kind == 'missing-file' else 'problem'}: {p.message}", err=True)
    if any(p.kind != "missing-file" for p in problems):
        raise typer.Exit(1)
    console.print(f"{store}: ok")

@app.command()
@user_errors
def probe(
    store: Annotated[Path, typer.Option(help="Feature store written by `extract`.")],
    splits: Annotated[Path, typer.Option(help="Splits JSON written by `splits`.")],
    backbone: Annotated[
        list[str], typer.Option(help="Backbone(s) whose features to probe (repeat); 'all' for every one in the store.")
    ],
    out: Annotated[Path, typer.Option(help="Results folder (results.parquet/.csv, predictions.parquet).")] = Path(
        "results"
    ),
    head: Annotated[
        list[str],
        typer.Option(help="Probe head(s) (repeat) or 'all': logreg, svm, knn, centroid, ridge, rf, extratrees, hgb, "
                          "xgb, mlp."),
    ] = ["logreg"],  # noqa: B006
    embedding: Annotated[
        list[str], typer.Option(help="Feature variant(s) (repeat): default, cls, mean, cls_mean, cls4, last4, proj.")
    ] = ["default"],  # noqa: B006
    regime: Annotated[
        list[str], typer.Option(help="Regime(s) (repeat): full, fewshot, fraction (all fractions in the splits).")
    ] = ["full", "fewshot"],  # noqa: B006
    fractions: Annotated[
        str, typer.Option(help="Label fractions to run, e.g. 0.01,0.1 (made by `splits --fractions`).")
    ] = "",
    class_weight: Annotated[str, typer.Option(help="balanced (n / (K n_class)) or none.")] = "balanced",
    preprocess: Annotated[
        str, typer.Option(help="Fitted on training rows: standardize, l2, pcaN, none, joined by + (l2+standardize).")
    ] = "standardize",
    threshold: Annotated[
        str, typer.Option(help="Decision threshold: 0.5, or val-mcc (best MCC on each fold's validation rows).")
    ] = "0.5",
    tune: Annotated[
        str, typer.Option(help="Tune hyperparameters on the fold's val rows (val) or by inner CV on train (cv).")
    ] = "val",
    inner_folds: Annotated[int, typer.Option(help="Inner CV folds for --tune cv.")] = 3,
    device: Annotated[str, typer.Option(help="auto, cpu or cuda for the batched logistic-regression solver.")] = "auto",
    weights: Annotated[
        str | None, typer.Option(help="Pick the feature group by weights when the store holds several.")
    ] = None,
    manifest: Annotated[
        Path | None, typer.Option(help="Check that the splits file was made from this manifest.")
    ] = None,
) -> None:
    """Fit probe heads on cached features: full data, every few-shot subset and label fraction of the splits."""
    import pandas as pd

    from medtransfer.data.manifest import load_manifest
    from medtransfer.probe import run_probe
    from medtransfer.probe.run import SUMMARY_FILE
    from medtransfer.probe.summary import summary_table
    from medtransfer.splits import load_splits

    if manifest is not None:
        load_splits(splits).check_manifest(load_manifest(manifest, check_files=False).fingerprint)
    table = run_probe(store, splits, backbone, out, heads=head, weights=weights, regimes=tuple(regime),
                      embeddings=embedding, class_weight=class_weight, preprocess=preprocess, threshold=threshold,
                      fractions=list(_float_list(fractions)) or None, device=device, tune=tune,
                      inner_folds=inner_folds)
    console.print(summary_table(pd.read_csv(out / SUMMARY_FILE)))
    console.print(f"results -> {out / 'results.csv'} (summary: {out / SUMMARY_FILE})")
    failed = table[table["status"] != "ok"]
    if not failed.empty:
        typer.echo(f"{len(failed)} fit(s) failed, e.g.: {failed['error'].iloc[0]} (see the error column)", err=True)
        raise typer.Exit(1)

@app.command()
@user_errors
def adapt(
    manifest: Annotated[Path, typer.Argument(help="Manifest (CSV/Parquet) the splits file was made from.")],
    splits: Annotated[Path, typer.Option(help="Splits JSON written by `splits`: adapt trains on probe's tasks.")],
    backbone: Annotated[str, typer.Option(help="Backbone to train (see `medtransfer backbones`).")],
    method: Annotated[str, typer.Option(
        help="fft, lp, lp-ft, bitfit, ln-tune, lora, dora, vera, ia3, loha, lokr, oft, boft.")] = "lora",
    weights: Annotated[str, typer.Option(help="'default' (published), 'random', or a local checkpoint.")] = "default",
    out: Annotated[Path, typer.Option(help="Results folder, shared with probe.")] = Path("results"),
    rank: Annotated[int | None, typer.Option(help="LoRA/DoRA/VeRA/LoHa/LoKr rank (default 8).")] = None,
    targets: Annotated[str | None, typer.Option(
        help="PEFT target preset: seed (the published benchmark's), qv (MED-PEFT), attn, attn-mlp (default) or "
             "all-linear; see `medtransfer backbones --json`.")] = None,
    alpha: Annotated[float | None, typer.Option(help="LoRA alpha (default 2 x rank).")] = None,
    dropout: Annotated[float | None, typer.Option(help="Adapter dropout (default 0).")] = None,
    epochs: Annotated[
        int | None, typer.Option(help="Maximum epochs (default 20; lp 100, stopping on validation loss).")
    ] = None,
    lr: Annotated[float | None, typer.Option(help="Learning rate (default: PEFT 1e-4, FFT 1e-5, LP 3e-2).")] = None,
    batch_size: Annotated[int | None, typer.Option(help="Batch size (default 32).")] = None,
    grad_accumulation: Annotated[int | None, typer.Option(help="Gradient-accumulation steps.")] = None,
    optimizer: Annotated[str | None, typer.Option(help="adamw (default) or sgd.")] = None,
    balance: Annotated[str | None, typer.Option(help="weighted-loss (default), sampler or none.")] = None,
    early_stopping: Annotated[str | None, typer.Option(help="Validation mcc (default) or loss.")] = None,
    patience: Annotated[int | None, typer.Option(help="Epochs without improvement before stopping (5).")] = None,
    augment: Annotated[str | None, typer.Option(help="cxr or none (default: none for lp, cxr otherwise).")] = None,
    hflip: Annotated[bool, typer.Option(help="Add horizontal flips to the augmentation.")] = False,
    train_norms: Annotated[bool, typer.Option(help="PEFT methods: also train normalisation layers.")] = False,
    refit: Annotated[bool | None, typer.Option(
        help="Full regime: retrain on train + val for the epochs val chose (default: lp only).")] = None,
    precision: Annotated[str | None, typer.Option(help="auto (bf16 on CUDA), bf16 or fp32.")] = None,
    compile: Annotated[bool, typer.Option("--compile", help="torch.compile the model.")] = False,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda or cuda:N.")] = "auto",
    regime: Annotated[list[str], typer.Option(help="full and/or fewshot.")] = ["full", "fewshot"],  # noqa: B006
    shots: Annotated[str | None, typer.Option(help="Only these shot counts, e.g. 4,16.")] = None,
    folds: Annotated[str | None, typer.Option(help="Only these folds, e.g. 0,1.")] = None,
    seeds: Annotated[str | None, typer.Option(help="Only these few-shot seeds, e.g. 0.")] = None,
    pixel_cache: Annotated[Path | None, typer.Option(help="extract's pixel cache, read instead of decoding.")] = None,
    workers: Annotated[int | None, typer.Option(help="Image-decoding workers (default 0).")] = None,
    resume: Annotated[bool, typer.Option(help="Continue a killed run from its last epoch.")] = False,
) -> None:
    """Train a backbone (full fine-tuning, linear probe or a PEFT method) on the splits file's tasks."""
    from medtransfer.adapt import run_adapt
    from medtransfer.demo import fold_table

    table = run_adapt(
        manifest, splits, backbone, method, out, weights=weights, regimes=tuple(regime),
        shots=_int_list(shots) if shots else None, folds=_int_list(folds) if folds else None,
        seeds=_int_list(seeds) if seeds else None, device=device, resume=resume, pixel_cache=pixel_cache,
        log=lambda message: console.print(message, markup=False, highlight=False),
        rank=rank, targets=targets, alpha=alpha, dropout=dropout, epochs=epochs, lr=lr, batch_size=batch_size,
        grad_accumulation=grad_accumulation, optimizer=optimizer, balance=balance, early_stopping=early_stopping,
        patience=patience, augment=augment, hflip=hflip or None, train_norms=train_norms or None, refit=refit,
        precision=precision, compile=compile or None, num_workers=workers,
    )
    console.print(fold_table(table, f"{backbone} + {table['method'].iloc[0]}"))
    console.print(f"results -> {out / 'results.csv'}")
    if (table["status"] != "ok").any():
        raise typer.Exit(1)

@app.command()
def backbones(
    json_output: Annotated[bool, typer.Option("--json", help="Print every entry's weights, preprocessing, "
                                              "embedding, feature variants and PEFT presets as JSON.")] = False,
    markdown: Annotated[bool, typer.Option("--markdown", help="Print the README's backbone table.")] = False,
) -> None:
    """List the registered backbones (also: timm:<model>, open_clip:<arch>/<tag>, hf:<repo-id>)."""
    from rich.table import Table

    from medtransfer.backbones import backbone_markdown, backbone_table

    if json_output:
        typer.echo(json.dumps(backbone_table(), indent=2))
        return
    if markdown:
        typer.echo(backbone_markdown())
        return

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
