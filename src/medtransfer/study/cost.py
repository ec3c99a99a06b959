"""The study cost model: FLOPs per backbone (from the architecture) divided by a device profile's throughput.

``study plan`` builds no model and reads no weights: the FLOPs of the registry's backbones at their input size
are a shipped table (``backbone_flops.json``, regenerated and checked by ``architecture_flops`` on torch's meta
device, see tests/study/test_cost.py); a backbone not in the table (a plugin, ``timm:...``) is counted on the
meta device at plan time, which allocates no tensor data and loads no weights.
A device profile is a peak dense bf16/fp16 throughput (the vendor datasheet's figure) times an efficiency, or
what ``study calibrate`` measured per backbone on a real device.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

from medtransfer.errors import MedtransferError

FLOPS_TABLE = Path(__file__).with_name("backbone_flops.json")
MODES = ("forward", "train_frozen", "train_full")  # no grad; input grads only (PEFT, weights frozen); all weights
# the published benchmark's own figure for its grid (issue 26 quotes it: ~9 GPU-minutes per adapt job)
PUBLISHED_GPU_HOURS = {"profile": "A40", "gpu_hours": 3200.0}
# the share of the dense peak a vision backbone reaches in bf16: an assumption until `study calibrate` measures it
ASSUMED_GPU_EFFICIENCY = 0.4


@dataclass(frozen=True)
class DeviceProfile:
    """Throughput of one device: ``peak_tflops`` x ``efficiency``, or measured FLOP/s per (backbone, mode)."""

    name: str
    peak_tflops: float  # dense bf16/fp16 tensor throughput (0: unknown, a calibrated profile only)
    efficiency: float
    peak_source: str
    efficiency_source: str = "assumed"  # "assumed" or "measured by study calibrate"
    measured: dict[str, dict[str, float]] = field(default_factory=dict)  # backbone -> mode -> achieved TFLOP/s

    def tflops(self, backbone: str, mode: str) -> float:
        """Achieved TFLOP/s of ``backbone`` in ``mode``: measured if calibrated, else peak x efficiency."""
        if backbone in self.measured and mode in self.measured[backbone]:
            return self.measured[backbone][mode]
        if self.peak_tflops > 0:
            return self.peak_tflops * self.efficiency
        rates = sorted(v[mode] for v in self.measured.values() if mode in v)
        if not rates:
            raise MedtransferError(f"device profile {self.name!r} has no {mode} throughput")
        return rates[len(rates) // 2]  # the median of the calibrated backbones


def _cpu_profile() -> DeviceProfile:
    cores = os.cpu_count() or 1
    # assumption: one AVX2 core does 2 FMA units x 8 fp32 lanes x 2 FLOPs at ~2 GHz = 64 GFLOP/s
    return DeviceProfile("cpu", 0.064 * cores, 0.3, f"assumed 64 GFLOP/s fp32 per core x {cores} cores (AVX2 FMA)")


# dense figures: NVIDIA's datasheets quote bf16 tensor TFLOPS "with sparsity" (*); the dense peak is half of it.
# Where the datasheet was read: A100 and its matrix/sparse BF16 split in the copy of the datasheet
# (nvidia-a100-datasheet-us-nvidia-1758950-r4-web.pdf) tabulated at glennklockwood.com/garden/processors/A100;
# H100 SXM "BFLOAT16 Tensor Core 1,979 TFLOPS*, * shown with sparsity, 1/2 lower without" in the datasheet copy at
# archive-lib.hpctech.co.jp/gpuproduct/nvidia-h100.html (989.4 dense in glennklockwood.com/garden/processors/h100)
BUILTIN_PROFILES: dict[str, DeviceProfile] = {p.name: p for p in (
    DeviceProfile("A40", 149.7, ASSUMED_GPU_EFFICIENCY,
                  "NVIDIA A40 datasheet: BF16 Tensor Core 149.7 | 299.4* TFLOPS"),
    DeviceProfile("A100", 312.0, ASSUMED_GPU_EFFICIENCY,
                  "NVIDIA A100 datasheet (SXM/PCIe): BF16 Tensor Core 312 | 624* TFLOPS"),
    DeviceProfile("H100", 989.5, ASSUMED_GPU_EFFICIENCY,
                  "NVIDIA H100 datasheet (SXM): BF16 Tensor Core 1,979* TFLOPS with sparsity, 989.5 dense"),
    DeviceProfile("H200", 989.5, ASSUMED_GPU_EFFICIENCY,
                  "NVIDIA H200 datasheet (SXM): BF16 Tensor Core 1,979* TFLOPS with sparsity, 989.5 dense"),
    DeviceProfile("L40S", 362.05, ASSUMED_GPU_EFFICIENCY,
                  "NVIDIA L40S datasheet: BFLOAT16 Tensor Core 362.05 | 733* TFLOPS"),
)}


def profiles_file() -> Path:
    """Calibrated profiles: ``$MEDTRANSFER_CACHE/device_profiles.json`` (read at each call)."""
    return Path(os.environ.get("MEDTRANSFER_CACHE", Path.home() / ".cache" / "medtransfer")) / "device_profiles.json"


def calibrated_profiles(path: Path | None = None) -> dict[str, DeviceProfile]:
    path = path or profiles_file()
    table = json.loads(path.read_text()) if path.is_file() else {}
    return {name: DeviceProfile(**entry) for name, entry in table.items()}


def save_profile(profile: DeviceProfile, path: Path | None = None) -> Path:
    """Add or replace ``profile`` in the calibrated profiles file (write beside, rename)."""
    path = path or profiles_file()
    table = json.loads(path.read_text()) if path.is_file() else {}
    table[profile.name] = asdict(profile)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".tmp-{os.getpid()}-{path.name}")
    temporary.write_text(json.dumps(table, indent=1, sort_keys=True))
    temporary.replace(path)
    return path


def all_profiles() -> dict[str, DeviceProfile]:
    return {**BUILTIN_PROFILES, "cpu": _cpu_profile(), **calibrated_profiles()}


def local_profile_name(device: str = "auto") -> str:
    """The profile of ``device`` on this host: its calibrated profile if any, else the built-in GPU it names."""
    import torch

    from medtransfer.device import resolve_device

    resolved = resolve_device(device)
    if resolved.type != "cuda":
        name = "cpu"
    else:
        gpu = torch.cuda.get_device_name(resolved)
        name = next((p for p in BUILTIN_PROFILES if p.lower() in gpu.lower()), gpu)
    calibrated = f"{name} (calibrated)"
    return calibrated if calibrated in calibrated_profiles() else name


def select_profile(name: str | None, study_device: str = "auto") -> DeviceProfile:
    """``--device-profile NAME``, else the profile of the study's ``[run] device`` on this host."""
    profiles = all_profiles()
    chosen = name or local_profile_name(study_device)
    match = next((p for key, p in profiles.items() if key.lower() == chosen.lower()), None)
    if match is None:
        raise MedtransferError(f"unknown device profile {chosen!r}; use one of {', '.join(profiles)} "
                               "or measure this device with `medtransfer study calibrate`")
    return match


