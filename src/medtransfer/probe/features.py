"""Feature variants from the store and preprocessing fitted on a task's training rows only.

Preprocessing is a spec string joined by ``+``, applied in order: ``l2`` (each row scaled to unit norm: needs no
fitted statistic), ``standardize`` (train mean / std per feature; a constant feature keeps std 1, as
scikit-learn's StandardScaler), ``pcaN`` (centred PCA to N components, fitted on the training rows), ``none``.
Default: ``standardize``. Every fitted step is affine, so a fitted preprocessing is ``(x - mu) @ A``
(``A`` diagonal or a matrix) and a linear head's weights fold back onto raw features.
"""

from __future__ import annotations

import re
import warnings
from dataclasses import dataclass

import numpy as np
from scipy import sparse

from medtransfer import cache_schema
from medtransfer.errors import MedtransferError
from medtransfer.vocabulary import EMBEDDING_KINDS

_STEP = re.compile(r"^(l2|standardize|none|pca(\d+))$")


def parse_preprocess(spec: str) -> tuple[str, ...]:
    steps = tuple(part.strip().lower() for part in spec.split("+") if part.strip()) or ("none",)
    for step in steps:
        if not _STEP.match(step):
            raise MedtransferError(
                f"unknown preprocessing step {step!r} in {spec!r}; use l2, standardize, pcaN or none joined by +"
            )
    if "l2" in steps and steps.index("l2") != 0:
        raise MedtransferError(f"l2 normalization must come first in --preprocess (got {spec!r})")
    return tuple(s for s in steps if s != "none")


def l2_normalize(x: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.where(norms > 0, norms, 1.0)


@dataclass
class Affine:
    """x -> (x - mu) @ A (A a vector = diagonal, or a [D, k] matrix)."""

    mu: np.ndarray
    a: np.ndarray

    def __call__(self, x: np.ndarray) -> np.ndarray:
        centred = x - self.mu
        return centred * self.a if self.a.ndim == 1 else centred @ self.a


def _inverse_scale(sd: np.ndarray, dtype) -> np.ndarray:
    """1 / std, with constant features left unscaled (as scikit-learn's StandardScaler does)."""
    return (1.0 / np.where(sd > 1e-12, sd, 1.0)).astype(dtype)


def pca_components(steps: tuple[str, ...]) -> int:
    """N of a ``pcaN`` step (0: none)."""
    return next((int(step[3:]) for step in steps if step.startswith("pca")), 0)


def check_pca_fits(steps: tuple[str, ...], n_rows: int, dim: int | None = None, what: str = "a fit") -> None:
    """``pcaN`` needs N <= min(rows, features) of the rows it is fitted on (an SVD has no more components);
    refused in one line rather than a broadcast error half-way through the fits."""
    n, most = pca_components(steps), min(n_rows, dim if dim is not None else n_rows)
    if n and n > most:
        width = f" of {dim} feature(s)" if dim is not None else ""
        raise MedtransferError(
            f"--preprocess pca{n}: {what} trains on {n_rows} row(s){width}, so PCA has at most {most} components; "
            f"use pca{most} or fewer (or leave few-shot regimes out)"
        )


def fit_affine(x_train: np.ndarray, steps: tuple[str, ...]) -> Affine:
    """The fitted (non-l2) steps as one affine map; ``x_train`` already l2-normalized when l2 is asked for."""
    dim = x_train.shape[1]
    pca = [int(step[3:]) for step in steps if step.startswith("pca")]
    if len(pca) > 1 or (pca and "standardize" in steps and steps.index("standardize") > steps.index(f"pca{pca[0]}")):
        raise MedtransferError("preprocessing: at most one pcaN step, after standardize")
    if "standardize" not in steps and not pca:
        return Affine(np.zeros(dim, dtype=x_train.dtype), np.ones(dim, dtype=x_train.dtype))
    mu = x_train.mean(0)
    a = np.ones(dim, dtype=x_train.dtype)
    if "standardize" in steps:
        sd = x_train.std(0)
        a = _inverse_scale(sd, x_train.dtype)
    if pca:
        check_pca_fits(steps, x_train.shape[0], dim)
        _, _, vt = np.linalg.svd((x_train - mu) * a, full_matrices=False)
        return Affine(mu, (a[:, None] * vt[: pca[0]].T).astype(x_train.dtype))
    return Affine(mu, a)


def fit_affines(x_all: np.ndarray, rows_of: list[np.ndarray], steps: tuple[str, ...]) -> list[Affine]:
    """``fit_affine`` for many row subsets of one matrix. Standardisation takes every subset's mean and variance
    from two sparse products (job x row indicator times features, after a global shift, in float64) instead
    of numpy's passes over each subset: one call for every job, its cost the total number of rows."""
    if "standardize" not in steps or not rows_of:
        return [fit_affine(x_all[rows], steps) for rows in rows_of]
    x = x_all.astype(np.float64, copy=False)
    # a NaN feature row spoils only the subsets that hold it, as in the per-subset fit (the sparse products never
    # touch rows outside a subset)
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        shift = np.nan_to_num(np.nanmean(x, 0))
    centred = x - shift
    # a sparse job x row indicator (a repeated row counts once per occurrence): cost ~ total rows x dim
    job_of = np.repeat(np.arange(len(rows_of)), [len(rows) for rows in rows_of])
    members = sparse.csr_matrix((np.ones(len(job_of)), (job_of, np.concatenate(rows_of))),
                                shape=(len(rows_of), len(x)))
    counts = np.asarray(members.sum(1))
    first = np.asarray(members @ centred) / counts  # E[x - shift]
    second = np.asarray(members @ (centred * centred)) / counts
    var = np.maximum(second - first * first, 0.0)
    affines = []
    for j, rows in enumerate(rows_of):
        mu, sd = (first[j] + shift).astype(x_all.dtype), np.sqrt(var[j])
        a = _inverse_scale(sd, x_all.dtype)
        if any(step.startswith("pca") for step in steps):
            affines.append(fit_affine(x_all[rows], steps))  # the SVD is per subset anyway
        else:
            affines.append(Affine(mu, a))
    return affines


def apply_preprocess(x_train: np.ndarray, others: list[np.ndarray], steps: tuple[str, ...]):
    """Fit on ``x_train`` and transform it and every array of ``others``."""
    if "l2" in steps:
        x_train, others = l2_normalize(x_train), [l2_normalize(o) for o in others]
    affine = fit_affine(x_train, steps)
    return affine(x_train), [affine(o) for o in others]


def read_embedding(store, key: str, embedding: str | None) -> cache_schema.FeatureSet:
    """The store's default ``features`` (embedding None / "default") or the ``features_<kind>`` variant."""
    if embedding in (None, "", "default", "features"):
        return cache_schema.read_features(store, key)
    if embedding not in EMBEDDING_KINDS:
        raise MedtransferError(f"unknown --embedding {embedding!r}; choose default, {', '.join(EMBEDDING_KINDS)}")
    return cache_schema.read_features(store, key, embedding=embedding)
