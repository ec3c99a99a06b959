"""``--device`` as extract and adapt both take it: "auto", "cpu", "cuda" or "cuda:N"."""

from __future__ import annotations

import torch

from medtransfer.errors import MedtransferError


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
