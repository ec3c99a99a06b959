"""Synthetic results tables with known answers, in the exact format probe/adapt write.

Per task and backbone, on every (seed, fold):
- `lora` = `logreg` + 0.15 (+ small positive noise): better on every fold, so it must win and be best;
- `fft` = `logreg` exactly: a tie, so it must never be declared a winner;
- `knn` = `logreg` ± 0.01 alternating: no consistent difference, so no winner either.
Few-shot `logreg` rows at 1/4/16 shots improve with shots; optional 10%/50%-data `logreg` rows too.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

BACKBONES = ["resnet50", "dinov2-vitb14", "medclip-resnet"]
SEEDS = [0, 1]
FOLDS = list(range(10))  # paired tests pair fold means (corrected resampled t over 10 folds)
PCT = {"logreg": np.nan, "knn": np.nan, "lora": 0.8, "fft": 100.0}


def make_rows(task: str | None, seed_offset: int = 0, fractions: bool = False) -> pd.DataFrame:
    rng = np.random.default_rng(1234 + seed_offset)
    rows = []
    for b_idx, backbone in enumerate(BACKBONES):
        for seed in SEEDS:
            for fold in FOLDS:
                base = 0.35 + 0.1 * b_idx + rng.normal(0, 0.04)
                alt = 0.01 if (seed * len(FOLDS) + fold) % 2 else -0.01
                mccs = {"logreg": base, "fft": base, "knn": base + alt, "lora": base + 0.15 + rng.uniform(0, 0.02)}
                for method, mcc in mccs.items():
                    rows.append(_row(task, backbone, method, "full", 0, seed, fold, mcc))
                for shots, drop in ((1, 0.25), (4, 0.15), (16, 0.05)):
                    rows.append(
                        _row(task, backbone, "logreg", "fewshot", shots, seed, fold, base - drop + rng.normal(0, 0.02))
                    )
                for fraction, drop in ((0.1, 0.12), (0.5, 0.04)) if fractions else ():
                    row = _row(task, backbone, "logreg", "fraction", 0, seed, fold, base - drop + rng.normal(0, 0.02))
                    rows.append({**row, "fraction": fraction})
    table = pd.DataFrame(rows)
    if fractions:  # as results.py writes it: the column exists, 0.0 outside the fraction regime
        table["fraction"] = table["fraction"].fillna(0.0)
    return table


def _row(
    task: str | None, backbone: str, method: str, regime: str, shots: int, seed: int, fold: int, mcc: float
) -> dict:
    row = {
        "backbone": backbone,
        "method": method,
        "regime": regime,
        "shots": shots,
        "seed": seed,
        "fold": fold,
        "mcc": float(mcc),
        "pr_auc": float(min(1.0, 0.5 + mcc / 2)),
        "roc_auc": float(min(1.0, 0.6 + mcc / 2)),
        "balanced_accuracy": float(0.5 + mcc / 3),
        "n_train": 400 if regime == "full" else 2 * shots,
        "n_test": 100,
        "fit_seconds": 1.5,
        "pct_trainable": PCT[method],
        "status": "ok",
        "error": "",
    }
    if task is not None:
        row["task"] = task
    return row


def write_results(run_dir: Path, df: pd.DataFrame, parquet: bool = True) -> Path:
    """Write the table the way probe/adapt do (parquet + CSV, same rows)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    if parquet:
        df.to_parquet(run_dir / "results.parquet", index=False)
    df.to_csv(run_dir / "results.csv", index=False)
    predictions(df).to_parquet(run_dir / "predictions.parquet", index=False)
    return run_dir


def predictions(df: pd.DataFrame, n_test: int = 12) -> pd.DataFrame:
    """Test predictions per row (for the CIs): ``n_test`` samples of 6 patients per fold, a better row's
    probabilities further from 0.5 on the right side."""
    labels = np.tile([0, 1], n_test // 2)
    parts = []
    for row in df.itertuples(index=False):
        rng = np.random.default_rng([row.seed, row.fold, len(parts)])
        margin = np.clip(row.mcc, -1, 1) * 0.4 * np.where(labels == 1, 1, -1)
        probability = np.clip(0.5 + margin + rng.normal(0, 0.15, n_test), 0, 1)
        key = {k: getattr(row, k) for k in ("backbone", "method", "regime", "shots", "seed", "fold")}
        if hasattr(row, "fraction"):
            key["fraction"] = row.fraction
        parts.append(pd.DataFrame({**key, "id": [f"f{row.fold}_{i}" for i in range(n_test)],
                                   "patient": [f"f{row.fold}_p{i // 2}" for i in range(n_test)], "label": labels,
                                   "probability": probability, "predicted": (probability >= 0.5).astype(int)}))
    return pd.concat(parts, ignore_index=True)
