"""A unit's score: the one function per basis that ranks natural images (exemplars) and that feature
visualizations maximise and minimise (:mod:`stimuli.featurevis`), so the two cannot drift apart.

``unit_scores(basis, pooled)`` maps pooled activations (N x C torch tensor, post-ReLU or pre-ReLU as the
job extracts them) to the N x K codes, differentiably:

- ``neuron``: the pooled channel itself;
- ``pca``: the centred activation projected on the component;
- ``sae``: the autoencoder's TopK encoder (:meth:`stimuli.bases.SAEBasis.encode`);
- ``nmf`` and ``dictionary``: the code of the pooled activation along the atoms, from the problem
  scikit-learn's ``transform`` solves (non-negative least squares with NMF's ``alpha_W`` penalties; the
  non-negative lasso for dictionary learning), solved by a fixed number of FISTA steps from the clipped
  least-squares code, unrolled so that gradients pass through the solve. A fixed solve rather than
  scikit-learn's own: its coordinate descent stops at a tolerance and is not differentiable, and the
  near-exact factorisations of a layer (as many atoms as channels) are so ill-conditioned that two
  approximate solvers can order images differently; ranking with this function too keeps exemplars and
  visualizations on one definition.
"""

from __future__ import annotations

import numpy as np
import torch

FISTA_STEPS = 300


def _fista_nonneg(X: torch.Tensor, D: torch.Tensor, l1: float, l2: float, steps: int) -> torch.Tensor:
    """argmin_{W >= 0} 0.5 ||X - W D||^2 + l1 |W|_1 + 0.5 l2 ||W||^2, each row of X on its own."""
    G = D @ D.T
    L = max(float(torch.linalg.eigvalsh(G.double()).max()) + l2, 1e-12)
    XD = X @ D.T
    W = torch.relu(X @ torch.linalg.pinv(D))
    Y, t = W, 1.0
    for _ in range(steps):
        grad = Y @ G - XD + l2 * Y
        W_next = torch.relu(Y - (grad + l1) / L)
        t_next = (1 + (1 + 4 * t * t) ** 0.5) / 2
        Y = W_next + ((t - 1) / t_next) * (W_next - W)
        W, t = W_next, t_next
    return W


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
        return _fista_nonneg(x, t(basis.components_), l1, l2, FISTA_STEPS)
    if name == "dictionary":
        if not basis.positive_code:
            raise ValueError("the dictionary score needs positive_code=True (a non-negative code)")
        scale = float(basis.scale_)
        return _fista_nonneg(x / scale, t(basis.components_), float(basis.alpha), 0.0, FISTA_STEPS) * scale
    raise ValueError(f"no score function for basis {name!r}")


def score_matrix(basis, A: np.ndarray, batch_size: int = 4096) -> np.ndarray:
    """:func:`unit_scores` of a NumPy N x C matrix, without gradients (exemplar ranking)."""
    out = []
    with torch.no_grad():
        for s in range(0, len(A), batch_size):
            out.append(unit_scores(basis, torch.as_tensor(np.asarray(A[s:s + batch_size]))).double().numpy())
    return np.concatenate(out) if out else np.zeros((0, basis.n_components_))
