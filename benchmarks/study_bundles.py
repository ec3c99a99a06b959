"""Twelve few-shot adapt jobs of one study bundle in one worker process, against one job alone, whole process.

Each job of a study used to be its own ``run_adapt`` call: manifest, splits, backbone weights and pixels loaded
anew per (fold, shots, seed). A bundle (``[run] bundle_size``) runs them in one process through one call
(``medtransfer.study.jobs.run_bundle``). Both figures are a fresh ``python`` process running
``run_bundle`` on the study's own job params, start-up and imports included, as a worker pays them.
Goal (issue 23): twelve jobs' total at most 3x one job's.

    python benchmarks/study_bundles.py --backbone resnet18 --shots 2,4,8 --seeds 4 --epochs 2
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from medtransfer.data.synthetic import SyntheticSpec, make_synthetic_dataset
from medtransfer.study import build_plan, load_study
from medtransfer.study.jobs import run_job

WORKER = "import json, sys; from medtransfer.study.jobs import run_bundle; " \
         "out = run_bundle(json.load(open(sys.argv[1]))); assert all(not e for _, e, _ in out), out"


def study_file(folder: Path, manifest: Path, args: argparse.Namespace) -> Path:
    path = folder / "study.toml"
    path.write_text(f'''schema = "medtransfer.study/1"
name = "bundles"
[paths]
pixels = ""
[backbones]
names = ["{args.backbone}"]
[extract]
weights = "random"
[probe]
heads = []
[run]
device = "cpu"
bundle_size = 64
[[adapt]]
method = "{args.method}"
epochs = {args.epochs}
batch_size = 16
image_size = {args.image_size}
regimes = ["fewshot"]
folds = [0]
[tasks.t]
manifest = "{manifest}"
folds = 2
shots = [{args.shots}]
seeds = {args.seeds}
''')
    return path


def timed_worker(items: list, folder: Path, name: str) -> float:
    path = folder / f"{name}.json"
    path.write_text(json.dumps(items))
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", WORKER, str(path)], check=True)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", default="resnet18")
    parser.add_argument("--method", default="lora")
    parser.add_argument("--shots", default="2,4,8")
    parser.add_argument("--seeds", type=int, default=4)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--patients", type=int, default=80)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        manifest = make_synthetic_dataset(folder / "data", SyntheticSpec(n_patients=args.patients, image_size=64,
                                                                          seed=0))
        study = load_study(study_file(folder, manifest, args))
        plan = build_plan(study)
        for job in plan.jobs:
            if job.kind == "splits":
                run_job(job.params)
        adapt = [job for job in plan.jobs if job.kind == "adapt"]
        items = [(job.job_id, job.params) for job in adapt]
        one = timed_worker(items[:1], folder, "one")
        # the first job's row is kept by resume: the bundle below runs the other jobs and this one again fresh
        (folder / "results").rename(folder / "results-one")
        bundle = timed_worker(items, folder, "bundle")
    load = os.getloadavg()
    print(json.dumps({"backbone": args.backbone, "method": args.method, "jobs_in_bundle": len(items),
                      "one_job_process_s": round(one, 2), "bundle_process_s": round(bundle, 2),
                      "ratio_bundle_to_one": round(bundle / one, 2), "goal_ratio_at_most": 3.0,
                      "naive_ratio": len(items), "loadavg": [round(x, 2) for x in load]}, indent=1))


if __name__ == "__main__":
    main()
