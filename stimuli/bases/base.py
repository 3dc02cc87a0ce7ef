"""The base every basis extends, and the block moments the bases and the measures share.

Each basis decodes linearly: ``A ≈ offset_ + transform(A) @ components_``. That shared form lets
:mod:`stimuli.measures.completeness` project any basis onto a subset of its units the same way.

``explained_variance_ratio_[k]`` is the share of the activations' variance that unit ``k`` alone
reconstructs by least squares: the data (centred) fitted by ``β · c_k w_kᵀ``, its centred code
``c_k`` times its atom ``w_k`` with the best scale ``β``, which is
``(c_kᵀ X w_k)² / (||c_k||² ||w_k||² · ||X||²)``. It lies in [0, 1] by Cauchy–Schwarz, is 0 for a unit
whose code never varies, and for orthonormal bases (neurons, PCA) is the usual ratio (the channel's or
the component's variance over the total). :func:`stimuli.measures.completeness.cumulative_explained_variance`
fits the top k units' contributions together the same way, so the cumulative curve is monotone and
in [0, 1] for every basis; for non-orthogonal atoms (NMF, dictionary, SAE) the units' shares overlap
and need not add up to it. NMF, dictionary and SAE atoms are sorted by this share, largest first, so
every basis lists its units in explained-variance order except neurons, which keep channel order.

What differs between bases lives on the basis, as scikit-learn keeps it in estimator tags: its
:class:`BasisTags`, its differentiable score (:meth:`Basis.scores`), the exact codes completeness projects
(:meth:`Basis.exact_codes`), the readout attribution differentiates (:meth:`Basis.readout`) and its
parameters read from the job's configuration (:meth:`Basis.params_from_settings`). Callers never switch on
a basis's type or name.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin


def block_rows(n_columns: int) -> int:
    """Rows per block where a statistic of an N x C matrix is summed block by block: about 2 M values
    (16 MiB in float64) per temporary, 256 to 4096 rows, whatever the number of images."""
    return int(np.clip(2 ** 21 // max(n_columns, 1), 256, 4096))


def row_blocks(n: int, rows: int):
    """``(start, stop)`` of consecutive blocks of ``rows`` rows covering ``n``."""
    return ((s, min(n, s + rows)) for s in range(0, n, rows))


def checked_activations(A: Any) -> np.ndarray:
    """``A`` as an N x C array in its own dtype, its values checked finite block by block (no N x C
    temporary)."""
    A = np.asarray(A)
    if A.ndim != 2:
        raise ValueError(f"activations must be an N x C matrix, got shape {A.shape}")
    if not all(np.isfinite(A[s:e]).all() for s, e in row_blocks(len(A), block_rows(A.shape[1]))):
        raise ValueError("activations contain NaN or infinite values")
    return A


def as_float64(A: Any) -> np.ndarray:
    return checked_activations(A).astype(np.float64, copy=False)


def column_mean(A: np.ndarray) -> np.ndarray:
    """Each column's mean in float64, summed block by block (a float32 matrix is never copied whole)."""
    total = np.zeros(A.shape[1])
    for s, e in row_blocks(len(A), block_rows(A.shape[1])):
        total += A[s:e].sum(axis=0, dtype=np.float64)
    return total / max(len(A), 1)


def centred_blocks(A: np.ndarray, mean: np.ndarray):
    """``(start, stop, A[start:stop] − mean)`` in float64 over row blocks, each written into the same
    buffer: a block is valid until the next one is made."""
    rows = block_rows(A.shape[1])
    buf = np.empty((min(rows, len(A)), A.shape[1]))
    for s, e in row_blocks(len(A), rows):
        yield s, e, np.subtract(A[s:e], mean, out=buf[:e - s])


def _block(codes, s: int, e: int) -> np.ndarray:
    """Rows ``s:e`` of an N x K code matrix as a new float64 array (the caller centres it in place), or
    of an object that computes them (:class:`stimuli.scores.Codes`)."""
    if hasattr(codes, "block"):
        return codes.block(s, e)
    return np.array(codes[s:e], dtype=np.float64)


