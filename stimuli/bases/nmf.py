"""Non-negative matrix factorisation (scikit-learn's NMF), as CRAFT's concepts."""

from __future__ import annotations

import numpy as np

from .base import Basis, BasisTags, as_float64
from .solvers import active_set_readout, solved_scores, sparse_codes

NMF_DEFAULTS = {"init": "nndsvda", "max_iter": 400, "tol": 1e-4, "alpha_W": 0.0, "alpha_H": "same",
                "l1_ratio": 0.0}


class NMFBasis(Basis):
    """Non-negative matrix factorisation of non-negative (post-ReLU) activations, as in CRAFT.

    ``A ≈ codes @ components_`` with both factors non-negative; sparsity through ``alpha_W`` /
    ``alpha_H`` and ``l1_ratio`` (scikit-learn's regularisation parameters).
    """

    name = "nmf"
    tags = BasisTags(sparse_codes=True, non_negative_input=True, config_section="nmf", config_defaults=NMF_DEFAULTS)

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
        A = as_float64(A)
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
        order = self._sort_by_variance(A, codes)
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

    def scores(self, x):
        import torch

        alpha, ratio = float(self.alpha_W), float(self.l1_ratio)
        # scikit-learn scales W's penalties by the number of features
        l1, l2 = x.shape[1] * alpha * ratio, x.shape[1] * alpha * (1.0 - ratio)
        D = torch.as_tensor(np.asarray(self.components_), dtype=torch.float32, device=x.device)
        return solved_scores(self, x, D, l1, l2)

    def exact_codes(self, X):
        import torch

        if self.alpha_W != 0:
            return super().exact_codes(X)
        # the exact codes of an ill-conditioned dictionary move with W's rounding: solve with float64 atoms
        return sparse_codes(X, torch.as_tensor(self.components_, dtype=torch.float64, device=X.device))

    def readout(self, pooled: np.ndarray, unit_index: int) -> np.ndarray:
        W = np.asarray(self.components_, dtype=np.float64)
        return active_set_readout(W, self.transform(pooled[None])[0], unit_index)
