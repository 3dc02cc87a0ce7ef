"""Principal components of the pooled activations."""

from __future__ import annotations

import numpy as np

from .base import Basis, BasisTags, as_float64, centred_blocks, checked_activations, column_mean


class PCABasis(Basis):
    """Principal components of the centred activations, in explained-variance order."""

    name = "pca"
    tags = BasisTags(linear_codes=True)

    def __init__(self, n_components: int | None = None, random_state: int | None = 0) -> None:
        self.n_components = n_components
        self.random_state = random_state

    def fit(self, A, y=None) -> PCABasis:
        """Components from the eigendecomposition of the C x C covariance, summed over row blocks in
        float64 (no N x C copy of the activations); signs as scikit-learn's PCA sets them
        (``svd_flip``: each component's largest coordinate positive). Layers wider than 4096 channels
        keep scikit-learn's randomized PCA on a float64 copy: a full C x C eigendecomposition costs C³."""
        from scipy.linalg import eigh
        from sklearn.utils.extmath import svd_flip

        A = checked_activations(A)
        n, c = A.shape
        k = min(A.shape) if self.n_components is None else self.n_components
        if k > min(A.shape):
            raise ValueError(f"PCA can have at most {min(A.shape)} components here, not {k}")
        if c > 4096:
            return self._fit_randomized(A.astype(np.float64, copy=False), k)
        mean = column_mean(A)
        cov = np.zeros((c, c))
        for _s, _e, X in centred_blocks(A, mean):
            cov += X.T @ X
        cov /= n
        values, vectors = eigh(cov, subset_by_index=[c - k, c - 1])
        components = vectors[:, ::-1].T
        _, components = svd_flip(None, components, u_based_decision=False)
        self.components_ = np.ascontiguousarray(components)
        self.offset_ = mean
        self.code_mean_ = np.zeros(k)
        self.total_variance_ = float(np.trace(cov))
        self.explained_variance_ = np.clip(values[::-1], 0.0, None)
        self.explained_variance_ratio_ = self.explained_variance_ / self.total_variance_ \
            if self.total_variance_ > 0 else np.zeros(k)
        return self

    def _fit_randomized(self, A: np.ndarray, k: int) -> PCABasis:
        from sklearn.decomposition import PCA

        pca = PCA(n_components=k, svd_solver="randomized", random_state=self.random_state)
        codes = pca.fit_transform(A)
        self.components_ = pca.components_.astype(np.float64)
        self.offset_ = pca.mean_.astype(np.float64)
        self._finish(A, codes)
        # sklearn's own ratio, identical up to rounding, keeps the textbook definition exact
        self.explained_variance_ = pca.explained_variance_ * (A.shape[0] - 1) / A.shape[0]
        self.explained_variance_ratio_ = self.explained_variance_ / self.total_variance_
        return self

    def fit_transform(self, A, y=None) -> np.ndarray:
        return self.fit(A).transform(A)

    def transform(self, A) -> np.ndarray:
        return (as_float64(A) - self.offset_) @ self.components_.T

    def scores(self, x):
        import torch

        offset = torch.as_tensor(np.asarray(self.offset_), dtype=torch.float32, device=x.device)
        W = torch.as_tensor(np.asarray(self.components_), dtype=torch.float32, device=x.device)
        return (x - offset) @ W.T

    def exact_codes(self, X):
        return self.scores(X)

    def readout(self, pooled: np.ndarray, unit_index: int) -> np.ndarray:
        return np.asarray(self.components_, dtype=np.float64)[int(unit_index)].copy()