def centred_products(A: np.ndarray, codes, components: np.ndarray, gram: bool = False) -> dict[str, Any]:
    """The centred sums the variance shares are made of, accumulated over row blocks with ``X`` the
    centred activations, ``C`` the centred codes and ``W`` the atoms: ``total = ||X||²``,
    ``fit_k = c_kᵀ X w_k``, ``code_sq_k = ||c_k||²`` and, with ``gram``, ``gram = CᵀC`` (K x K).
    ``codes`` is an N x K array or anything with ``block(start, stop)`` (and ``mean``)."""
    W = np.asarray(components, dtype=np.float64)
    n = len(A)
    mean = column_mean(A)
    if hasattr(codes, "block"):
        code_mean = codes.mean
    else:
        code_mean = np.zeros(W.shape[0])
        for s, e in row_blocks(n, block_rows(W.shape[0])):
            code_mean += _block(codes, s, e).sum(axis=0)
        code_mean /= max(n, 1)
    total, fit, code_sq = 0.0, np.zeros(W.shape[0]), np.zeros(W.shape[0])
    G = np.zeros((W.shape[0], W.shape[0])) if gram else None
    for s, e, X in centred_blocks(A, mean):
        total += float((X * X).sum())
        _add_code_sums(_block(codes, s, e), code_mean, X @ W.T, fit, code_sq, G)
    return {"total": total, "fit": fit, "code_sq": code_sq, "gram": G}


def _add_code_sums(C: np.ndarray, code_mean: np.ndarray, projected: np.ndarray, fit: np.ndarray,
                   code_sq: np.ndarray, gram: np.ndarray | None) -> None:
    """One row block's terms of :func:`centred_products`, added in place (the block's codes are
    freed on return, before the next block's are made)."""
    C -= code_mean
    fit += (C * projected).sum(axis=0)
    code_sq += (C * C).sum(axis=0)
    if gram is not None:
        gram += C.T @ C


def unit_shares(A: np.ndarray, codes, components: np.ndarray) -> np.ndarray:
    """Each unit's share of the variance of ``A`` (N x C) reconstructed by least squares from its own
    contribution, ``(c_kᵀ X w_k)² / (||c_k||² ||w_k||² ||X||²)`` with ``X`` and ``c_k`` centred (module
    docstring); in [0, 1]. Summed over row blocks (:func:`centred_products`)."""
    sums = centred_products(A, codes, components)
    total, fit = sums["total"], sums["fit"]
    if total == 0:
        return np.zeros(np.asarray(components).shape[0])
    scale = sums["code_sq"] * (np.asarray(components, dtype=np.float64) ** 2).sum(axis=1)
    share = np.divide(fit ** 2, scale * total, out=np.zeros_like(fit), where=scale > 0)
    return np.clip(share, 0.0, 1.0)


def column_variance(A: np.ndarray, mean: np.ndarray | None = None) -> np.ndarray:
    """Each column's (biased) variance in float64, two passes over row blocks."""
    mean = column_mean(A) if mean is None else mean
    sq = np.zeros(A.shape[1])
    for _s, _e, X in centred_blocks(A, mean):
        sq += (X * X).sum(axis=0)
    return sq / max(len(A), 1)


@dataclass(frozen=True)
class BasisTags:
    """What the modules that use a basis need to know about it (scikit-learn's ``__sklearn_tags__`` in
    spirit: data on the class, read instead of switching on its type).

    ``linear_codes``: a unit's score is an affine function of the pooled activation (:meth:`Basis.linear_scores`),
    cheap to recompute, so the scores are never stored (:class:`stimuli.scores.Codes`).
    ``sparse_codes``: codes are non-negative and 0 for most images; feature visualization leads a code
    stuck at 0 out along its atom (:mod:`stimuli.featurevis`).
    ``non_negative_input``: the basis needs non-negative (post-ReLU) activations.
    ``channel_codes``: each unit is one channel of the layer (its atom a unit vector, its code the
    channel's value), so setting a unit's code is setting the channel, with no product (ablation).
    ``config_section``: the configuration key holding the basis's own parameters (None: it has none),
    with ``config_defaults`` the parameters it takes there and their defaults.
    """

    linear_codes: bool = False
    sparse_codes: bool = False
    non_negative_input: bool = False
    channel_codes: bool = False
    config_section: str | None = None
    config_defaults: dict[str, Any] = field(default_factory=dict)


