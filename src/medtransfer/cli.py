"""The ``medtransfer`` command line: each command is a thin call into a function a notebook can call too.

Errors the user can fix (MedtransferError) print as one line on stderr and exit with status 2.
"""

from __future__ import annotations

import contextlib
import functools
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Annotated

import click
import typer
from rich.console import Console
from typer.core import TyperCommand, TyperGroup

from medtransfer.errors import MedtransferError
from medtransfer.vocabulary import CLASS_WEIGHTS, EMBEDDING_KINDS, PRECISIONS, REGIMES, TUNING

# --frames on splits, extract and adapt (the policy lives in medtransfer.data.frames; give all three the same one)
FRAMES_HELP = (
    "Multi-frame files (DICOM cine/volumes, multi-page TIFF): refuse (stop with a hint), first or middle (that "
    "frame, same id), or all (one row per frame, id <id>#f0003). Use the same policy for splits, extract, adapt."
)

app = typer.Typer(
    help="How well do pretrained backbones transfer to your medical-imaging task?\n\n"
    "Pipeline: manifest -> splits -> extract (feature store) -> probe / adapt -> report.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
# soft wrap: a long line (a path) is left for the terminal to wrap, never broken with a newline in a log
console = Console(soft_wrap=True)

ForceDicom = Annotated[bool, typer.Option(
    "--force-dicom", help="Read DICOM files that lack the 128-byte preamble and file meta header (pydicom "
    "force=True, as viewers do); without it they are refused as not DICOM.")]
JsonOutput = Annotated[bool, typer.Option(
    "--json", help="Print the table's rows as a JSON array (stable keys) on stdout and nothing else there; "
    "progress and messages go to stderr.")]


@contextlib.contextmanager
def table_output(json_output: bool) -> Iterator[Callable]:
    """Yields the function that prints a command's table (``listing.Listing``): ``listing.show`` (a rich table
    where the terminal is wide enough for the key cells whole, else a plain layout), or with ``--json`` the rows as
    JSON on stdout; then whatever else the command prints meanwhile (progress, logs) goes to stderr."""
    from medtransfer.listing import show, to_json

    if not json_output:
        yield lambda listing: show(listing, console)
        return
    stdout = sys.stdout

    def emit(listing) -> None:
        stdout.write(to_json(listing.records) + "\n")
        stdout.flush()

    with contextlib.redirect_stdout(sys.stderr):
        yield emit


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


def help_from_registry(**fill: Callable[[], str]) -> type[TyperCommand]:
    """A command class whose options' help is read from a registry when the help is shown: the registries
    import scikit-learn and friends (seconds), which no other command and no run should pay for at startup.
    ``fill`` maps an option's parameter name to a function returning its help text."""

    class RegistryHelpCommand(TyperCommand):
        def format_help(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
            for param in self.params:
                if param.name in fill:
                    param.help = fill[param.name]()
            return super().format_help(ctx, formatter)

    return RegistryHelpCommand


def _head_help() -> str:
    from medtransfer.probe.heads import head_help

    return f"Probe head(s) (repeat) or 'all'. {head_help()}."


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
    json_output: JsonOutput = False,
) -> None:
    """Run the whole pipeline offline on a synthetic chest-X-ray-like data set and print the results."""
    from medtransfer.demo import run_demo

    with table_output(json_output) as emit:
        run_demo(workdir, backbone=backbone, weights=weights, n_patients=patients, console=console,
                 show_table=emit)


class _SplitsGroup(TyperGroup):
    """`splits MANIFEST ...` still makes splits (the `make` subcommand); `splits import ...` imports one."""

    def parse_args(self, ctx, args):
        if args and args[0] not in self.commands and args[0] not in ("--help", "-h"):
            args = ["make", *args]
        return super().parse_args(ctx, args)


splits_app = typer.Typer(
    cls=_SplitsGroup, no_args_is_help=True,
    help="Folds and few-shot subsets. `splits MANIFEST` makes them (same as `splits make MANIFEST`); "
    "`splits import MANIFEST --column fold` turns an official or earlier split into a splits file.",
)
app.add_typer(splits_app, name="splits")


POSITIVE_HELP = ("Binary tasks: the positive class (PR-AUC, F1, sensitivity are about it). Default: the class that "
                 "sorts second. Recorded in the splits file.")


@splits_app.command("make")
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
    frames: Annotated[str, typer.Option(help=FRAMES_HELP)] = "refuse",
    positive: Annotated[str | None, typer.Option(
        help=POSITIVE_HELP)] = None,
    repeats: Annotated[int, typer.Option(
        help="Repeated CV: redraw the folds N times (split seeds seed..seed+N-1), so that paired tests have more "
        "fold means to work with (the corrected resampled t-test then has N x k of them).")] = 1,
    shots_unit: Annotated[str, typer.Option(
        help="What few-shot k counts per class: image, or patient (k patients, all their images).")] = "image",
) -> None:
    """Make folds and few-shot subsets: the single definition of folds that probe and adapt read."""
    from medtransfer.data.manifest import load_manifest
    from medtransfer.splits import SplitSpec, make_splits, save_splits

    loaded = load_manifest(manifest, label_column=label_column, check_files=False, frames=frames)
    spec = SplitSpec(strategy=strategy, n_folds=folds, val_fraction=val_fraction, test_fraction=test_fraction,
                     shots=_int_list(shots), fewshot_seeds=seeds, seed=seed,
                     fractions=_float_list(fractions), fewshot_per_center=fewshot_per_center, positive=positive,
                     repeats=repeats, shots_unit=shots_unit)
    made = make_splits(loaded, spec)
    save_splits(made, out)
    sizes = ", ".join(f"{len(f.train)}/{len(f.val)}/{len(f.test)}" for f in made.folds)
    console.print(f"{len(made.folds)} {strategy} fold(s) (train/val/test: {sizes}) -> {out}")
    _say_positive(made)


