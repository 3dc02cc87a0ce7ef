"""Completeness codes are the exact non-negative least-squares / positive lasso solutions, checked
against scipy's active-set NNLS on an ill-conditioned dictionary."""

import numpy as np
import pytest
import torch
from scipy.optimize import nnls

from stimuli.bases.solvers import sparse_codes
from stimuli.measures.completeness import _Projector


def _ill_conditioned(K=12, C=20, seed=0):
    """Non-negative atoms, nearly collinear: cond(W Wᵀ) about 10⁸, like the demo's conv2 NMF."""
    rng = np.random.default_rng(seed)
    base = rng.random(C)
    W = base + np.logspace(0, -4, K)[:, None] * rng.random((K, C))
    X = rng.random((300, K)) ** 3 @ W + 0.05 * rng.random((300, C))
    return W, X


def _exact_positive_lasso(W, X, l1):
    """argmin_{h ≥ 0} 0.5 hᵀGh − (Wx − l1)ᵀh as an NNLS: with G = L Lᵀ it is ||Lᵀh − L⁻¹(Wx − l1)||²."""
    L = np.linalg.cholesky(W @ W.T)
    rhs = np.linalg.solve(L, (X @ W.T - l1).T).T
    return np.stack([nnls(L.T, r, maxiter=100 * len(r))[0] for r in rhs])


def test_codes_match_scipy_nnls_on_an_ill_conditioned_dictionary():
    W, X = _ill_conditioned()
    assert np.linalg.cond(W @ W.T) > 1e7
    exact = np.stack([nnls(W.T, x, maxiter=100 * W.shape[0])[0] for x in X])
    assert (exact == 0).any() and (exact > 0).sum(1).max() > 1  # active constraints and mixed codes
    H = sparse_codes(torch.as_tensor(X), torch.as_tensor(W), chunk=64).numpy()
    assert np.linalg.norm(H - exact) / np.linalg.norm(exact) < 1e-4
    assert (H >= 0).all()
    # what any exact solution satisfies (KKT): no descent direction is left
    grad = (H @ W - X) @ W.T
    assert grad.min() > -1e-6 * np.abs(X @ W.T).max()
    assert np.abs(grad[H > 1e-9]).max() < 1e-6 * np.abs(X @ W.T).max()


def test_positive_lasso_codes_match_the_exact_solution():
    W, X = _ill_conditioned(seed=1)
    l1 = 0.05 * np.abs(X @ W.T).mean()
    exact = _exact_positive_lasso(W, X, l1)
    H = sparse_codes(torch.as_tensor(X, dtype=torch.float32), torch.as_tensor(W), l1=l1).double().numpy()
    assert np.linalg.norm(H - exact) / np.linalg.norm(exact) < 1e-4
    with pytest.raises(ValueError, match="l1"):
        sparse_codes(torch.as_tensor(X), torch.as_tensor(W), l1=-1.0)


def test_more_atoms_than_channels_still_gives_a_minimiser():
    rng = np.random.default_rng(2)
    W = rng.random((10, 6))
    X = rng.random((50, 6))
    H = sparse_codes(torch.as_tensor(X), torch.as_tensor(W)).numpy()
    exact = np.stack([nnls(W.T, x)[0] for x in X])
    # the codes need not be unique, the fit is
    np.testing.assert_allclose(((H @ W - X) ** 2).sum(1), ((exact @ W - X) ** 2).sum(1), rtol=1e-6, atol=1e-10)


def test_the_projector_uses_exact_codes_for_nmf(demo_activations):
    from stimuli.bases import NMFBasis

    A = demo_activations.values["conv2"]
    basis = NMFBasis().fit(A)
    codes = _Projector(basis, torch.device("cpu")).codes(torch.as_tensor(A[:100], dtype=torch.float32))
    exact = np.stack([nnls(basis.components_.T, a.astype(np.float64))[0] for a in A[:100].astype(np.float32)])
    assert np.linalg.norm(codes.double().numpy() - exact) / np.linalg.norm(exact) < 1e-4
