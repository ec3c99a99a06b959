"""``--device`` and ``--precision`` as extract, probe and adapt all take them: "auto", "cpu", "cuda" or "cuda:N";
auto, fp32, bf16 or fp16."""

from __future__ import annotations

import torch

from medtransfer.errors import MedtransferError
from medtransfer.vocabulary import PRECISIONS


def resolve_device(device: str) -> torch.device:
    """``auto`` is the GPU when torch sees one. A CUDA device asked for on a machine without one is a user
    error here, rather than torch's failure at the first tensor moved there."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except RuntimeError as exc:
        raise MedtransferError(f"unknown --device {device!r}; use auto, cpu, cuda or cuda:N") from exc
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise MedtransferError(f"--device {device} was asked for, but no CUDA GPU is visible; use --device cpu")
    return resolved


def resolve_precision(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype, or None for fp32: "auto" is bf16 on a GPU, fp32 on the CPU."""
    if precision not in PRECISIONS:
        raise MedtransferError(f"unknown precision {precision!r}; use {', '.join(PRECISIONS)}")
    if precision == "auto":
        precision = "bf16" if device.type == "cuda" else "fp32"
    return {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]