def _say_positive(made) -> None:
    from medtransfer.splits import positive_warning

    if made.positive is not None:
        console.print(f"positive class: {made.positive!r}", highlight=False)
    warning = positive_warning(made)
    if warning:
        typer.echo(f"warning: {warning}", err=True)


def _text_list(text: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in text.split(",") if part.strip())


@splits_app.command("import")
@user_errors
def splits_import(
    manifest: Annotated[Path, typer.Argument(help="Manifest (CSV or Parquet); its extra columns may hold the split.")],
    column: Annotated[
        str | None, typer.Option(help="Column of fold numbers/names: each value is one fold's test part.")
    ] = None,
    train_val_test: Annotated[
        str | None, typer.Option("--train-val-test", help="Column of train/val/test values: one fold.")
    ] = None,
    table: Annotated[
        Path | None, typer.Option(help="Read the column from this CSV/XLSX (with an id column) instead.")
    ] = None,
    id_column: Annotated[str, typer.Option(help="The --table column naming manifest ids.")] = "id",
    train: Annotated[str, typer.Option(help="Values meaning train (comma-separated).")] = "train",
    val: Annotated[str, typer.Option(help="Values meaning val; none present: val is carved from train.")] = (
        "val,valid,validation"
    ),
    test: Annotated[str, typer.Option(help="Values meaning test.")] = "test",
    ignore: Annotated[str, typer.Option(help="Values meaning 'in no part' (e.g. excluded rows).")] = "",
    out: Annotated[Path, typer.Option(help="Where to write the splits JSON.")] = Path("splits.json"),
    shots: Annotated[str, typer.Option(help="Few-shot sizes per class, drawn from each fold's train.")] = "",
    seeds: Annotated[int, typer.Option(help="Number of few-shot draws (seeds 0..N-1).")] = 5,
    val_fraction: Annotated[float, typer.Option(help="Share of train carved as val where none is given.")] = 0.2,
    seed: Annotated[int, typer.Option(help="Seed of the val carve and few-shot draws.")] = 0,
    fractions: Annotated[str, typer.Option(help="Label fractions of each fold's train, e.g. 0.01,0.1.")] = "",
    label_column: Annotated[str, typer.Option(help="Manifest column holding the label.")] = "label",
    positive: Annotated[str | None, typer.Option(help=POSITIVE_HELP)] = None,
) -> None:
    """Write a splits file from an official or earlier split; leaks and unassigned ids are refused, named."""
    from medtransfer.data.manifest import load_manifest
    from medtransfer.data.tables import read_label_table
    from medtransfer.splits import SplitSpec, save_splits
    from medtransfer.splits.imported import ImportSpec, import_splits

    loaded = load_manifest(manifest, label_column=label_column, check_files=False)
    spec = ImportSpec(fold_column=column, split_column=train_val_test, train_values=_text_list(train),
                      val_values=_text_list(val), test_values=_text_list(test), ignore_values=_text_list(ignore))
    sampling = SplitSpec(val_fraction=val_fraction, shots=_int_list(shots), fewshot_seeds=seeds, seed=seed,
                         fractions=_float_list(fractions), positive=positive)
    side = read_label_table(table) if table is not None else None
    made = import_splits(loaded, spec, sampling, side, id_column=id_column)
    save_splits(made, out)
    sizes = ", ".join(f"{len(f.train)}/{len(f.val)}/{len(f.test)}" for f in made.folds)
    console.print(f"{len(made.folds)} imported fold(s) (train/val/test: {sizes}) -> {out}")
    _say_positive(made)


manifest_app = typer.Typer(help="Write a manifest from the layouts data comes in.", no_args_is_help=True)
app.add_typer(manifest_app, name="manifest")


@manifest_app.command("from-dicom")
@user_errors
def manifest_from_dicom_command(
    root: Annotated[Path, typer.Argument(help="Folder scanned recursively for DICOM files (headers only).")],
    labels: Annotated[Path, typer.Option(help="Clinical table (CSV, TSV or XLSX) holding the labels.")],
    label_column: Annotated[str, typer.Option(help="Column of the clinical table holding the label.")],
    out: Annotated[Path, typer.Option(help="Manifest CSV to write; <name>.unmatched.csv goes beside it.")] = Path(
        "manifest.csv"
    ),
    join: Annotated[
        str, typer.Option(help="Header field joining images to rows (PatientID, StudyInstanceUID, AccessionNumber, "
                          "...) or 'file' (the file name without suffix).")
    ] = "PatientID",
    labels_key: Annotated[
        str | None, typer.Option(help="Clinical-table column holding the join key (default: the --join name).")
    ] = None,
    center_column: Annotated[
        str | None, typer.Option(help="Clinical-table column naming the center (default: the --center-tag).")
    ] = None,
    center_tag: Annotated[str, typer.Option(help="Header field naming the center where present.")] = (
        "InstitutionName"
    ),
    modality: Annotated[str, typer.Option(help="Keep these modalities only, e.g. CR,DX.")] = "",
    view: Annotated[str, typer.Option(help="Keep these ViewPosition values only, e.g. PA,AP.")] = "",
    workers: Annotated[int, typer.Option(help="Header-reading threads; 0 picks by core count.")] = 0,
    force_dicom: ForceDicom = False,
) -> None:
    """One row per DICOM image: patient from PatientID, center, study date; non-image objects skipped, counted."""
    from medtransfer.data.from_dicom import DicomJoin, manifest_from_dicom, write_import

    spec = DicomJoin(join=join, labels_key=labels_key, label_column=label_column, center_column=center_column,
                     center_tag=center_tag, modalities=_text_list(modality), views=_text_list(view))
    result = manifest_from_dicom(root, labels, spec, workers=workers or None, force_dicom=force_dicom)
    console.print(f"scanned {root}: {result.scan.summary()}", highlight=False)
    manifest_path, side = write_import(result, out)
    console.print(f"{result.summary()} -> {manifest_path}", highlight=False)
    console.print(f"unmatched and unreadable: {len(result.side_table())} line(s) -> {side}", highlight=False)


