"""Bases of a layer's activation space, with scikit-learn's estimator shape.

Each basis decodes linearly: ``A ≈ offset_ + transform(A) @ components_``. That shared form lets
:mod:`stimuli.completeness` project any basis onto a subset of its units the same way.

``explained_variance_ratio_[k]`` is the variance of unit ``k``'s own contribution to the
reconstruction, ``Var(code_k) * ||components_k||**2``, divided by the data's total variance. For
orthonormal bases (neurons, PCA) that is the usual figure and the ratios add up to the variance
explained by all units together; for NMF and dictionary atoms, which are not orthogonal, the ratios
need not add up, and the cumulative curve in :mod:`stimuli.completeness` is the honest figure. NMF and
dictionary atoms are sorted by this ratio, largest first, so every basis lists its units in
explained-variance order except neurons, which keep channel order.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def _as_2d(A: Any) -> np.ndarray:
    A = np.asarray(A)
    if A.ndim != 2:
        raise ValueError(f"activations must be an N x C matrix, got shape {A.shape}")
    if not np.isfinite(A).all():
        raise ValueError("activations contain NaN or infinite values")
    return A.astype(np.float64, copy=False)


class Basis:
    """Common state: ``components_`` (K x C), ``offset_`` (C), ``code_mean_`` (K),
    ``explained_variance_`` and ``explained_variance_ratio_`` (K)."""

    name = "basis"

    def fit(self, A, y=None) -> "Basis":
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
        self.total_variance_ = float(A.var(axis=0).sum())
        self.code_mean_ = codes.mean(axis=0)
        contrib = codes.var(axis=0) * (self.components_ ** 2).sum(axis=1)
        self.explained_variance_ = contrib
        self.explained_variance_ratio_ = contrib / self.total_variance_ if self.total_variance_ > 0 \
            else np.zeros_like(contrib)

    def _sort_by_variance(self, codes: np.ndarray) -> np.ndarray:
        contrib = codes.var(axis=0) * (self.components_ ** 2).sum(axis=1)
        order = np.argsort(-contrib, kind="stable")
        self.components_ = self.components_[order]
        return order

    def get_params(self) -> dict[str, Any]:
        return {k: v for k, v in vars(self).items() if not k.endswith("_") and not k.startswith("_")}


class NeuronBasis(Basis):
    """The identity: each channel is a unit and its code is its own activation."""

    name = "neuron"

    def __init__(self, n_components: int | None = None, random_state: int | None = None) -> None:
        self.n_components = n_components
        self.random_state = random_state

    def fit_transform(self, A, y=None) -> np.ndarray:
        A = _as_2d(A)
        c = A.shape[1]
        if self.n_components not in (None, c):
            raise ValueError(f"the neuron basis has one unit per channel ({c}), not {self.n_components}")
        self.components_ = np.eye(c)
        self.offset_ = np.zeros(c)
        self._finish(A, A)
        return A.copy()

    def transform(self, A) -> np.ndarray:
        return _as_2d(A).copy()


class PCABasis(Basis):
    """Principal components of the centred activations, in explained-variance order."""

    name = "pca"

    def __init__(self, n_components: int | None = None, random_state: int | None = 0) -> None:
        self.n_components = n_components
        self.random_state = random_state

    def fit_transform(self, A, y=None) -> np.ndarray:
        from sklearn.decomposition import PCA

        A = _as_2d(A)
        k = min(A.shape) if self.n_components is None else self.n_components
        if k > min(A.shape):
            raise ValueError(f"PCA can have at most {min(A.shape)} components here, not {k}")
        solver = "full" if A.shape[1] <= 4096 else "randomized"
        self._pca = PCA(n_components=k, svd_solver=solver, random_state=self.random_state)
        codes = self._pca.fit_transform(A)
        self.components_ = self._pca.components_.astype(np.float64)
        self.offset_ = self._pca.mean_.astype(np.float64)
        self._finish(A, codes)
        # sklearn's own ratio, identical up to rounding, keeps the textbook definition exact
        self.explained_variance_ = self._pca.explained_variance_ * (A.shape[0] - 1) / A.shape[0]
        self.explained_variance_ratio_ = self.explained_variance_ / self.total_variance_
        return codes

    def transform(self, A) -> np.ndarray:
        return (_as_2d(A) - self.offset_) @ self.components_.T


class NMFBasis(Basis):
    """Non-negative matrix factorisation of non-negative (post-ReLU) activations, as in CRAFT.

    ``A ≈ codes @ components_`` with both factors non-negative; sparsity through ``alpha_W`` /
    ``alpha_H`` and ``l1_ratio`` (scikit-learn's regularisation parameters).
    """

    name = "nmf"

    def __init__(self, n_components: int | None = None, init: str = "nndsvda", max_iter: int = 400,
                 tol: float = 1e-4, alpha_W: float = 0.0, alpha_H: float | str = "same",
                 l1_ratio: float = 0.0, random_state: int | None = 0) -> None:
        self.n_components = n_components
        self.init = init
        self.max_iter = max_iter
        self.tol = tol
        self.alpha_W = alpha_W
        self.alpha_H = alpha_H
        self.l1_ratio = l1_ratio
        self.random_state = random_state

    def _check(self, A) -> np.ndarray:
        A = _as_2d(A)
        if (A < 0).any():
            raise ValueError("NMF needs non-negative activations (use activation='post_relu'); "
                             f"found {int((A < 0).sum())} negative values")
        return A

    def fit_transform(self, A, y=None) -> np.ndarray:
        import warnings

        from sklearn.decomposition import NMF
        from sklearn.exceptions import ConvergenceWarning

        A = self._check(A)
        k = A.shape[1] if self.n_components is None else self.n_components
        self._nmf = NMF(n_components=k, init=self.init, max_iter=self.max_iter, tol=self.tol,
                        alpha_W=self.alpha_W, alpha_H=self.alpha_H, l1_ratio=self.l1_ratio,
                        random_state=self.random_state)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            codes = self._nmf.fit_transform(A)
        self.components_ = self._nmf.components_.astype(np.float64)
        order = self._sort_by_variance(codes)
        codes = codes[:, order]
        self._nmf.components_ = self._nmf.components_[order]
        self.offset_ = np.zeros(A.shape[1])
        self.reconstruction_err_ = float(self._nmf.reconstruction_err_)
        self._finish(A, codes)
        return codes

    def transform(self, A) -> np.ndarray:
        import warnings

        from sklearn.exceptions import ConvergenceWarning

        A = self._check(A)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            return self._nmf.transform(A)


class DictionaryBasis(Basis):
    """Sparse dictionary learning (scikit-learn's MiniBatchDictionaryLearning).

    The data are divided by ``scale_`` (the mean row norm) before fitting, so ``alpha`` — the weight
    of the L1 penalty on the codes — means the same thing for every layer. ``positive_code`` keeps
    codes non-negative, which makes the most/least activating images of an atom meaningful.
    """

    name = "dictionary"

    def __init__(self, n_components: int | None = None, alpha: float = 0.1, max_iter: int = 50,
                 batch_size: int = 256, positive_code: bool = True, positive_dict: bool = False,
                 transform_algorithm: str = "lasso_cd", random_state: int | None = 0) -> None:
        self.n_components = n_components
        self.alpha = alpha
        self.max_iter = max_iter
        self.batch_size = batch_size
        self.positive_code = positive_code
        self.positive_dict = positive_dict
        self.transform_algorithm = transform_algorithm
        self.random_state = random_state

    def fit_transform(self, A, y=None) -> np.ndarray:
        import warnings

        from sklearn.decomposition import MiniBatchDictionaryLearning
        from sklearn.exceptions import ConvergenceWarning

        A = _as_2d(A)
        k = A.shape[1] if self.n_components is None else self.n_components
        norms = np.linalg.norm(A, axis=1)
        self.scale_ = float(norms.mean()) if norms.mean() > 0 else 1.0
        self._dl = MiniBatchDictionaryLearning(
            n_components=k, alpha=self.alpha, max_iter=self.max_iter, batch_size=self.batch_size,
            fit_algorithm="cd", positive_code=self.positive_code, positive_dict=self.positive_dict,
            transform_algorithm=self.transform_algorithm, transform_alpha=self.alpha,
            random_state=self.random_state)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            self._dl.fit(A / self.scale_)
            codes = self._dl.transform(A / self.scale_) * self.scale_
        self.components_ = self._dl.components_.astype(np.float64)
        order = self._sort_by_variance(codes)
        codes = codes[:, order]
        self._dl.components_ = self._dl.components_[order]
        self.offset_ = np.zeros(A.shape[1])
        self._finish(A, codes)
        return codes

    def transform(self, A) -> np.ndarray:
        import warnings

        from sklearn.exceptions import ConvergenceWarning

        A = _as_2d(A)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            return self._dl.transform(A / self.scale_) * self.scale_


BASIS_CLASSES: dict[str, type[Basis]] = {
    "neuron": NeuronBasis, "pca": PCABasis, "nmf": NMFBasis, "dictionary": DictionaryBasis,
}


def make_basis(name: str, **params: Any) -> Basis:
    """A basis by name (``neuron``, ``pca``, ``nmf``, ``dictionary``) with its parameters."""
    try:
        cls = BASIS_CLASSES[name]
    except KeyError:
        raise ValueError(f"unknown basis {name!r}; choose from {', '.join(BASIS_CLASSES)}") from None
    try:
        return cls(**params)
    except TypeError as exc:
        raise ValueError(f"bad parameters for basis {name!r}: {exc}") from None
