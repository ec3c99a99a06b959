"""``medtransfer study init --preset benchmark|small``: a study file to fill in.

The benchmark preset is the published grid: the 11 backbones of ``SEED_BACKBONES``, FFT, LP, LoRA and VeRA at
ranks 4/8/16, BitFit and IA3, full data and few-shot k = 2..32, leave-one-center-out for the multi-center
AIforCOVID tasks and 5-fold for the others (issue 13 and the task list of issue 16, which quotes the benchmark
paper's data set sizes used here as ``expected_images`` so that `study plan` can cost the grid before the data
is there). Few-shot seeds and the adapt runs' single few-shot draw are this preset's choices, not the paper's:
edit them to taste.
"""

from __future__ import annotations

from pathlib import Path

from medtransfer.errors import MedtransferError

# name -> (strategy, expected images, expected centers); sizes as issue 16 quotes the benchmark's paper
BENCHMARK_TASKS = {
    "AFC": ("loco", 1585, 6),  # AIforCOVID severity, 6 centers
    "AFC_m": ("loco", 1585, 6),  # AIforCOVID mortality, same images
    "CAR": ("kfold", 99, 0),  # COVID-19-AR, ICU admission
    "CC": ("kfold", 389, 0),  # CoCross, ICU outcome, 150 patients
    "NY_small": ("kfold", 1365, 0),  # Stony Brook, one CXR per patient
    "NY_all": ("kfold", 13639, 0),  # Stony Brook, all CXRs grouped by patient
}

HEADER = '''# medtransfer study file (`medtransfer study plan THIS`, `study run THIS`); paths are relative to this file.
schema = "medtransfer.study/1"
name = "{name}"
plugins = []  # modules ("pkg.mod" or "pkg.mod:function") imported before every job, e.g. your own backbones

[paths]
features = "features"  # one feature store per task: features/<task>.zarr
pixels = "pixels"      # one pixel cache per task ("" for none)
splits = "splits"      # splits/<task>.json, made by the study unless a task names its splits_file
results = "results"    # results/<task>/results.parquet; results/.study holds the run log

[backbones]
names = {backbones}  # "seed" = the published benchmark's 11 backbones

[extract]
weights = "{weights}"  # default (published weights), random, or a checkpoint path
batch_size = 32
precision = "auto"
format = "zarr"

[probe]
heads = {heads}
regimes = ["full", "fewshot"]

[run]
retries = 1
device = "auto"

[resources.extract]
cpus = 4
gpus = 1
[resources.probe]
cpus = 2
gpus = 0
[resources.adapt]
cpus = 4
gpus = {adapt_gpus}  # a fraction packs several PEFT runs on one large GPU (Ray)

[slurm]
partition = ""
time_minutes = 240
gpus_per_job = 1
cpus_per_job = 4
mem_gb = 32
array_parallelism = 64
jobs_per_array_task = 1  # raise it to bundle many short jobs (probe fits, few-shot runs) into one array task
'''

TASK = '''
[tasks.{name}]
manifest = "{manifest}"  # fill in: `medtransfer datasets prepare` writes it
label_column = "label"
strategy = "{strategy}"{folds}
shots = {shots}
seeds = {seeds}
expected_images = {images}{centers}
'''

BENCHMARK_ADAPT = '''
[[adapt]]
method = "fft"
{select}
[[adapt]]
method = "lp"
{select}
[[adapt]]
method = "lora"
rank = [4, 8, 16]
{select}
[[adapt]]
method = "vera"
rank = [4, 8, 16]
{select}
[[adapt]]
method = "bitfit"
{select}
[[adapt]]
method = "ia3"
{select}'''

SMALL_ADAPT = '''
[[adapt]]
method = "lp"
{select}
[[adapt]]
method = "lora"
rank = 8
epochs = 5
{select}'''

PRESETS = ("benchmark", "small")


def preset_text(preset: str) -> str:
    if preset == "benchmark":
        text = HEADER.format(name="benchmark", backbones='["seed"]', weights="default", heads='["logreg"]',
                             adapt_gpus=0.25)
        for name, (strategy, images, centers) in BENCHMARK_TASKS.items():
            text += TASK.format(name=name, manifest=f"data/{name}/manifest.csv", strategy=strategy,
                                folds="\nfolds = 5" if strategy == "kfold" else "", shots="[2, 4, 8, 16, 32]",
                                seeds=5, images=images, centers=f"\nexpected_centers = {centers}" if centers else "")
        return text + BENCHMARK_ADAPT.format(select="seeds = [0]  # one few-shot draw per k for training runs\n")
    if preset == "small":
        text = HEADER.format(name="small", backbones='["resnet18", "dinov2-s"]', weights="default",
                             heads='["logreg", "knn"]', adapt_gpus=0.5)
        text += TASK.format(name="my_task", manifest="manifest.csv", strategy="kfold", folds="\nfolds = 3",
                            shots="[4, 16]", seeds=2, images=0, centers="")
        return text + SMALL_ADAPT.format(select="")
    raise MedtransferError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")


def write_preset(preset: str, out: str | Path, *, overwrite: bool = False) -> Path:
    out = Path(out)
    if out.exists() and not overwrite:
        raise MedtransferError(f"{out} exists; pass --force to overwrite it")
    text = preset_text(preset)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    return out