@manifest_app.command("from-folders")
@user_errors
def manifest_from_folders_command(
    root: Annotated[Path, typer.Argument(help="ROOT/<class>/<image> (or ROOT/<train|val|test>/<class>/<image>).")],
    out: Annotated[Path, typer.Option(help="Manifest CSV to write.")] = Path("manifest.csv"),
    patient_regex: Annotated[
        str | None, typer.Option(help="Regex on the file name; its 'patient' group (or first group) is the patient.")
    ] = None,
    center_regex: Annotated[
        str | None, typer.Option(help="Regex on the path below ROOT; its 'center' group (or first group) is the "
                                 "center, e.g. '^[^/]+/([^/]+)/' for ROOT/<class>/<center>/<image>.")
    ] = None,
) -> None:
    """One row per image in class sub-folders; a split level above the classes becomes a `split` column."""
    from medtransfer.data.from_folders import manifest_from_folders

    result = manifest_from_folders(root, patient_regex=patient_regex, center_regex=center_regex, out=out)
    console.print(f"{result.summary()} -> {out}", highlight=False)


datasets_app = typer.Typer(help="The benchmark's public data sets: manifest and splits in one step.",
                           no_args_is_help=True)
app.add_typer(datasets_app, name="datasets")


@datasets_app.command("list")
def datasets_list(json_output: JsonOutput = False) -> None:
    """Each preset: data set, task, validation and the paper's figures."""
    from medtransfer.datasets import DATASETS
    from medtransfer.render import datasets_table

    with table_output(json_output) as emit:
        emit(datasets_table(list(DATASETS.values())))


@datasets_app.command("prepare")
@user_errors
def datasets_prepare(
    name: Annotated[str, typer.Argument(help="Preset name (see `datasets list`).")],
    raw_dir: Annotated[Path, typer.Argument(help="The download as published (DICOM tree and clinical sheet).")],
    out: Annotated[Path, typer.Option(help="Folder for manifest.csv, manifest.unmatched.csv and splits.json.")],
    labels: Annotated[list[Path], typer.Option(help="Clinical sheet(s), if not found under RAW_DIR.")] = [],  # noqa: B006
    label_column: Annotated[str | None, typer.Option(help="Override the preset's label column.")] = None,
    labels_key: Annotated[str | None, typer.Option(help="Override the sheet column holding the join key.")] = None,
    join: Annotated[str | None, typer.Option(help="Override the join: a header field or 'file'.")] = None,
    center_column: Annotated[str | None, typer.Option(help="Override the sheet column naming the center.")] = None,
    positive: Annotated[str, typer.Option(help="Override the raw label values of class 1 (comma-separated).")] = "",
    negative: Annotated[str, typer.Option(help="Override the raw label values of class 0.")] = "",
    all_images: Annotated[
        bool, typer.Option("--all-images", help="Keep every image where the preset keeps one per patient.")
    ] = False,
    shots: Annotated[str, typer.Option(help="Few-shot sizes per class, e.g. 2,4,8,16,32.")] = "",
    seeds: Annotated[int, typer.Option(help="Number of few-shot draws.")] = 5,
    workers: Annotated[int, typer.Option(help="Header-reading threads; 0 picks by core count.")] = 0,
    json_output: JsonOutput = False,
) -> None:
    """Write the manifest and the benchmark's splits for one preset, and compare its figures with the paper's."""
    from medtransfer.datasets import DATASETS, PresetOverrides, prepare_dataset
    from medtransfer.render import figures_table

    preset = DATASETS.lookup(name)
    overrides = PresetOverrides(labels=tuple(labels), label_column=label_column, labels_key=labels_key, join=join,
                                center_column=center_column, positive=_text_list(positive),
                                negative=_text_list(negative), one_image_per_patient=False if all_images else None)
    with table_output(json_output) as emit:
        prepared = prepare_dataset(preset, raw_dir, out, overrides=overrides, shots=_int_list(shots),
                                   fewshot_seeds=seeds, workers=workers or None)
        console.print(f"scanned {raw_dir}: {prepared.imported.scan.summary()}", highlight=False)
        console.print(prepared.imported.summary(), highlight=False)
        if prepared.dropped_later_images:
            console.print(f"kept each patient's first image: {prepared.dropped_later_images} later image(s) left "
                          "out", highlight=False)
        emit(figures_table(f"{preset.name} ({preset.dataset}): {prepared.preset.task}",
                           {"your download": prepared.figures, "paper": preset.paper}))
        if preset.unconfirmed:
            console.print(f"not confirmed by a public source (overridable): {'; '.join(preset.unconfirmed)}",
                          highlight=False)
        console.print(f"-> {prepared.manifest_path}, {prepared.splits_path} (unmatched: {prepared.side_path})",
                      highlight=False)


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
    frames: Annotated[str, typer.Option(help=FRAMES_HELP)] = "refuse",
    repair: Annotated[
        bool, typer.Option("--repair", help="Mark unreadable or NaN/inf chunks of the store not done and recompute "
                           "exactly their rows (without it, damaged chunks stop the run with one line).")
    ] = False,
    commit_seconds: Annotated[
        float, typer.Option(help="Commit new rows at least this often (and every 64 rows): what a kill can lose.")
    ] = 30.0,
    force_dicom: ForceDicom = False,
) -> None:
    """Embed every image once with each frozen backbone; re-running computes only what is missing.

    A re-run on a store that already holds every image builds no model: the group is found from the backbone's
    declared preprocessing and the weights' identity (published weights id; random: seed, architecture and
    package versions; a checkpoint: size, mtime and a hash of its ends)."""
    from medtransfer.extract import ExtractOptions, extract_many

    def report(result) -> None:
        speed = (f" ({result.images_per_second:.1f} img/s)" if result.n_computed
                 else ", all already in the store (every stored chunk read back intact"
                 + ("" if result.model_built else "; no model built") + ")")
        copied = f", {result.n_copied} reused from other studies" if result.n_copied else ""
        console.print(
            f"{result.backbone}: {result.n_computed} of {result.n_images} images computed{speed}{copied} -> "
            f"{store}/{result.group_key}\n  weights: {result.weights_source}"
        )

    options = ExtractOptions(
        weights=weights, label_column=label_column, batch_size=batch_size, device=device, precision=precision,
        num_workers=None if workers < 0 else workers, embeddings=(*embedding, *(["last4"] if layers else [])),
        fmt=format, pixel_cache=pixel_cache, pixel_size=pixel_size or None, frames=frames, repair=repair,
        commit_seconds=commit_seconds, resize=resize, force_dicom=force_dicom,
    )
    extract_many(manifest, backbone, store, options, on_result=report)