class Basis(TransformerMixin, BaseEstimator):
    """Common state: ``components_`` (K x C), ``offset_`` (C), ``code_mean_`` (K),
    ``explained_variance_`` and ``explained_variance_ratio_`` (K).

    scikit-learn's ``BaseEstimator`` reads the parameters from each subclass's ``__init__`` signature
    (``get_params``, ``set_params``, ``sklearn.clone``), so ``__init__`` only stores its arguments."""

    name: ClassVar[str] = "basis"
    tags: ClassVar[BasisTags] = BasisTags()

    # -- configuration ------------------------------------------------------------------------
    @classmethod
    def check_params(cls, params: dict[str, Any]) -> None:
        """ValueError naming what is wrong with ``params`` (the basis's configuration section, defaults
        filled in); the section's keys are already checked against ``tags.config_defaults``."""

    @classmethod
    def params_from_settings(cls, settings: Any, *, seed: int = 0, device: str = "auto") -> dict[str, Any]:
        """The estimator's parameters from a job's bases section (:class:`stimuli.settings.bases.BasisSettings`,
        read through ``components_for`` and ``own_params``), its seed and the device it runs on."""
        params: dict[str, Any] = {"n_components": settings.components_for(cls.name), "random_state": seed}
        if cls.tags.config_section is not None:
            params.update(cls.tags.config_defaults, **settings.own_params(cls.tags.config_section))
        return params

    # -- the unit's score and codes -------------------------------------------------------------
    def scores(self, x):
        """N x K scores of every unit for pooled activations ``x`` (N x C float32 torch tensor),
        differentiable: what ranks natural images and what feature visualizations climb."""
        raise NotImplementedError(f"the {self.name} basis has no score function")

    def linear_scores(self, X: np.ndarray, units=slice(None)) -> np.ndarray:
        """The scores of a basis with ``tags.linear_codes`` for a NumPy block of pooled activations, as a
        new float64 array: the centred projection on the atoms ``units``."""
        W = np.asarray(self.components_, dtype=np.float64)[units]
        X = np.array(X, dtype=np.float64)
        X -= self.offset_
        return X @ W.T

    def exact_codes(self, X):
        """The codes completeness projects, for many spatial positions at once (M x C float32 torch
        tensor → M x K): by default the basis's own ``transform``."""
        import torch

        out = self.transform(X.double().cpu().numpy())
        return torch.as_tensor(out, dtype=torch.float32, device=X.device)

    def readout(self, pooled: np.ndarray, unit_index: int) -> np.ndarray:
        """``∂h_j/∂ā``, the unit's code's gradient at the pooled activation ``pooled`` (C,), which
        attribution back-propagates (:func:`stimuli.measures.attribution.unit_readout`); by default a
        central difference of ``transform``."""
        eps = 1e-3 * (np.linalg.norm(pooled) / np.sqrt(len(pooled)) + 1e-6)
        I = np.eye(len(pooled)) * eps
        j = int(unit_index)
        plus = self.transform(np.maximum(pooled + I, 0) if (pooled >= 0).all() else pooled + I)[:, j]
        minus = self.transform(np.maximum(pooled - I, 0) if (pooled >= 0).all() else pooled - I)[:, j]
        return (plus - minus) / (2 * eps)

    # -- fitting --------------------------------------------------------------------------------
    def fit(self, A, y=None) -> Basis:
        self.fit_transform(A)
        return self

    def fit_transform(self, A, y=None) -> np.ndarray:
        raise NotImplementedError

    def transform(self, A) -> np.ndarray:
        raise NotImplementedError

    def inverse_transform(self, codes) -> np.ndarray:
        return self.offset_ + np.asarray(codes, dtype=np.float64) @ self.components_

    @property
    def n_components_(self) -> int:
        return int(self.components_.shape[0])

    def _finish(self, A: np.ndarray, codes: np.ndarray) -> None:
        self.total_variance_ = float(column_variance(A).sum())
        self.code_mean_ = codes.mean(axis=0)
        self.explained_variance_ratio_ = unit_shares(A, codes, self.components_)
        self.explained_variance_ = self.explained_variance_ratio_ * self.total_variance_

    def _sort_by_variance(self, A: np.ndarray, codes: np.ndarray) -> np.ndarray:
        order = np.argsort(-unit_shares(A, codes, self.components_), kind="stable")
        self.components_ = self.components_[order]
        return order