def architecture_flops(backbone: str) -> dict:
    """FLOPs per image of ``backbone`` at its input size, counted on the meta device (no weights, no memory).

    ``forward``: eval, no grad; ``train_frozen``: forward + backward to the input with every weight frozen (the
    activation gradients a PEFT method back-propagates); ``train_full``: forward + backward with every weight
    trainable. torch's FlopCounterMode counts matmuls and convolutions (2 FLOPs per multiply-add)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from medtransfer.backbones import get_spec

    spec = get_spec(backbone)
    size = spec.preprocessing.input_size
    with torch.device("meta"):
        model = spec.build(False)
    out = {"input_size": size}
    for mode in MODES:
        model.train(mode != "forward")
        for parameter in model.parameters():
            parameter.requires_grad_(mode == "train_full")
        images = torch.zeros(1, 3, size, size, device="meta", requires_grad=mode == "train_frozen")
        with FlopCounterMode(display=False) as counter, torch.set_grad_enabled(mode != "forward"):
            output = model(images)
            if mode != "forward":
                output.float().sum().backward()
        out[mode] = float(counter.get_total_flops())
    return out


def flops_table() -> dict[str, dict]:
    return json.loads(FLOPS_TABLE.read_text())


def backbone_flops(backbone: str, table: dict[str, dict] | None = None) -> dict:
    """The shipped figure of ``backbone`` at its input size, else a meta-device count."""
    from medtransfer.backbones import get_spec

    table = flops_table() if table is None else table
    entry = table.get(backbone)
    if entry is not None and entry["input_size"] == get_spec(backbone).preprocessing.input_size:
        return entry
    return architecture_flops(backbone)


def regenerate_flops_table(backbones: tuple[str, ...] | None = None, path: Path = FLOPS_TABLE) -> dict[str, dict]:
    """Recount the shipped table (``python -m medtransfer.study.cost``): the seed backbones by default."""
    from medtransfer.backbones.registry import SEED_BACKBONES

    table = {name: architecture_flops(name) for name in (backbones or SEED_BACKBONES)}
    path.write_text(json.dumps(table, indent=1, sort_keys=True) + "\n")
    return table


if __name__ == "__main__":
    for name, entry in regenerate_flops_table().items():
        print(name, {mode: f"{entry[mode] / 1e9:.2f} GFLOPs" for mode in MODES})
