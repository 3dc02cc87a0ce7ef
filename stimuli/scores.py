"""A unit's score: the one function per basis (its :meth:`stimuli.bases.Basis.scores`) that ranks natural
images (exemplars) and that feature visualizations maximise and minimise (:mod:`stimuli.featurevis`), so
the two cannot drift apart.

``unit_scores(basis, pooled)`` maps pooled activations (N x C torch tensor, post-ReLU or pre-ReLU as the
job extracts them) to the N x K codes, differentiably:

- ``neuron``: the pooled channel itself;
- ``pca``: the centred activation projected on the component;
- ``sae``: the autoencoder's TopK encoder (:meth:`stimuli.bases.SAEBasis.encode`);
- ``nmf`` and ``dictionary``: the code of the pooled activation along the atoms, as the basis's own
  ``transform`` finds it (scikit-learn's solver for the problem: non-negative least squares with NMF's
  ``alpha_W`` penalties; the non-negative lasso for dictionary learning). Its value is scikit-learn's
  exactly; its gradient is that of the solution on the atoms the solver uses (the code solves
  ``(D_S D_S^T + l2 I) w_S = D_S x - l1`` there, which is linear in ``x``: the solution is piecewise
  linear in the data), so the function that ranks natural images is the one visualizations climb
  (:func:`stimuli.bases.solvers.solved_scores`).
"""

from __future__ import annotations

import numpy as np
import torch


def unit_scores(basis, pooled: torch.Tensor) -> torch.Tensor:
    """N x K scores of every unit of ``basis`` for pooled activations ``pooled`` (N x C)."""
    return basis.scores(pooled.float())


def score_matrix(basis, A: np.ndarray, batch_size: int = 4096, dtype=np.float64) -> np.ndarray:
    """:func:`unit_scores` of a NumPy N x C matrix, without gradients (exemplar ranking). The scores are
    computed in float32; ``dtype=np.float32`` keeps them so, at half the memory, with the same values."""
    out = []
    with torch.no_grad():
        for s in range(0, len(A), batch_size):
            out.append(unit_scores(basis, torch.as_tensor(np.asarray(A[s:s + batch_size]))).numpy().astype(dtype))
    return np.concatenate(out) if out else np.zeros((0, basis.n_components_), dtype=dtype)


class Codes:
    """Every image's score in every unit of a fitted basis (:func:`unit_scores`), as exemplar selection
    and the measures read them, without an N x K float64 matrix living for the whole job.

    Linear bases (``tags.linear_codes``: neurons, PCA) have their scores computed from the pooled
    activations ``A`` when asked for (:meth:`stimuli.bases.Basis.linear_scores`), in float64, a block of
    rows or one unit's column at a time (one matrix-vector product).
    The other bases' scores come from a solver or an encoder, too dear to repeat: they are kept once,
    in float32, the precision :func:`score_matrix` computes them in (so the values are the same).
    ``mean``, ``std``, ``min`` and ``max`` (per unit, float64) are taken over row blocks
    (:func:`stimuli.bases.block_rows`) when the codes are made. ``A`` is referenced, not copied.
    """

    def __init__(self, basis, A: np.ndarray) -> None:
        from .bases import block_rows

        self.basis, self.A = basis, A
        self.shape = (len(A), int(basis.n_components_))
        self.batch_size = block_rows(max(A.shape[1], self.shape[1]))
        self._stored = None if basis.tags.linear_codes else score_matrix(basis, A, dtype=np.float32)
        self._summarise()

    def _blocks(self):
        from .bases import row_blocks

        return row_blocks(self.shape[0], self.batch_size)

    def block(self, start: int, stop: int) -> np.ndarray:
        """Rows ``start:stop``, every unit, as a new float64 array."""
        if self._stored is not None:
            return self._stored[start:stop].astype(np.float64)
        return self.basis.linear_scores(self.A[start:stop])

    def column(self, unit: int) -> np.ndarray:
        """One unit's score of every image (N, float64)."""
        if self._stored is not None:
            return self._stored[:, unit].astype(np.float64)
        out = np.empty(self.shape[0])
        for s, e in self._blocks():
            out[s:e] = self.basis.linear_scores(self.A[s:e], [unit])[:, 0]
        return out

    def rows(self, indices) -> np.ndarray:
        """The scores of the images ``indices``, every unit (len(indices) x K, float64)."""
        indices = np.asarray(indices, dtype=np.int64)
        if self._stored is not None:
            return self._stored[indices].astype(np.float64)
        out = np.empty((len(indices), self.shape[1]))
        for s in range(0, len(indices), self.batch_size):
            out[s:s + self.batch_size] = self.basis.linear_scores(self.A[indices[s:s + self.batch_size]])
        return out

    def _summarise(self) -> None:
        n, k = self.shape
        if self._stored is None:
            from .bases import column_mean

            # linear scores: the mean score is the score of the mean activation
            self.mean = self.basis.linear_scores(column_mean(self.A)[None, :])[0]
        else:
            self.mean = np.zeros(k)
            for s, e in self._blocks():
                self.mean += self.block(s, e).sum(axis=0)
            self.mean /= max(n, 1)
        sq, lo, hi = np.zeros(k), np.full(k, np.inf), np.full(k, -np.inf)
        for s, e in self._blocks():
            _fold(self.block(s, e), self.mean, sq, lo, hi)
        self.std, self.min, self.max = np.sqrt(sq / max(n, 1)), lo, hi


def _fold(B: np.ndarray, mean: np.ndarray, sq: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> None:
    """One row block's squared deviations, minima and maxima, folded in place (the block is freed on
    return, before the next one is made)."""
    np.minimum(lo, B.min(axis=0), out=lo)
    np.maximum(hi, B.max(axis=0), out=hi)
    B -= mean
    sq += (B * B).sum(axis=0)
