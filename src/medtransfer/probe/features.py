"""Feature variants from the store and preprocessing fitted on a task's training rows only.

Preprocessing is a spec string joined by ``+``, applied in order: ``l2`` (each row scaled to unit norm: needs no
fitted statistic), ``standardize`` (train mean / std per feature; a constant feature keeps std 1, as
scikit-learn's StandardScaler), ``pcaN`` (centred PCA to N components, fitted on the training rows), ``none``.
Default: ``standardize``. Every fitted step is affine, so a fitted preprocessing is ``(x - mu) @ A``
(``A`` diagonal or a matrix) and a linear head's weights fold back onto raw features.
"""

from __future__ import annotations

import re
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


def _is_constant(var: np.ndarray, mean: np.ndarray, n_rows: int) -> np.ndarray:
    """Features indistinguishable from a constant on their rows: scikit-learn's rule, the roundoff bound of the
    two-pass variance (Chan, Golub & LeVeque), ``sklearn/preprocessing/_data.py`` ``_is_constant_feature``."""
    eps = np.finfo(np.float64).eps
    return var <= n_rows * eps * var + (n_rows * mean * eps) ** 2


def _inverse_scale(var: np.ndarray, mean: np.ndarray, n_rows: int, dtype) -> np.ndarray:
    """1 / std, with constant features left unscaled (scale 1, as scikit-learn's StandardScaler: its
    ``_handle_zeros_in_scale`` with the ``_is_constant_feature`` mask)."""
    sd = np.sqrt(var)
    return (1.0 / np.where(_is_constant(var, mean, n_rows) | ~(sd > 0), 1.0, sd)).astype(dtype)


# a subset's variance under this fraction of its mean square came out of cancellation: recomputed in two passes
_CANCELLATION = 1e-3


def subset_moments(x_all: np.ndarray, rows_of: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Every subset's per-feature mean and (population) variance [J, D], float64, from that subset's rows only:
    nothing outside a subset enters its numbers, not even through rounding (no shift shared across subsets), so
    a task's preprocessing is bitwise the same whatever the other rows hold.

    Sums and sums of squares of every subset come from two sparse products (job x row indicator times the
    features, float64): one pass for all subsets. ``E[x^2] - E[x]^2`` loses digits where the variance is small
    against the mean square (a feature nearly constant on the subset); there, and only there, the subset's rows
    go through the corrected two-pass algorithm scikit-learn's StandardScaler uses (``sklearn/utils/extmath.py``
    ``_incremental_mean_and_var``: squared deviations from the mean less the square of their sum / n), so a
    feature constant on the subset comes out with a variance at rounding level, which ``_is_constant`` sees."""
    x = x_all.astype(np.float64, copy=False)
    counts = np.array([len(rows) for rows in rows_of], dtype=np.float64)[:, None]
    job_of = np.repeat(np.arange(len(rows_of)), counts[:, 0].astype(int))
    members = sparse.csr_matrix((np.ones(len(job_of)), (job_of, np.concatenate([*rows_of, np.zeros(0, int)]))),
                                shape=(len(rows_of), len(x)))
    with np.errstate(all="ignore"):  # an empty subset: NaN; a NaN row: NaN in its subsets only
        mean = np.asarray(members @ x) / counts
        square = np.asarray(members @ (x * x)) / counts
        var = square - mean * mean
        shaky = ~(var > _CANCELLATION * square) & (square > 0)
    for j in np.flatnonzero(shaky.any(1)):
        cols = np.flatnonzero(shaky[j])
        deviation = x[np.ix_(rows_of[j], cols)] - mean[j, cols]
        var[j, cols] = ((deviation * deviation).sum(0) - deviation.sum(0) ** 2 / counts[j]) / counts[j]
    return mean, np.maximum(var, 0.0)


def _check_steps(steps: tuple[str, ...]) -> int | None:
    """The PCA width of ``steps`` (None without a pcaN step), refusing an order the affine form cannot hold."""
    pca = [int(step[3:]) for step in steps if step.startswith("pca")]
    if len(pca) > 1 or (pca and "standardize" in steps and steps.index("standardize") > steps.index(f"pca{pca[0]}")):
        raise MedtransferError("preprocessing: at most one pcaN step, after standardize")
    return pca[0] if pca else None


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
    return fit_affines(x_train, [np.arange(len(x_train))], steps)[0]


def fit_affines(x_all: np.ndarray, rows_of: list[np.ndarray], steps: tuple[str, ...]) -> list[Affine]:
    """``fit_affine`` for many row subsets of one matrix, each from its own rows only (``subset_moments``): the
    same numbers, bitwise, as fitting the subset alone, whatever the other rows of ``x_all`` hold."""
    pca, dim, dtype = _check_steps(steps), x_all.shape[1], x_all.dtype
    if pca is not None and pca > dim:  # wider than the features: no task can have it (fewer rows: run.py refuses)
        check_pca_fits(steps, len(x_all), dim)
    if "standardize" not in steps and pca is None:
        return [Affine(np.zeros(dim, dtype=dtype), np.ones(dim, dtype=dtype)) for _ in rows_of]
    means, variances = subset_moments(x_all, rows_of)
    affines = []
    for j, rows in enumerate(rows_of):
        mu = means[j].astype(dtype)
        a = (_inverse_scale(variances[j], means[j], len(rows), dtype) if "standardize" in steps
             else np.ones(dim, dtype=dtype))
        if pca is not None:  # the SVD of the subset's own standardized rows
            _, _, vt = np.linalg.svd((x_all[rows] - mu) * a, full_matrices=False)
            a = (a[:, None] * vt[:pca].T).astype(dtype)
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