results_app = typer.Typer(help="Maintain results folders.", no_args_is_help=True)
app.add_typer(results_app, name="results")


@results_app.command("compact")
@user_errors
def results_compact(
    folders: Annotated[list[Path], typer.Argument(help="Results folders (probe/adapt --out, or a study's "
                                                  "results/<task>).")],
) -> None:
    """Fold a results folder's part files (one per finished job) into one, and write results.parquet,
    results.csv and predictions.parquet (the union as one file each). Safe while jobs are writing: parts they
    commit meanwhile are kept and read as usual."""
    from medtransfer.results import compact_results

    for folder in folders:
        done = compact_results(folder)
        console.print(f"{folder}: {done.parts_before} part(s) -> {done.parts_after}; {done.rows} rows "
                      f"({done.superseded} superseded by newer writes), {done.predictions} predictions, "
                      f"{done.removed_leftovers} leftover(s) of killed writers removed, {done.seconds:.1f} s",
                      highlight=False)


cache_app = typer.Typer(help="Inspect and check feature stores.", no_args_is_help=True)
app.add_typer(cache_app, name="cache")


@cache_app.command("info")
@user_errors
def cache_info(
    store: Annotated[Path, typer.Argument(help="Feature store (Zarr folder or .h5 file).")],
    json_output: JsonOutput = False,
) -> None:
    """List the store's groups: backbone, weights, rows, dim, dtype, size on disk, complete?"""
    from medtransfer.cache_schema import store_info
    from medtransfer.render import store_table

    with table_output(json_output) as emit:
        emit(store_table(str(store), store_info(store)))


@cache_app.command("verify")
@user_errors
def cache_verify(
    store: Annotated[Path, typer.Argument(help="Feature store (Zarr folder or .h5 file).")],
    no_files: Annotated[bool, typer.Option("--no-files", help="Skip re-hashing the source images.")] = False,
    repair: Annotated[
        bool, typer.Option("--repair", help="Mark unreadable or NaN/inf chunks not done (the next extract recomputes "
                           "exactly those rows), trim arrays an interrupted append left uneven, drop half-made "
                           "groups.")
    ] = False,
    json_output: Annotated[bool, typer.Option(
        "--json", help="Print the problems as a JSON array (key, kind, message) on stdout and nothing else there; "
        "the exit status is the same.")] = False,
) -> None:
    """Check every group: layout and array lengths, chunks done and readable, no NaN/inf rows, images unchanged
    since extraction. Exit 1 on problems (after --repair: on problems that extract cannot fix by re-running)."""
    from medtransfer.cache_schema import verify_store

    problems = verify_store(store, check_files=not no_files, repair=repair)
    if json_output:
        from dataclasses import asdict

        from medtransfer.listing import to_json

        typer.echo(to_json([asdict(p) for p in problems]))
    for p in problems:
        typer.echo(f"{'warning' if p.kind == 'missing-file' else 'problem'}: {p.message}", err=True)
        if p.repaired:
            typer.echo(f"repaired: {p.repaired}", err=True)
    if repair and problems:
        typer.echo(f"repaired: run `medtransfer extract` again on {store} to recompute the rows marked not done",
                   err=True)
        return
    if any(p.kind != "missing-file" for p in problems):
        raise typer.Exit(1)
    if not json_output:
        console.print(f"{store}: ok")

