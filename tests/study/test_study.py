"""Studies end to end: the same results table under local, ray and slurm (submitit local), resume after a
SIGKILLed driver, retried-then-failed jobs, bad input as one line, presets and plan."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pandas as pd
import pytest
import torch

from medtransfer.study import build_plan, load_study, run_study
from medtransfer.testing.backbones import register_tiny_backbones
from study_support import (
    FAIL_ENV,
    N_JOBS,
    assert_same_table,
    engine_environment,
    kill_session,
    make_data,
    results_table,
    wait_for_session_end,
    write_study,
)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    register_tiny_backbones()
    return make_data(tmp_path_factory.mktemp("study-data"))


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models on a shared 2-core machine: one intra-op thread in this process (engine workers get
    OMP_NUM_THREADS=1 from ``engine_environment``)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def reference(data, tmp_path_factory):
    """The local (in-process, sequential) run every engine is compared with."""
    folder = tmp_path_factory.mktemp("local")
    torch.set_num_threads(1)
    summary = run_study(load_study(write_study(folder, data)), executor="local")
    assert not summary.failed and not summary.skipped
    return folder, summary


def test_local_run_is_complete_and_a_rerun_runs_nothing(reference):
    folder, summary = reference
    study = load_study(folder / "study.toml")
    plan = build_plan(study)
    assert summary.n_jobs == len(plan.jobs) == len(summary.ran) == N_JOBS
    counts = plan.counts()
    # per task: splits 1, extract 2 backbones, probe 2 x 2 heads, adapt 2 backbones x 2 methods x fold 0 x
    # (full + few-shot k=2)
    assert counts == {"splits": {"total": 2, "done": 2}, "extract": {"total": 4, "done": 4},
                      "probe": {"total": 8, "done": 8}, "adapt": {"total": 16, "done": 16}}
    table = results_table(folder)
    # per task: probe 2 backbones x 2 heads x 2 folds x 2 regimes, adapt 2 x 2 x 1 fold x 2 regimes
    assert len(table) == 2 * (2 * 2 * 2 * 2 + 2 * 2 * 2)
    assert not table.duplicated(["task", "backbone", "method", "regime", "shots", "seed", "fold"]).any()
    assert set(table["method"]) == {"logreg", "knn", "lp", "bitfit"}
    assert set(table["fold"]) == {0, 1}
    again = run_study(study, executor="local")
    assert again.ran == [] and again.n_done_before == summary.n_jobs


def test_ray_gives_the_same_table(reference, data, tmp_path, monkeypatch):
    """An uninterrupted run on a local Ray cluster the executor starts (and shuts down) itself."""
    engine_environment(monkeypatch)
    summary = run_study(load_study(write_study(tmp_path, data)), executor="ray")
    assert not summary.failed and len(summary.ran) == N_JOBS
    assert_same_table(results_table(tmp_path), results_table(reference[0]))


def test_slurm_submitit_local_gives_the_same_table(reference, data, tmp_path, monkeypatch):
    """submitit's local executor runs the job arrays in subprocesses: up to 16 jobs per array task, so the
    whole study starts 5 of them (splits, 2 extraction waves, probe + adapt in 2 tasks)."""
    engine_environment(monkeypatch)
    summary = run_study(load_study(write_study(tmp_path, data)), executor="slurm", slurm_cluster="local")
    assert not summary.failed and len(summary.ran) == N_JOBS
    folders = sorted(p.name for p in (tmp_path / "results" / ".study" / "submitit").iterdir())
    assert len([name for name in folders if name != "%j"]) == 5, folders  # "%j": submitit's batch staging
    assert_same_table(results_table(tmp_path), results_table(reference[0]))


def test_sigkilled_ray_driver_resumes_with_only_missing_jobs(reference, data, tmp_path, monkeypatch):
    engine_environment(monkeypatch)
    study_file = write_study(tmp_path, data)
    log = tmp_path / "results" / ".study" / "log.jsonl"
    command = [sys.executable, "-m", "medtransfer.cli", "study", "run", str(study_file), "--executor", "ray"]
    # its own session: the driver, the Ray cluster it starts and that cluster's workers all share it
    driver = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              start_new_session=True)
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and driver.poll() is None:
            if log.is_file() and sum(1 for _ in log.open()) >= 10:  # splits, extraction and a few more
                break
            time.sleep(0.1)
        assert driver.poll() is None, "the driver ended before it could be killed"
        os.killpg(driver.pid, signal.SIGKILL)
        driver.wait()
        survivors = wait_for_session_end(driver.pid, timeout=60)
    finally:
        kill_session(driver.pid)  # whatever is left, so that no test leaves processes behind
    assert not survivors, f"processes outlived the killed driver: {survivors}"
    study = load_study(study_file)
    plan = build_plan(study)
    missing = {job.job_id for job in plan.pending()}
    assert 0 < len(missing) < len(plan.jobs)
    summary = run_study(study, executor="ray")
    assert sorted(summary.ran) == sorted(missing) and not summary.failed
    assert_same_table(results_table(tmp_path), results_table(reference[0]))


def test_a_raising_job_is_retried_then_recorded_and_the_rest_completes(data, tmp_path, monkeypatch, cli):
    monkeypatch.setenv(FAIL_ENV, "test-tiny-cnn/lp/(0,)")
    study_file = write_study(tmp_path, {"alpha": data["alpha"]},
                             extra_plugins=("study_support:install_failing_method",))
    summary = run_study(load_study(study_file), executor="local", retries=2)
    assert sorted(summary.failed) == ["adapt/alpha/test-tiny-cnn/lp/fewshot2-seed0-fold0",
                                      "adapt/alpha/test-tiny-cnn/lp/full-fold0"]
    assert all("deliberate failure" in reason for reason in summary.failed.values())
    entries = [json.loads(line) for line in (tmp_path / "results" / ".study" / "log.jsonl").read_text().splitlines()]
    attempts = [e for e in entries if e["job"] == "adapt/alpha/test-tiny-cnn/lp/full-fold0"]
    assert [e["attempt"] for e in attempts] == [1, 2, 3] and all(e["status"] == "failed" for e in attempts)
    assert len(summary.ran) == summary.n_jobs - 2
    status = cli("study", "status", study_file, "--json")
    assert sorted(json.loads(status.stdout)["failed"]) == sorted(summary.failed)
    monkeypatch.delenv(FAIL_ENV)
    again = run_study(load_study(study_file), executor="local")
    assert sorted(again.ran) == sorted(summary.failed)


def test_plan_prints_jobs_and_an_estimate_with_its_assumptions(reference, cli, tmp_path, monkeypatch):
    monkeypatch.setenv("MEDTRANSFER_CACHE", str(tmp_path / "cache"))
    result = cli("study", "plan", reference[0] / "study.toml", "--json", "--device-profile", "A100")
    summary = json.loads(result.stdout)
    assert summary["jobs"] == summary["done"] == N_JOBS
    estimate = summary["estimate"]
    assert estimate["total_hours"] > 0 and estimate["pending_hours"] == 0
    assert any("device profile A100" in line for line in estimate["assumptions"])
    assert set(estimate["gflops"]) == {"test-tiny-cnn", "test-tiny-vit"}
    assert not (tmp_path / "cache").exists(), "the plan measures nothing and writes no cache"
    text = cli("study", "plan", reference[0] / "study.toml", "--device-profile", "A100").stdout
    assert f"{N_JOBS} jobs" in text and "estimated device-hours on A100" in text


def test_benchmark_preset_plans_the_published_grid(cli, tmp_path):
    cli("study", "init", tmp_path / "bench.toml", "--preset", "benchmark")
    result = cli("study", "plan", tmp_path / "bench.toml", "--json", "--no-estimate")
    summary = json.loads(result.stdout)
    # the seed set: 10 backbones (registry.SEED_BACKBONES; RAD-DINO is not among the benchmark's configs)
    assert summary["by_kind"]["extract"]["total"] == 6 * 10
    assert summary["by_kind"]["probe"]["total"] == 6 * 10
    # 10 method configs x 10 backbones x folds (AFC, AFC_m: 6 centers; the rest 5) x (full + 5 shot counts)
    assert summary["by_kind"]["adapt"]["total"] == 10 * 10 * (6 + 6 + 5 * 4) * 6
    assert summary["planned_from_expected_sizes"] == ["AFC", "AFC_m", "CAR", "CC", "NY_all", "NY_small"]


def _bad(tmp_path, data, edit):
    path = write_study(tmp_path, data)
    path.write_text(edit(path.read_text()))
    return path


@pytest.mark.parametrize(("edit", "message"), [
    (lambda t: t.replace('name = "tiny"', 'name = "tiny"\ncolour = "red"'), "unknown key colour"),
    (lambda t: t.replace("folds = 2\n", "folds = 2\nfold_count = 3\n", 1), "unknown key tasks.alpha.fold_count"),
    (lambda t: t.replace('"test-tiny-vit"]', '"no-such-net"]'), "backbones.names: unknown backbone 'no-such-net'"),
    (lambda t: t.replace('method = "bitfit"', 'method = "magic"'), "adapt[1].method: unknown adapt method 'magic'"),
    (lambda t: t.replace('heads = ["logreg", "knn"]', 'heads = ["logreg", "oracle"]'), "probe.heads"),
    (lambda t: t.replace("folds = 2\n", 'folds = "2"\n', 1), "tasks.alpha.folds must be int"),
    (lambda t: t.replace('manifest = "', 'manifest = "/nowhere/', 1), "tasks.alpha.manifest not found"),
    (lambda t: t.replace("epochs = 1\n", "epochs = 0\n", 1), "adapt[0]: --epochs must be at least 1"),
    (lambda t: t.replace('method = "bitfit"', 'method = "bitfit"\nrank = [4, 8]'), "unknown key adapt[1].rank"),
    (lambda t: t.replace('method = "bitfit"', 'method = "lora"\nrank = [4, 0]'), "adapt[1]: --rank must be"),
    (lambda t: t.replace("jobs_per_array_task = 16", "jobs_per_array_task = 0"), "slurm.jobs_per_array_task must be"),
    (lambda t: t.replace("folds = 2\n", 'folds = 2\nframes = "every"\n', 1), "tasks.alpha.frames must be one of"),
])
def test_bad_study_files_are_one_line_and_run_nothing(data, tmp_path, cli, edit, message):
    path = _bad(tmp_path, data, edit)
    result = cli("study", "run", path)
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], lines
    assert not (tmp_path / "results").exists() and not (tmp_path / "features").exists()


def test_an_unknown_executor_is_one_line_even_when_nothing_is_pending(reference, cli):
    result = cli("study", "run", reference[0] / "study.toml", "--executor", "dask")
    assert result.exit_code == 2 and result.stderr.strip() == ("error: unknown executor 'dask'; choose one of "
                                                               "local, ray, slurm")


def test_splits_disagreeing_with_the_results_folder_are_refused(reference, data, tmp_path, cli):
    folder = tmp_path / "other"
    path = write_study(folder, data, results=str(reference[0] / "results"))
    path.write_text(path.read_text().replace("shots = [2]", "shots = [3]", 1))
    before = (reference[0] / "results" / "alpha" / "results.parquet").read_bytes()
    result = cli("study", "run", path)
    assert result.exit_code == 2
    assert "holds rows of splits" in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert (reference[0] / "results" / "alpha" / "results.parquet").read_bytes() == before


def test_study_report_covers_every_task(reference, cli, tmp_path):
    result = cli("study", "report", reference[0] / "study.toml", "--out", tmp_path / "report")
    assert result.exit_code == 0
    page = (tmp_path / "report" / "index.html").read_text()
    assert "alpha" in page and "beta" in page
    # issue 30 (5): adapt runs the study leaves out on purpose (folds = [0]) are no missing problems
    missing = (tmp_path / "report" / "tables" / "missing.txt").read_text()
    assert "missing" not in missing and "not run for" not in missing, missing


def test_study_report_lists_planned_runs_that_are_absent(reference, cli, tmp_path):
    copy = tmp_path / "study"
    shutil.copytree(reference[0], copy)
    table_path = copy / "results" / "alpha" / "results.parquet"
    table = pd.read_parquet(table_path)
    # the folder as one table without those rows (its parts, which readers take first, removed)
    shutil.rmtree(table_path.parent / "parts")
    (table_path.parent / ".splits").unlink()
    table[~((table["method"] == "lp") & (table["backbone"] == "test-tiny-cnn"))].to_parquet(table_path)
    result = cli("study", "report", copy / "study.toml", "--out", tmp_path / "report")
    assert result.exit_code == 0, result.output
    missing = (tmp_path / "report" / "tables" / "missing.txt").read_text().splitlines()
    assert [line for line in missing if "missing" in line] == [
        "alpha/test-tiny-cnn/lp 2-shot: missing seed 0 fold 0 (planned by the study)",
        "alpha/test-tiny-cnn/lp full: missing seed 0 fold 0 (planned by the study)",
    ], missing
