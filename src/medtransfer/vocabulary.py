"""The words every stage shares, defined once: the CLI's choices, the store's attributes and the results table's
columns all spell these the same way, so a new embedding kind or regime is one edit here."""

from __future__ import annotations

import numpy as np

# Feature variants a store group can hold (``features_<kind>``); "default" is the backbone's own embedding.
# DINOv2's linear-evaluation grid (facebookresearch/dinov2 dinov2/eval/linear.py create_linear_input):
# cls = last block's class token, cls_mean = + average-pooled patch tokens, cls4 = class tokens of the last 4
# blocks, last4 = cls4 + average-pooled patch tokens; mean = patch tokens alone; proj = a CLIP-style model's
# class token projected into its image-text space (what CLIP's encode_image returns).
EMBEDDING_KINDS: tuple[str, ...] = ("cls", "mean", "cls_mean", "cls4", "last4", "proj")

# Mixed precision for extract and adapt: "auto" is bf16 autocast on CUDA, fp32 on the CPU.
PRECISIONS: tuple[str, ...] = ("auto", "fp32", "bf16", "fp16")

# Training regimes a task can be in (``Task.regime``, the results table's ``regime`` column).
REGIMES: tuple[str, ...] = ("full", "fewshot", "fraction")

# Class weighting of a loss or a head: "balanced" is n / (n_classes * n_class), scikit-learn's rule.
CLASS_WEIGHTS: tuple[str, ...] = ("balanced", "none")

# Where hyperparameters are tuned: the fold's ``val`` rows, inner cross-validation on the training rows, or
# "budget": inner CV on a few-shot / fraction task's own training rows (its label budget), val for full data.
TUNING: tuple[str, ...] = ("val", "cv", "budget")

# What the metrics count: test images, or patients (the mean probability of a patient's images).
UNITS: tuple[str, ...] = ("image", "patient")

# Logistic regression's grid of C (scikit-learn's inverse L2 strength), shared by probe and adapt's lp head.
LOGREG_C_GRID: tuple[float, ...] = tuple(float(c) for c in np.logspace(-4, 3, 8))