@app.command(cls=help_from_registry(head=_head_help))
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
        typer.Option(help="Probe head(s) (repeat) or 'all': the names of the head registry (listed in --help)."),
    ] = ["logreg"],  # noqa: B006
    embedding: Annotated[
        list[str], typer.Option(help=f"Feature variant(s) (repeat): default, {', '.join(EMBEDDING_KINDS)}.")
    ] = ["default"],  # noqa: B006
    regime: Annotated[
        list[str],
        typer.Option(help=f"Regime(s) (repeat): {', '.join(REGIMES)} (fraction: all fractions in the splits)."),
    ] = ["full", "fewshot"],  # noqa: B006
    fractions: Annotated[
        str, typer.Option(help="Label fractions to run, e.g. 0.01,0.1 (made by `splits --fractions`).")
    ] = "",
    class_weight: Annotated[
        str, typer.Option(help=f"{' or '.join(CLASS_WEIGHTS)} (balanced: n / (K n_class)).")
    ] = "balanced",
    preprocess: Annotated[
        str, typer.Option(help="Fitted on training rows: standardize, l2, pcaN, none, joined by + (l2+standardize).")
    ] = "standardize",
    threshold: Annotated[
        str, typer.Option(help="Decision threshold: 0.5, or val-mcc (best MCC on each fold's validation rows).")
    ] = "0.5",
    tune: Annotated[
        str, typer.Option(help=f"{' or '.join(TUNING)}: tune on the fold's val rows (val), by inner CV on train (cv), "
                      "or budget: few-shot/fraction tasks by inner CV on their own rows, full data on val.")
    ] = "val",
    unit: Annotated[str, typer.Option(
        help="Metrics per test image, or per patient (mean probability of a patient's images).")] = "image",
    inner_folds: Annotated[int, typer.Option(help="Inner CV folds for --tune cv (and budget).")] = 3,
    device: Annotated[str, typer.Option(help="auto, cpu or cuda for the batched logistic-regression solver.")] = "auto",
    halving: Annotated[bool, typer.Option(
        "--halving/--no-halving",
        help="Tree heads (rf, extratrees: trees; hgb, xgb: boosting rounds): successive halving over the grid, "
        "eta 3: every candidate gets 1/9 of the resource, the best third 1/3, the best one all, each stage "
        "judged on the val rows (inner-CV rows under --tune cv/budget), never test rows. Recorded per row "
        "(hyperparameters: halving). --no-halving fits every candidate whole.")] = True,
    workers: Annotated[int, typer.Option(
        help="Processes to spread a tree head's tasks over (rf, extratrees, hgb, xgb; the other heads batch "
        "instead); 0: one per CPU core. Results are the same for any number.")] = 1,
    weights: Annotated[
        str | None, typer.Option(help="Pick the feature group by weights when the store holds several.")
    ] = None,
    manifest: Annotated[
        Path | None, typer.Option(help="Check that the splits file was made from this manifest.")
    ] = None,
    task: Annotated[str, typer.Option(
        help="Name of the prediction task, recorded on every row (the report groups by it; default: the --out "
        "folder's name).")] = "",
    force: Annotated[bool, typer.Option(
        "--force", help="Fit again what --out already holds with these settings (default: skip it).")] = False,
    json_output: JsonOutput = False,
) -> None:
    """Fit probe heads on cached features: full data, every few-shot subset and label fraction of the splits."""
    import pandas as pd

    from medtransfer.data.manifest import load_manifest
    from medtransfer.probe import run_probe
    from medtransfer.probe.options import ProbeOptions
    from medtransfer.probe.run import SUMMARY_FILE
    from medtransfer.render import probe_summary_table
    from medtransfer.splits import load_splits

    if manifest is not None:
        load_splits(splits).check_manifest(load_manifest(manifest, check_files=False).fingerprint)
    options = ProbeOptions(heads=tuple(head), embeddings=tuple(embedding), regimes=tuple(regime),
                           fractions=_float_list(fractions), class_weight=class_weight, preprocess=preprocess,
                           threshold=threshold, tune=tune, inner_folds=inner_folds, device=device, unit=unit,
                           halving=halving, workers=workers)
    with table_output(json_output) as emit:
        table = run_probe(store, splits, backbone, out, weights=weights, options=options, task=task, force=force)
        emit(probe_summary_table(pd.read_csv(out / SUMMARY_FILE)))
        console.print(f"results -> {out / 'results.csv'} (summary: {out / SUMMARY_FILE})")
    _warn_degenerate(table)
    failed = table[table["status"] != "ok"]
    if not failed.empty:
        typer.echo(f"{len(failed)} fit(s) failed, e.g.: {failed['error'].iloc[0]} (see the error column)", err=True)
        raise typer.Exit(1)

def _warn_degenerate(table) -> None:
    """One line when some fits predicted a single class (or constant probabilities) for every test sample."""
    if "degenerate" not in table.columns:
        return
    flat = table[table["degenerate"].fillna(False).astype(bool)]
    if not flat.empty:
        methods = ", ".join(sorted(set(flat["method"])))
        typer.echo(f"warning: {len(flat)} fit(s) predicted one class for every test sample ({methods}); "
                   "they are flagged in the degenerate column and in the report", err=True)


