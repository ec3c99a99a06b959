"""The study cost model: `study plan` builds no model, device profiles, `study calibrate`, the FLOPs table."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from medtransfer.study import load_study
from medtransfer.study.cost import (
    BUILTIN_PROFILES,
    architecture_flops,
    flops_table,
    regenerate_flops_table,
    select_profile,
)
from medtransfer.testing.backbones import tiny_backbones


@pytest.fixture(autouse=True)
def own_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("MEDTRANSFER_CACHE", str(tmp_path / "cache"))


@pytest.fixture
def benchmark(cli, tmp_path):
    cli("study", "init", tmp_path / "bench.toml", "--preset", "benchmark")
    return tmp_path / "bench.toml"


def test_benchmark_plan_builds_no_model_and_gives_gpu_hours(cli, benchmark, monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("study plan built an nn.Module")

    monkeypatch.setattr(nn.Module, "__init__", refuse)
    result = cli("study", "plan", benchmark, "--json", "--device-profile", "A40", "--pack", "8")
    assert result.exit_code == 0, result.output
    est = json.loads(result.stdout)["estimate"]
    assert est["profile"] == "A40" and est["total_hours"] > 0
    assert set(est["hours_by_kind"]) == {"extract", "adapt", "probe"}
    assert {"fft", "lp", "lora", "vera", "bitfit", "ia3"} == set(est["adapt_hours_by_method"])
    assert est["published"]["gpu_hours"] == 3200
    assert est["published"]["ours_on_that_profile"] == pytest.approx(est["total_hours"])
    assert 0 < est["packed_total_hours"] < est["total_hours"], "packing shares lp's val/test forward passes"
    assert set(BUILTIN_PROFILES) | {"cpu"} <= set(est["hours_by_profile"])
    assert any("ASSUMPTION" in line for line in est["assumptions"]), "an assumed efficiency is said to be one"


def test_profile_selection(cli, benchmark):
    hours = json.loads(cli("study", "plan", benchmark, "--json", "--device-profile", "h200").stdout)["estimate"]
    assert hours["profile"] == "H200"
    ratio = hours["hours_by_profile"]["A40"] / hours["hours_by_profile"]["H200"]
    assert ratio == pytest.approx(989.5 / 149.7), "same assumed efficiency: the datasheet peaks' ratio"
    default = json.loads(cli("study", "plan", benchmark, "--json").stdout)["estimate"]
    assert default["profile"] == ("cpu" if not torch.cuda.is_available() else default["profile"])
    bad = cli("study", "plan", benchmark, "--device-profile", "Z9")
    assert bad.exit_code == 2 and bad.output.startswith("error: unknown device profile 'Z9'")


def test_calibrate_writes_a_profile_the_plan_reads(cli, benchmark, monkeypatch):
    torch.set_num_threads(1)
    text = benchmark.read_text()
    names = next(line for line in text.splitlines() if line.startswith("names = "))
    benchmark.write_text(text.replace(names, 'names = ["test-tiny-cnn", "test-tiny-vit"]')
                         .replace('device = "auto"', 'device = "cpu"'))
    with tiny_backbones():
        result = cli("study", "calibrate", benchmark, "--batch-size", "2")
        assert result.exit_code == 0, result.output
        profile = select_profile(None, "cpu")  # the host's calibrated profile is now the default
        assert profile.name == "cpu (calibrated)" and set(profile.measured) == {"test-tiny-cnn", "test-tiny-vit"}
        assert all(rate > 0 for rates in profile.measured.values() for rate in rates.values())
        est = json.loads(cli("study", "plan", benchmark, "--json").stdout)["estimate"]
        assert est["profile"] == "cpu (calibrated)"
        assert any("measured by `study calibrate`" in line for line in est["assumptions"])
        plan_hours = est["hours_by_kind"]["extract"]
        study = load_study(benchmark)
        flops = architecture_flops("test-tiny-cnn")["forward"]
        images = sum(task.expected_images for task in study.tasks)
        expected = images * flops / (profile.measured["test-tiny-cnn"]["forward"] * 1e12) / 3600
        flops_vit = architecture_flops("test-tiny-vit")["forward"]
        expected += images * flops_vit / (profile.measured["test-tiny-vit"]["forward"] * 1e12) / 3600
        assert plan_hours == pytest.approx(expected), "extract hours: images x FLOPs / measured FLOP/s"


def test_flops_table_matches_the_architecture(tmp_path):
    with tiny_backbones():
        from medtransfer.backbones import load_backbone

        table = regenerate_flops_table(("test-tiny-vit",), path=tmp_path / "flops.json")
        assert json.loads((tmp_path / "flops.json").read_text()) == table
        model = load_backbone("test-tiny-vit", "random").model  # a real CPU model: the meta count is exact
        size = table["test-tiny-vit"]["input_size"]
        # the math attention kernel, whose matmuls the counter sees (the fused CPU kernel it does not count)
        with FlopCounterMode(display=False) as counter, torch.no_grad(), sdpa_kernel(SDPBackend.MATH):
            model(torch.zeros(1, 3, size, size))
        assert table["test-tiny-vit"]["forward"] == counter.get_total_flops() > 0
        entry = table["test-tiny-vit"]
        assert entry["forward"] < entry["train_frozen"] < entry["train_full"]
    shipped = flops_table()
    assert shipped["resnet50"] == architecture_flops("resnet50"), "regenerate: python -m medtransfer.study.cost"
