"""Neurons: the layer's own channels as units."""

from __future__ import annotations

import numpy as np

from .base import Basis, BasisTags, checked_activations, column_mean, column_variance


class NeuronBasis(Basis):
    """The identity: each channel is a unit and its code is its own activation."""

    name = "neuron"
    tags = BasisTags(linear_codes=True, channel_codes=True)

    def __init__(self, n_components: int | None = None, random_state: int | None = None) -> None:
        self.n_components = n_components
        self.random_state = random_state

    def fit(self, A, y=None) -> NeuronBasis:
        """The channels' means and variances, summed over row blocks: no copy of ``A``."""
        A = checked_activations(A)
        c = A.shape[1]
        if self.n_components not in (None, c):
            raise ValueError(f"the neuron basis has one unit per channel ({c}), not {self.n_components}")
        mean = column_mean(A)
        var = column_variance(A, mean)
        self.components_ = np.eye(c)
        self.offset_ = np.zeros(c)
        self.code_mean_ = mean
        self.total_variance_ = float(var.sum())
        # a channel's least-squares share (module docstring) is its variance over the total
        self.explained_variance_ratio_ = var / self.total_variance_ if self.total_variance_ > 0 else np.zeros(c)
        self.explained_variance_ = self.explained_variance_ratio_ * self.total_variance_
        return self

    def fit_transform(self, A, y=None) -> np.ndarray:
        return self.fit(A).transform(A)

    def transform(self, A) -> np.ndarray:
        return checked_activations(A).astype(np.float64, copy=True)

    def scores(self, x):
        return x

    def linear_scores(self, X: np.ndarray, units=slice(None)) -> np.ndarray:
        return np.array(X[:, units], dtype=np.float64)

    def exact_codes(self, X):
        return X

    def readout(self, pooled: np.ndarray, unit_index: int) -> np.ndarray:
        return np.asarray(self.components_, dtype=np.float64)[int(unit_index)].copy()