@app.command()
@user_errors
def adapt(
    manifest: Annotated[Path, typer.Argument(help="Manifest (CSV/Parquet) the splits file was made from.")],
    splits: Annotated[Path, typer.Option(help="Splits JSON written by `splits`: adapt trains on probe's tasks.")],
    backbone: Annotated[str, typer.Option(help="Backbone to train (see `medtransfer backbones`).")],
    method: Annotated[str, typer.Option(
        help="Adaptation method from the method registry: fft, lp, lora, vpt-deep, ssf, adalora, lora-r4, ... "
        "(`medtransfer methods` lists them all with their papers and options).")] = "lora",
    weights: Annotated[str, typer.Option(help="'default' (published), 'random', or a local checkpoint.")] = "default",
    out: Annotated[Path, typer.Option(help="Results folder, shared with probe.")] = Path("results"),
    rank: Annotated[int | None, typer.Option(help="Method option rank (LoRA/DoRA/VeRA/LoHa/LoKr; default 8).")] = None,
    targets: Annotated[str | None, typer.Option(
        help="Method option targets of the peft methods: which modules to wrap, a preset resolved per backbone "
             "family: seed (the published benchmark's own), qv (MED-PEFT), attn, attn-mlp (default) or "
             "all-linear; `medtransfer backbones --json` lists each backbone's.")] = None,
    alpha: Annotated[float | None, typer.Option(help="Method option alpha (default 2 x rank).")] = None,
    dropout: Annotated[float | None, typer.Option(help="Method option dropout (default 0).")] = None,
    option: Annotated[list[str] | None, typer.Option(
        help="Any option of the method as NAME=VALUE, repeatable, e.g. block_size=16 for oft "
        "(`medtransfer methods` lists each method's options).")] = None,
    epochs: Annotated[
        int | None, typer.Option(
            help="Maximum epochs (default 20; lp fits probe's logreg solver and runs none, unless "
            "--option solver=gradient: then 100, stopping on validation loss).")
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
        help="Full regime: retrain on train + val for the epochs val chose (lp: refit its logreg on train + val, "
             "as probe does); default: lp only.")] = None,
    precision: Annotated[str | None, typer.Option(
        help=f"{', '.join(PRECISIONS)}: auto is bf16 on CUDA, fp32 on CPU; fp16 (with loss scaling) CUDA only.")
    ] = None,
    compile: Annotated[bool, typer.Option("--compile", help="torch.compile the model.")] = False,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda or cuda:N.")] = "auto",
    regime: Annotated[list[str], typer.Option(help="full and/or fewshot.")] = ["full", "fewshot"],  # noqa: B006
    shots: Annotated[str | None, typer.Option(help="Only these shot counts, e.g. 4,16.")] = None,
    folds: Annotated[str | None, typer.Option(help="Only these folds, e.g. 0,1.")] = None,
    seeds: Annotated[str | None, typer.Option(help="Only these few-shot seeds, e.g. 0.")] = None,
    pixel_cache: Annotated[Path | None, typer.Option(help="extract's pixel cache, read instead of decoding.")] = None,
    workers: Annotated[int | None, typer.Option(help="Image-decoding workers (default 0).")] = None,
    resume: Annotated[bool, typer.Option(help="Continue a killed run from its last epoch.")] = False,
    pack: Annotated[int | None, typer.Option(
        help="Train up to N tasks of equal training size (the few-shot seeds of a shot count and fold) together as "
        "one model with stacked adapters: results equal one-by-one runs; default 8 (fft, lp-ft: 1; measured by "
        "benchmarks/adapt_packed.py); 1: one at a time.")] = None,
    frames: Annotated[str, typer.Option(help=FRAMES_HELP)] = "refuse",
    image_size: Annotated[int | None, typer.Option(
        help="Train and test at this input size instead of the backbone's (e.g. 64 for a quick CPU run; CNNs take "
        "any size). Recorded in the preprocessing column, so it never replaces a full-size row.")] = None,
    task: Annotated[str, typer.Option(
        help="Name of the prediction task, recorded on every row (the report groups by it; default: the --out "
        "folder's name).")] = "",
    force_dicom: ForceDicom = False,
    json_output: JsonOutput = False,
) -> None:
    """Train a backbone (full fine-tuning, linear probe or a PEFT method) on the splits file's tasks."""
    from medtransfer.adapt import run_adapt
    from medtransfer.adapt.options import merge_option_values
    from medtransfer.render import fold_table

    with table_output(json_output) as emit:
        table = run_adapt(
            manifest, splits, backbone=backbone, method=method, out=out, weights=weights,
            options=merge_option_values(_name_values(option or []), {"rank": rank, "targets": targets,
                                                                     "alpha": alpha, "dropout": dropout}),
            regimes=tuple(regime), shots=_int_list(shots) if shots else None,
            folds=_int_list(folds) if folds else None, seeds=_int_list(seeds) if seeds else None, device=device,
            resume=resume, pixel_cache=pixel_cache,
            log=lambda message: console.print(message, markup=False, highlight=False), epochs=epochs, lr=lr,
            batch_size=batch_size,
            grad_accumulation=grad_accumulation, optimizer=optimizer, balance=balance, early_stopping=early_stopping,
            patience=patience, augment=augment, hflip=hflip or None, train_norms=train_norms or None, refit=refit,
            precision=precision, compile=compile or None, num_workers=workers, frames=frames, image_size=image_size,
            task=task, force_dicom=force_dicom or None, pack=pack,
        )
        emit(fold_table(table, f"{backbone} + {table['method'].iloc[0]}"))
        console.print(f"results -> {out / 'results.csv'}")
    _warn_degenerate(table)
    if (table["status"] != "ok").any():
        raise typer.Exit(1)


