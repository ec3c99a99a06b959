"""Issue 29.1 / 29.2: no study value becomes a line of the generated sbatch script or a path outside the study.

A fake ``sbatch`` on PATH captures the script submitit writes; the script is then run with bash (a fake ``srun``
on PATH records what it is asked to run) and nothing that a value smuggled in (``touch``) may run."""

from __future__ import annotations

import dataclasses
import json
import os
import stat
import subprocess
from pathlib import Path

import pytest

from medtransfer.errors import MedtransferError
from medtransfer.study.plan import Job
from medtransfer.study.spec import load_study
from medtransfer.testing.backbones import register_tiny_backbones
from study_support import make_data, write_study

FAKE_SBATCH = """#!/bin/bash
cp "${@: -1}" "$CAPTURE/script.sh"
echo "Submitted batch job 4242"
"""
FAKE_SRUN = """#!/bin/bash
printf '%s\\n' "$@" > "$CAPTURE/srun_args.txt"
"""


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    register_tiny_backbones()
    return make_data(tmp_path_factory.mktemp("values-data"))


@pytest.fixture
def fake_slurm(tmp_path, monkeypatch):
    """sbatch, srun and scancel on PATH that run nothing: sbatch keeps the script it is given."""
    bin_dir, capture = tmp_path / "bin", tmp_path / "capture"
    bin_dir.mkdir()
    capture.mkdir()
    for name, text in (("sbatch", FAKE_SBATCH), ("srun", FAKE_SRUN), ("scancel", "#!/bin/bash\n"),
                       ("sacct", "#!/bin/bash\n")):
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod((bin_dir / name).stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("CAPTURE", str(capture))
    return capture


def _script_for(study, capture: Path, tmp_path: Path) -> str:
    """Submit one (never run) job through the SLURM executor; run the captured script with bash."""
    from medtransfer.study.executors.slurm import SlurmExecutor

    executor = SlurmExecutor(study, cluster="slurm", log=lambda _: None)
    executor.submit([[Job(job_id="j0", kind="splits", task=study.tasks[0].name, params={})]])  # one bundle
    executor._running.clear()  # nothing was really queued: no scancel for it
    script = (capture / "script.sh").read_text()
    run_in = tmp_path / "run-here"
    run_in.mkdir()
    done = subprocess.run(["bash", str(capture / "script.sh")], cwd=run_in, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    return script


HOSTILE_PATHS = ["res$(touch PWNED1)", "res;touch PWNED2;", "res'; touch PWNED3; '", 'res"$(touch PWNED4)"',
                 "res`touch PWNED5`"]


@pytest.mark.parametrize("results", HOSTILE_PATHS)
def test_quotes_dollar_parens_and_semicolons_in_paths_run_nothing(data, tmp_path, fake_slurm, results):
    path = write_study(tmp_path, data)
    path.write_text(path.read_text().replace('results = "results"', f"results = {json.dumps(results)}"))
    study = load_study(path)
    script = _script_for(study, fake_slurm, tmp_path)
    assert str(study.state_path / "submitit") in script.replace("'\"'\"'", "'")  # quoted, not dropped
    assert not list(tmp_path.rglob("PWNED*")), script
    srun = (fake_slurm / "srun_args.txt").read_text().splitlines()
    assert any(str(study.state_path / "submitit") in arg for arg in srun)  # the path reached srun as one value


@pytest.mark.parametrize(("edit", "said"), [
    (lambda t: t.replace('name = "tiny"', 'name = "tiny\\ntouch PWNED"'), "name"),
    (lambda t: t.replace('name = "tiny"', 'name = "tiny$(touch PWNED)"'), "is not a plain name"),
    (lambda t: t.replace('name = "tiny"', 'name = "tiny;touch PWNED"'), "is not a plain name"),
    (lambda t: t.replace("[slurm]\n", '[slurm]\npartition = "gpu\\ntouch PWNED"\n'), "slurm.partition"),
    (lambda t: t.replace("[slurm]\n", "[slurm]\npartition = \"gpu'$(touch PWNED)'\"\n"), "slurm.partition"),
    (lambda t: t.replace("[slurm]\n", '[slurm]\npartition = "gpu;touch PWNED"\n'), "slurm.partition"),
    (lambda t: t.replace('results = "results"', 'results = "res\\ntouch PWNED"'), "paths.results"),
    (lambda t: t.replace('results = "results"', 'results = "res\\r\\u0000x"'), "paths.results"),
    (lambda t: t.replace("[tasks.alpha]", '[tasks."../../ESCAPED"]'), "task name '../../ESCAPED'"),
    (lambda t: t.replace("[tasks.alpha]", '[tasks."a/b"]'), "task name 'a/b'"),
    (lambda t: t.replace("[tasks.alpha]", '[tasks.".."]'), "task name '..'"),
    (lambda t: t.replace('name = "tiny"', 'name = "../up"'), "name '../up' is not a plain name"),
])
def test_a_value_that_could_escape_is_refused_in_one_line(data, tmp_path, cli, fake_slurm, edit, said):
    path = write_study(tmp_path, data)
    path.write_text(edit(path.read_text()))
    result = cli("study", "run", path, "--executor", "slurm")
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and said in lines[0], lines
    assert not (fake_slurm / "script.sh").exists()
    assert not list(tmp_path.rglob("PWNED*")) and not any(tmp_path.parent.glob("ESCAPED*"))
    assert not any(tmp_path.parent.parent.glob("ESCAPED*"))
    assert not (tmp_path / "results").exists() and not (tmp_path / "features").exists()


def test_a_spec_built_in_code_with_a_newline_reaches_no_script(data, tmp_path, fake_slurm):
    """The executor checks what it writes too: a StudySpec made in a notebook skips the file's checks."""
    from medtransfer.study.executors.slurm import SlurmExecutor

    study = load_study(write_study(tmp_path, data))
    for hostile in (dataclasses.replace(study, name="tiny\ntouch PWNED"),
                    dataclasses.replace(study, slurm=dataclasses.replace(study.slurm, partition="gpu\rtouch PWNED"))):
        with pytest.raises(MedtransferError, match="control character"):
            SlurmExecutor(hostile, cluster="slurm", log=lambda _: None)
    assert not (fake_slurm / "script.sh").exists()


def test_derived_paths_stay_under_the_study_paths(data, tmp_path):
    study = load_study(write_study(tmp_path, data))
    for task in study.tasks:
        for path, root in ((study.store_path(task.name), study.features), (study.splits_path(task), study.splits),
                           (study.results_path(task.name), study.results)):
            assert path.resolve().is_relative_to(root.resolve()), path
