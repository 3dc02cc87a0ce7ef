"""A unit's score: the one function per basis that ranks natural images (exemplars) and that feature
visualizations maximise and minimise (:mod:`stimuli.featurevis`), so the two cannot drift apart.

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
  linear in the data), so the function that ranks natural images is the one visualizations climb.
"""

from __future__ import annotations

import numpy as np
import torch


def _on_active_set(x: torch.Tensor, D: torch.Tensor, active: torch.Tensor, l1: float, l2: float,
                   chunk: int = 256) -> torch.Tensor:
    """Row by row, the code on the atoms ``active`` (N x K bool) from the optimality conditions there; a
    tiny ridge keeps near-collinear atoms (a layer with as many atoms as channels) solvable."""
    G = D @ D.T
    K = G.shape[0]
    eye = torch.eye(K, dtype=x.dtype, device=x.device)
    ridge = 1e-6 * float(G.diagonal().mean()) + l2
    out = []
    for s in range(0, x.shape[0], chunk):
        m = active[s:s + chunk].to(x.dtype)
        lhs = m[:, :, None] * m[:, None, :] * (G + ridge * eye) + (1 - m)[:, :, None] * eye
        rhs = m * (x[s:s + chunk] @ D.T - l1)
        out.append(torch.linalg.solve(lhs, rhs))
    return torch.cat(out) if out else x.new_zeros((0, K))


def _solved(basis, x: torch.Tensor, D: torch.Tensor, l1: float, l2: float, scale: float = 1.0) -> torch.Tensor:
    """scikit-learn's code (the value) with the active-set gradient."""
    value = torch.as_tensor(basis.transform(x.detach().double().cpu().numpy()), dtype=x.dtype, device=x.device)
    if not x.requires_grad:
        return value
    linear = _on_active_set(x / scale, D, value > 0, l1, l2) * scale
    return value + (linear - linear.detach())


def unit_scores(basis, pooled: torch.Tensor) -> torch.Tensor:
    """N x K scores of every unit of ``basis`` for pooled activations ``pooled`` (N x C)."""
    x = pooled.float()

    def t(a):
        return torch.as_tensor(np.asarray(a), dtype=torch.float32, device=x.device)

    name = basis.name
    if name == "neuron":
        return x
    if name == "pca":
        return (x - t(basis.offset_)) @ t(basis.components_).T
    if name == "sae":
        return basis.encode(x)
    if name == "nmf":
        alpha, ratio = float(basis.alpha_W), float(basis.l1_ratio)
        # scikit-learn scales W's penalties by the number of features
        l1, l2 = x.shape[1] * alpha * ratio, x.shape[1] * alpha * (1.0 - ratio)
        return _solved(basis, x, t(basis.components_), l1, l2)
    if name == "dictionary":
        if not basis.positive_code:
            raise ValueError("the dictionary score needs positive_code=True (a non-negative code)")
        return _solved(basis, x, t(basis.components_), float(basis.alpha), 0.0, scale=float(basis.scale_))
    raise ValueError(f"no score function for basis {name!r}")


def score_matrix(basis, A: np.ndarray, batch_size: int = 4096, dtype=np.float64) -> np.ndarray:
    """:func:`unit_scores` of a NumPy N x C matrix, without gradients (exemplar ranking). The scores are
    computed in float32; ``dtype=np.float32`` keeps them so, at half the memory, with the same values."""
    out = []
    with torch.no_grad():
        for s in range(0, len(A), batch_size):
            out.append(unit_scores(basis, torch.as_tensor(np.asarray(A[s:s + batch_size]))).numpy().astype(dtype))
    return np.concatenate(out) if out else np.zeros((0, basis.n_components_), dtype=dtype)


LINEAR = ("neuron", "pca")


def _linear_scores(basis, X: np.ndarray, units=slice(None)) -> np.ndarray:
    """:func:`unit_scores` of a linear basis (the channel; the centred projection) as a new float64 array."""
    if basis.name == "neuron":
        return np.array(X[:, units], dtype=np.float64)
    W = np.asarray(basis.components_, dtype=np.float64)[units]
    X = np.array(X, dtype=np.float64)
    X -= basis.offset_
    return X @ W.T


class Codes:
    """Every image's score in every unit of a fitted basis (:func:`unit_scores`), as exemplar selection
    and the measures read them, without an N x K float64 matrix living for the whole job.

    Neurons and PCA are linear, so their scores are computed from the pooled activations ``A`` when
    asked for, in float64, a block of rows or one unit's column at a time (one matrix-vector product).
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
        self._stored = None if basis.name in LINEAR else score_matrix(basis, A, dtype=np.float32)
        self._summarise()

    def _blocks(self):
        from .bases import row_blocks

        return row_blocks(self.shape[0], self.batch_size)

    def block(self, start: int, stop: int) -> np.ndarray:
        """Rows ``start:stop``, every unit, as a new float64 array."""
        if self._stored is not None:
            return self._stored[start:stop].astype(np.float64)
        return _linear_scores(self.basis, self.A[start:stop])

    def column(self, unit: int) -> np.ndarray:
        """One unit's score of every image (N, float64)."""
        if self._stored is not None:
            return self._stored[:, unit].astype(np.float64)
        if self.basis.name == "neuron":
            return self.A[:, unit].astype(np.float64)
        out = np.empty(self.shape[0])
        for s, e in self._blocks():
            out[s:e] = _linear_scores(self.basis, self.A[s:e], [unit])[:, 0]
        return out

    def rows(self, indices) -> np.ndarray:
        """The scores of the images ``indices``, every unit (len(indices) x K, float64)."""
        indices = np.asarray(indices, dtype=np.int64)
        if self._stored is not None:
            return self._stored[indices].astype(np.float64)
        out = np.empty((len(indices), self.shape[1]))
        for s in range(0, len(indices), self.batch_size):
            out[s:s + self.batch_size] = _linear_scores(self.basis, self.A[indices[s:s + self.batch_size]])
        return out

    def _summarise(self) -> None:
        n, k = self.shape
        if self._stored is None:
            from .bases import column_mean

            # linear scores: the mean score is the score of the mean activation
            self.mean = _linear_scores(self.basis, column_mean(self.A)[None, :])[0]
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