def _name_values(items: list[str]) -> dict[str, str]:
    """``["block_size=16", ...]`` -> ``{"block_size": "16"}``; the method's options convert the text."""
    pairs = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name.strip():
            raise MedtransferError(f"--option expects NAME=VALUE, got {item!r}")
        pairs[name.strip()] = value.strip()
    return pairs


@app.command()
@user_errors
def methods(
    reference: Annotated[list[str] | None, typer.Option(
        help="Backbones to compute % trainable on (built on the meta device: no weights; default ViT-B/16 "
        "(timm:vit_base_patch16_224) and ResNet-50).")] = None,
    json_output: JsonOutput = False,
) -> None:
    """List the adaptation methods (medtransfer adapt --method NAME [--option NAME=VALUE ...]): paper, default lr,
    what each trains, its options with their defaults and help, the families it applies to, and its % trainable
    parameters on the reference backbones (computed by applying it, not typed)."""
    from medtransfer.adapt.catalog import REFERENCES, method_catalog
    from medtransfer.render import methods_table

    references = tuple(reference) if reference else REFERENCES
    with table_output(json_output) as emit:
        with console.status("applying every method to the reference backbones") as status:
            rows = method_catalog(references, progress=lambda name: status.update(f"applied {name}"))
        emit(methods_table(rows, references))


@app.command()
@user_errors
def backbones(
    json_output: Annotated[bool, typer.Option("--json", help="Print every entry's weights, preprocessing, "
                                              "embedding, feature variants and PEFT presets as JSON.")] = False,
    markdown: Annotated[bool, typer.Option("--markdown", help="Print the README's backbone table.")] = False,
) -> None:
    """List the registered backbones (also: timm:<model>, open_clip:<arch>/<tag>, hf:<repo-id>)."""
    from medtransfer.backbones import backbone_markdown, backbone_table
    from medtransfer.render import backbones_table

    if markdown and json_output:
        raise MedtransferError("--json and --markdown print the same entries two ways: pass one of them")
    if markdown:
        typer.echo(backbone_markdown())
        return
    with table_output(json_output) as emit:
        emit(backbones_table(backbone_table()))


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
    json_output: JsonOutput = False,
) -> None:
    """Print the key table: MCC and PR-AUC (mean ± std over folds) per backbone and strategy, best marked *."""
    from medtransfer.report import summary_listing

    with table_output(json_output) as emit:
        listing, notes = summary_listing(results_dir)
        emit(listing)
        if not json_output:
            typer.echo("\n".join(notes))


study_app = typer.Typer(
    help="Declare a whole benchmark once (TOML), plan its cost, run it on local / Ray / SLURM, resume, report.",
    no_args_is_help=True,
)
app.add_typer(study_app, name="study")
StudyFile = Annotated[Path, typer.Argument(help="Study file (TOML) written by `study init`.")]


@study_app.command("init")
@user_errors
def study_init(
    out: Annotated[Path, typer.Argument(help="Where to write the study file.")] = Path("study.toml"),
    preset: Annotated[str, typer.Option(help="benchmark (the published 11-backbone grid) or small.")] = "small",
    force: Annotated[bool, typer.Option("--force", help="Overwrite an existing file.")] = False,
) -> None:
    """Write a study file to fill in (manifest paths), from a preset."""
    from medtransfer.study import write_preset

    path = write_preset(preset, out, overwrite=force)
    console.print(f"{preset} study -> {path}; fill in the tasks' manifest paths, then `medtransfer study plan {path}`")


@study_app.command("plan")
@user_errors
def study_plan(
    study: StudyFile,
    json_output: Annotated[bool, typer.Option("--json", help="Print JSON instead of text.")] = False,
    estimate: Annotated[bool, typer.Option(help="Estimate device-hours from the cost model (builds no model).")] = True,
    redo_failed: Annotated[bool, typer.Option("--redo-failed", help="Count failed rows as not done.")] = False,
    device_profile: Annotated[str | None, typer.Option(
        help="A40, A100, H100, H200, L40S, cpu or a profile `study calibrate` stored (default: the study's "
             "[run] device on this host).")] = None,
    pack: Annotated[int, typer.Option(min=1, help="Few-shot runs trained together per model (adapt --pack); "
                                                  "the estimate shows the grid with and without packing.")] = 1,
) -> None:
    """The job graph: jobs per kind and task, how many are done, and the estimated device-hours."""
    import json

    from medtransfer.study import load_study
    from medtransfer.study.status import plan_summary

    spec = load_study(study)
    summary = plan_summary(spec, with_estimate=estimate, redo_failed=redo_failed, device_profile=device_profile,
                           pack=pack)
    if json_output:
        typer.echo(json.dumps(summary, indent=1))
        return
    console.print(f"study {summary['study']}: {summary['jobs']} jobs, {summary['done']} done, "
                  f"{summary['pending']} to run", highlight=False)
    for kind, counts in summary["by_kind"].items():
        console.print(f"  {kind:8} {counts['total']:7d} jobs  {counts['done']:7d} done", highlight=False)
    for task, counts in summary["by_task"].items():
        console.print(f"  task {task}: {counts['jobs']} jobs, {counts['done']} done", highlight=False)
    if "estimate" in summary:
        est = summary["estimate"]
        parts = ", ".join(f"{kind} {hours:,.1f}" for kind, hours in est["hours_by_kind"].items())
        methods = ", ".join(f"{m} {h:,.1f}" for m, h in est["adapt_hours_by_method"].items())
        console.print(f"estimated device-hours on {est['profile']}: {est['total_hours']:,.1f} ({parts}); "
                      f"still to run: {est['pending_hours']:,.1f}", highlight=False, markup=False)
        console.print(f"  adapt by method: {methods}", highlight=False, markup=False)
        if est["pack"] > 1:
            console.print(f"  packed {est['pack']} few-shot runs per model: {est['packed_total_hours']:,.1f}",
                          highlight=False)
        pub = est["published"]
        console.print(f"  published benchmark: ~{pub['gpu_hours']:,.0f} {pub['profile']} GPU-hours; this grid on "
                      f"{pub['profile']}: {pub['ours_on_that_profile']:,.1f}", highlight=False)
        others = ", ".join(f"{name} {hours:,.1f}" for name, hours in est["hours_by_profile"].items())
        console.print(f"  on every profile: {others}", highlight=False, markup=False)
        for line in est["assumptions"]:
            console.print(f"  assumes: {line}", highlight=False, markup=False)


