"""Several runners on one study (two shells, a local and a Ray runner, a killed one), bundles that load once,
and Ray requests larger than the cluster."""

from __future__ import annotations

import collections
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from medtransfer.study import build_plan, load_study, run_study
from medtransfer.study.claims import Claims, claim_file, current_claims
from medtransfer.study.jobs import run_bundle
from medtransfer.testing.backbones import register_tiny_backbones
from study_support import engine_environment, kill_session, make_data, wait_for_session_end, write_study

N_ONE_TASK = 15  # splits 1 + extract 2 + probe 4 + adapt 8


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    register_tiny_backbones()
    return make_data(tmp_path_factory.mktemp("runners-data"))


@pytest.fixture(autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def one_task_study(folder: Path, data: dict, *, lease_seconds: float = 120, bundle_size: int = 16,
                   edit=lambda text: text) -> Path:
    path = write_study(folder, {"alpha": data["alpha"]})
    text = path.read_text().replace("max_parallel = 0", f"max_parallel = 0\nlease_seconds = {lease_seconds}\n"
                                                        f"bundle_size = {bundle_size}")
    path.write_text(edit(text))
    return path


def without_adapt(text: str) -> str:
    return text[: text.index("[[adapt]]")] + text[text.index("\n[tasks."):]


def runs_per_job(folder: Path) -> collections.Counter:
    log = folder / "results" / ".study" / "log.jsonl"
    return collections.Counter(json.loads(line)["job"] for line in log.read_text().splitlines()
                               if json.loads(line)["status"] == "done")


def start_runner(study_file: Path, executor: str = "local") -> subprocess.Popen:
    command = [sys.executable, "-m", "medtransfer.cli", "study", "run", str(study_file), "--executor", executor]
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)


def finish(runners: list[subprocess.Popen], timeout: float = 600) -> None:
    try:
        for runner in runners:
            output, _ = runner.communicate(timeout=timeout)
            assert runner.returncode == 0, output[-2000:]
    finally:
        for runner in runners:
            kill_session(runner.pid)


@pytest.mark.parametrize("executors", [("local", "local"), ("local", "ray")])
def test_two_concurrent_runners_run_each_job_once(data, tmp_path, monkeypatch, executors):
    engine_environment(monkeypatch)
    study_file = one_task_study(tmp_path, data, bundle_size=1)  # one job a unit: the most interleaving
    finish([start_runner(study_file, executor) for executor in executors])
    counts = runs_per_job(tmp_path)
    plan = build_plan(load_study(study_file))
    assert not plan.pending()
    assert set(counts) == {job.job_id for job in plan.jobs}
    assert max(counts.values()) == 1, {job: n for job, n in counts.items() if n > 1}
    # (how the jobs divide between the runners depends on their start-up: a Ray runner may start after the
    # local one has done most; the claims test shows a held job is refused to the other runner)
    assert not list((tmp_path / "results/.study/claims").glob("*.json"))  # every claim released


def test_a_killed_runners_claims_are_taken_over_after_the_lease(data, tmp_path, monkeypatch):
    engine_environment(monkeypatch)
    study_file = one_task_study(tmp_path, data, lease_seconds=2)
    claims_folder = tmp_path / "results" / ".study" / "claims"
    runner = start_runner(study_file)
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and runner.poll() is None:
            if any(p.name.startswith("adapt") for p in claims_folder.glob("*.json")):
                break
            time.sleep(0.05)
        assert runner.poll() is None, "the runner ended before it could be killed"
        kill_session(runner.pid)
        runner.wait()
        assert not wait_for_session_end(runner.pid, timeout=60)
    finally:
        kill_session(runner.pid)
    study = load_study(study_file)
    held = current_claims(claims_folder, study.lease_seconds)
    assert held and all(entry["pid"] == runner.pid for entry in held.values())
    pending = {job.job_id for job in build_plan(study).pending()}
    assert set(held) <= pending
    start = time.monotonic()
    summary = run_study(study, executor="local")
    assert set(summary.ran) == pending and not summary.failed and not summary.elsewhere
    assert time.monotonic() - start < 300
    assert max(runs_per_job(tmp_path).values()) == 1
    assert not build_plan(study).pending()
    assert not current_claims(claims_folder, study.lease_seconds)


