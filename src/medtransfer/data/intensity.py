"""Scaling decoded values to [0, 1]: over the finite values only, so one inf or NaN pixel cannot blank an image."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from medtransfer.errors import MedtransferError


def min_max(array: np.ndarray, path: str | Path) -> np.ndarray:
    """Min-max scale over the finite values, as float32; +inf maps to 1, -inf and NaN to 0.

    A constant image becomes 0 (no contrast to keep); an image without any finite value is refused, naming
    ``path``.
    """
    finite = np.isfinite(array)
    if finite.all():
        values = array
    elif finite.any():
        values = array[finite]
    else:
        raise MedtransferError(f"image {path} has no finite pixel value (every pixel is NaN or infinite)")
    low, high = float(values.min()), float(values.max())
    clean = np.where(finite, array, low).astype(np.float64) if not finite.all() else array.astype(np.float64)
    scaled = (clean - low) / (high - low) if high > low else np.zeros_like(clean)
    scaled[np.isposinf(array)] = 1.0
    return scaled.astype(np.float32)
