"""A small synthetic chest-X-ray-like data set with a learnable label, patients and centers.

Used by ``medtransfer demo`` and by the tests: no real medical data can be shipped, but every stage needs
images whose label is learnable, patients with several images, and centers that differ in acquisition.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image


@dataclass(frozen=True)
class SyntheticSpec:
    """What to generate; the defaults make a demo that runs in well under a minute."""

    n_patients: int = 200
    n_centers: int = 3
    image_size: int = 128
    positive_rate: float = 0.4
    repeat_patient_rate: float = 0.3  # share of patients with 2-3 images
    signal: float = 0.6  # strength of the opacity that marks a positive image
    seed: int = 0


def _chest(rng: np.random.Generator, size: int, positive: bool, signal: float) -> np.ndarray:
    """A bright mediastinum and ribs around two dark lung fields; positives get patchy opacities."""
    y, x = np.mgrid[0:size, 0:size] / size
    image = 0.55 + 0.05 * rng.standard_normal()
    image = image + 0.25 * np.exp(-((x - 0.5) ** 2) / 0.004)  # mediastinum / spine
    lungs = np.zeros((size, size))
    for cx in (0.3, 0.7):
        cx = cx + 0.02 * rng.standard_normal()
        lungs += ((x - cx) ** 2 / 0.03 + (y - 0.5) ** 2 / 0.09) < 1
    lungs = np.clip(lungs, 0, 1)
    ribs = 0.06 * (np.sin(y * 40 + 3 * (x - 0.5) ** 2 + rng.uniform(0, 6)) > 0.6)
    image = image - 0.35 * lungs + ribs * lungs
    if positive:
        for _ in range(rng.integers(2, 5)):
            cx = rng.choice([0.3, 0.7]) + 0.06 * rng.standard_normal()
            cy = rng.uniform(0.4, 0.75)
            radius = rng.uniform(0.05, 0.11)
            blob = np.exp(-((x - cx) ** 2 + (y - cy) ** 2) / (2 * radius**2))
            image = image + signal * 0.3 * blob * lungs
    image = image + 0.03 * rng.standard_normal((size, size))
    return np.clip(image, 0, 1)


def make_synthetic_dataset(folder: str | Path, spec: SyntheticSpec | None = None) -> Path:
    """Write PNG images (8-bit at some centers, 16-bit at others) and ``manifest.csv``; return its path."""
    spec = spec or SyntheticSpec()
    folder = Path(folder)
    (folder / "images").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(spec.seed)
    rows = []
    for patient in range(spec.n_patients):
        center = f"center{patient % spec.n_centers}"
        positive = bool(rng.random() < spec.positive_rate)
        n_images = int(rng.integers(2, 4)) if rng.random() < spec.repeat_patient_rate else 1
        # Centers differ in exposure and bit depth, as real scanners do.
        gain = 1.0 + 0.08 * (patient % spec.n_centers)
        sixteen_bit = patient % spec.n_centers == 1 or (patient % spec.n_centers == 2 and patient % 2 == 0)
        for visit in range(n_images):
            pixels = np.clip(_chest(rng, spec.image_size, positive, spec.signal) * gain, 0, 1)
            name = f"images/p{patient:04d}_v{visit}.png"
            if sixteen_bit:
                Image.fromarray((pixels * 65535).astype(np.uint16)).save(folder / name)
            else:
                Image.fromarray((pixels * 255).astype(np.uint8)).save(folder / name)
            rows.append(
                {
                    "image": name,
                    "label": int(positive),
                    "patient": f"P{patient:04d}",
                    "center": center,
                }
            )
    manifest = folder / "manifest.csv"
    pd.DataFrame(rows).to_csv(manifest, index=False)
    return manifest