def test_claims_are_exclusive_renewed_and_taken_over_when_stale(tmp_path):
    first = Claims(tmp_path, lease_seconds=1, runner="first")
    second = Claims(tmp_path, lease_seconds=1, runner="second")
    assert first.claim("adapt/a/b/lp/full-fold0")
    assert not second.claim("adapt/a/b/lp/full-fold0")
    assert second.holder("adapt/a/b/lp/full-fold0") == "first"
    time.sleep(0.6)
    first.beat()  # renewed: still live after more than one lease since it was made
    time.sleep(0.6)
    assert not second.claim("adapt/a/b/lp/full-fold0")
    time.sleep(1.2)  # no heartbeat for longer than the lease: stale
    assert second.claim("adapt/a/b/lp/full-fold0")
    first.beat()
    assert first.lost == ["adapt/a/b/lp/full-fold0"] and not first.held
    first.release("adapt/a/b/lp/full-fold0")  # not ours any more: left alone
    assert claim_file(tmp_path, "adapt/a/b/lp/full-fold0").is_file()
    status = current_claims(tmp_path, 1)
    assert status["adapt/a/b/lp/full-fold0"]["runner"] == "second"
    second.release("adapt/a/b/lp/full-fold0")
    assert not current_claims(tmp_path, 1)


def test_study_status_shows_who_runs_what(data, tmp_path, cli):
    study_file = one_task_study(tmp_path, data)
    Claims(tmp_path / "results" / ".study" / "claims", lease_seconds=120, runner="node7:123:abc").claim(
        "splits/alpha")
    result = cli("study", "status", str(study_file))
    assert result.exit_code == 0, result.output
    assert "running: splits/alpha on node7:123:abc" in result.output
    summary = json.loads(cli("study", "status", str(study_file), "--json").output)
    assert summary["running"]["splits/alpha"]["runner"] == "node7:123:abc"


def test_a_bundle_loads_the_backbone_once_and_isolates_a_failing_job(data, tmp_path, monkeypatch):
    import medtransfer.adapt.run as adapt_run

    study = load_study(one_task_study(tmp_path, data))
    run_study(load_study(one_task_study(tmp_path, data, edit=without_adapt)), executor="local")
    adapt_jobs = [job for job in build_plan(study).pending() if job.kind == "adapt" and "/lp/" in job.job_id]
    assert len(adapt_jobs) == 4  # full and few-shot of fold 0, two backbones: two bundles of two
    builds = collections.Counter()
    original = adapt_run.load_backbone

    def counting(name, weights):
        builds[name] += 1
        return original(name, weights)

    monkeypatch.setattr(adapt_run, "load_backbone", counting)
    outcomes = run_bundle([(job.job_id, job.params) for job in adapt_jobs])
    assert [error for _, error, _ in outcomes] == ["", "", "", ""]
    assert builds == {"test-tiny-cnn": 1, "test-tiny-vit": 1}
    assert all(detail["bundle"] == 2 for _, _, detail in outcomes)
    assert not [job for job in build_plan(study).pending() if job.kind == "adapt" and "/lp/" in job.job_id]

    # a job that cannot run fails alone, the rest of its bundle still runs
    bitfit = [job for job in build_plan(study).pending() if job.kind == "adapt"
              and job.backbone == "test-tiny-cnn"]
    broken = {**bitfit[0].params, "splits_path": str(tmp_path / "missing.json")}
    outcomes = run_bundle([(bitfit[0].job_id, broken), (bitfit[1].job_id, bitfit[1].params)])
    assert outcomes[0][1] and not outcomes[1][1]


def test_ray_jobs_asking_more_cpus_than_the_cluster_has_finish(data, tmp_path, monkeypatch):
    """The runner starts a local Ray cluster of this machine's CPUs (2 here); every kind asks for more CPUs and
    more memory than that: the requests are capped with a message, and the study ends."""
    engine_environment(monkeypatch)
    n_cpus = os.cpu_count() or 1

    def asks_too_much(text: str) -> str:
        text = without_adapt(text)
        for kind in ("extract", "probe", "adapt"):
            text = text.replace(f"[resources.{kind}]\ncpus = 1",
                                f"[resources.{kind}]\ncpus = {n_cpus + 2}\nmemory_gb = 100000")
        return text

    study_file = one_task_study(tmp_path, data, edit=asks_too_much)
    start = time.monotonic()
    runner = start_runner(study_file, "ray")
    try:
        output, _ = runner.communicate(timeout=300)
    finally:
        kill_session(runner.pid)
    assert runner.returncode == 0, output[-2000:]
    output = " ".join(output.split())  # the console wraps long lines
    assert f"resources.probe.cpus = {n_cpus + 2} but the cluster has {n_cpus} CPUs: asking for {n_cpus}" in output
    assert "resources.probe.memory_gb = 100000 but the cluster has" in output
    assert not build_plan(load_study(study_file)).pending()
    assert time.monotonic() - start < 300