@study_app.command("calibrate")
@user_errors
def study_calibrate(
    study: StudyFile,
    batch_size: Annotated[int, typer.Option(min=0, help="Images per timed batch (0: 32 on CUDA, 4 on CPU).")] = 0,
    name: Annotated[str, typer.Option(help="Profile name to store (default: '<device> (calibrated)').")] = "",
) -> None:
    """Measure each backbone's throughput on this host's device and store it as a profile `study plan` uses."""
    from medtransfer.study import load_study
    from medtransfer.study.cost import profiles_file
    from medtransfer.study.estimate import calibrate

    spec = load_study(study)
    profile = calibrate(list(spec.backbones), spec.device, batch_size=batch_size, name=name,
                        on_backbone=lambda b: console.print(f"calibrating {b} ...", highlight=False))
    for backbone, rates in profile.measured.items():
        figures = ", ".join(f"{mode} {tflops:.3g} TFLOP/s" for mode, tflops in rates.items())
        console.print(f"  {backbone}: {figures}", highlight=False)
    console.print(f"profile {profile.name!r} -> {profiles_file()}; `medtransfer study plan {study} --device-profile "
                  f"'{profile.name}'`", highlight=False, markup=False)


@study_app.command("run")
@user_errors
def study_run(
    study: StudyFile,
    executor: Annotated[str, typer.Option(help="local (in-process, sequential), ray or slurm (submitit).")] = "local",
    retries: Annotated[int | None, typer.Option(help="Retries of a failing job (default: run.retries).")] = None,
    address: Annotated[str | None, typer.Option(help="Ray: join this cluster instead of starting one.")] = None,
    slurm_cluster: Annotated[str, typer.Option(help="slurm, or local: the same job arrays as subprocesses.")] = "slurm",
    redo_failed: Annotated[bool, typer.Option("--redo-failed", help="Run failed rows again.")] = False,
) -> None:
    """Run every job not done yet; stop and rerun at will (finished rows are never recomputed). Exit 1 on failures."""
    from medtransfer.study import load_study, run_study

    spec = load_study(study)
    summary = run_study(spec, executor=executor, retries=retries, address=address, slurm_cluster=slurm_cluster,
                        redo_failed=redo_failed, console=console)
    console.print(f"{len(summary.ran)} job(s) ran, {summary.n_done_before} were done before, {len(summary.failed)} "
                  f"failed, {len(summary.skipped)} skipped (their inputs failed) in {summary.seconds:.0f} s",
                  highlight=False)
    for job_id, reason in summary.failed.items():
        typer.echo(f"failed: {job_id}: {reason}", err=True)
    if summary.failed:
        raise typer.Exit(1)


@study_app.command("status")
@user_errors
def study_status(
    study: StudyFile,
    json_output: Annotated[bool, typer.Option("--json", help="Print JSON instead of text.")] = False,
) -> None:
    """Jobs done per kind and task, the failed jobs with their reasons, and which runner runs which job."""
    import json

    from medtransfer.study import load_study
    from medtransfer.study.status import status_summary

    summary = status_summary(load_study(study))
    if json_output:
        typer.echo(json.dumps(summary, indent=1))
        return
    console.print(f"study {summary['study']}: {summary['done']}/{summary['jobs']} jobs done", highlight=False)
    for kind, counts in summary["by_kind"].items():
        console.print(f"  {kind:8} {counts['done']}/{counts['total']}", highlight=False)
    for job_id, reason in summary["failed"].items():
        console.print(f"  failed: {job_id}: {reason}", highlight=False, markup=False)
    for job_id, claim in summary["running"].items():
        state = f"no heartbeat for {claim['heartbeat_age_s']:.0f} s, to be taken over" if claim["stale"] else \
            f"heartbeat {claim['heartbeat_age_s']:.0f} s ago"
        console.print(f"  running: {job_id} on {claim['runner']} ({state})", highlight=False, markup=False)


@study_app.command("report")
@user_errors
def study_report(
    study: StudyFile,
    out: Annotated[Path, typer.Option(help="Folder for index.html and tables/.")] = Path("report"),
) -> None:
    """The HTML report over every task of the study."""
    from medtransfer.study import load_study
    from medtransfer.study.report import study_report as report_study

    page = report_study(load_study(study), out)
    console.print(f"report -> {page}")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
