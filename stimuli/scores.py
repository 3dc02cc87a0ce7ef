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


def score_matrix(basis, A: np.ndarray, batch_size: int = 4096) -> np.ndarray:
    """:func:`unit_scores` of a NumPy N x C matrix, without gradients (exemplar ranking)."""
    out = []
    with torch.no_grad():
        for s in range(0, len(A), batch_size):
            out.append(unit_scores(basis, torch.as_tensor(np.asarray(A[s:s + batch_size]))).double().numpy())
    return np.concatenate(out) if out else np.zeros((0, basis.n_components_))
