"""Sparse dictionary learning (scikit-learn's MiniBatchDictionaryLearning)."""

from __future__ import annotations

import numpy as np

from .base import Basis, BasisTags, as_float64
from .solvers import active_set_readout, solved_scores, sparse_codes

DICTIONARY_DEFAULTS = {"alpha": 0.1, "max_iter": 50, "batch_size": 256, "positive_code": True,
                       "positive_dict": False, "transform_algorithm": "lasso_cd"}


class DictionaryBasis(Basis):
    """Sparse dictionary learning (scikit-learn's MiniBatchDictionaryLearning).

    The data are divided by ``scale_`` (the mean row norm) before fitting, so ``alpha`` — the weight
    of the L1 penalty on the codes — means the same thing for every layer. ``positive_code`` keeps
    codes non-negative, which makes the most/least activating images of an atom meaningful.
    """

    name = "dictionary"
    tags = BasisTags(sparse_codes=True, config_section="dictionary", config_defaults=DICTIONARY_DEFAULTS)

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

        A = as_float64(A)
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
        order = self._sort_by_variance(A, codes)
        codes = codes[:, order]
        self._dl.components_ = self._dl.components_[order]
        self.offset_ = np.zeros(A.shape[1])
        self._finish(A, codes)
        return codes

    def transform(self, A) -> np.ndarray:
        import warnings

        from sklearn.exceptions import ConvergenceWarning

        A = as_float64(A)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            return self._dl.transform(A / self.scale_) * self.scale_

    def scores(self, x):
        import torch

        if not self.positive_code:
            raise ValueError("the dictionary score needs positive_code=True (a non-negative code)")
        D = torch.as_tensor(np.asarray(self.components_), dtype=torch.float32, device=x.device)
        return solved_scores(self, x, D, float(self.alpha), 0.0, scale=float(self.scale_))

    def exact_codes(self, X):
        import torch

        if not (self.transform_algorithm == "lasso_cd" and self.positive_code):
            return super().exact_codes(X)
        # scikit-learn's lasso_cd scales the penalty by the number of features, which leaves
        # 0.5·||x − h D||² + alpha·||h||₁ per row: the same problem
        W64 = torch.as_tensor(self.components_, dtype=torch.float64, device=X.device)
        return sparse_codes(X / self.scale_, W64, l1=self.alpha) * self.scale_

    def readout(self, pooled: np.ndarray, unit_index: int) -> np.ndarray:
        W = np.asarray(self.components_, dtype=np.float64)
        return active_set_readout(W, self.transform(pooled[None])[0], unit_index)
