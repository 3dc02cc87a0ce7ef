"""Exact codes of sparse bases, shared by the bases that use them (NMF, the non-negative dictionary).

* :func:`sparse_codes`: ``argmin_{H ≥ 0} 0.5·||X − H W||² + l1·ΣH`` row by row, batched, by block
  principal pivoting; what completeness projects every spatial position with.
* :func:`solved_scores`: scikit-learn's own code of a pooled activation (the value) with the gradient of
  the solution on its active set (the code is piecewise linear in the data), so the function that ranks
  natural images is the one feature visualizations climb (:mod:`stimuli.scores`).
"""

from __future__ import annotations

import torch


def sparse_codes(X: torch.Tensor, W: torch.Tensor, l1: float = 0.0, tol: float = 1e-10,
                 max_iter: int | None = None, chunk: int = 8192) -> torch.Tensor:
    """The exact non-negative codes ``argmin_{H ≥ 0} 0.5·||X − H W||² + l1·ΣH`` (row by row), on X's
    device: non-negative least squares for ``l1 = 0`` (NMF), the positive lasso otherwise
    (``DictionaryBasis`` with ``positive_code``).

    Solved by block principal pivoting (Kim & Park, 2011, "Fast nonnegative matrix factorization: an
    active-set-like method and comparisons", SIAM J. Sci. Comput. 33(6)): each row's passive set is
    updated by exchanging every variable that breaks the KKT conditions (with the paper's backup rule,
    which makes it terminate), and each passive system is solved directly, in float64. The result is
    the exact solution up to rounding, whatever the dictionary's condition number; first-order
    solvers (coordinate descent, projected gradient) need iterations in proportion to it, and the
    demo's conv2 NMF has a Gram matrix with condition number above 10⁸. A row stops when no code is
    below ``−tol·s/max diag(WWᵀ)`` and no gradient entry of a zero code below ``−tol·s``, ``s`` the
    row's largest ``|W x − l1|``. scipy's ``nnls`` and scikit-learn's encoders solve the same problems
    one row at a time, which takes seconds for the ~10⁵ spatial positions of even the demo layer; here
    all rows share one batched solve per iteration.
    """
    if not l1 >= 0:
        raise ValueError(f"l1 must be a non-negative number, not {l1!r}")
    Wd = W.to(device=X.device, dtype=torch.float64)
    G = Wd @ Wd.T
    K = G.shape[0]
    max_iter = 10 * K + 10 if max_iter is None else int(max_iter)
    out = torch.empty(X.shape[0], K, dtype=X.dtype, device=X.device)
    for s in range(0, X.shape[0], chunk):
        B = X[s:s + chunk].to(torch.float64) @ Wd.T - l1
        out[s:s + chunk] = _block_pivoting(G, B, tol, max_iter).to(X.dtype)
    return out


def _passive_solve(G: torch.Tensor, F: torch.Tensor, B: torch.Tensor) -> torch.Tensor:
    """Per row ``r``: ``H_F = G_FF⁻¹ B_F`` on its passive set ``F[r]``, 0 elsewhere. Rows are solved
    in groups of equal passive-set size ``k`` as k x k systems: codes are sparse, so this is far less
    work than K x K systems with the inactive part masked out."""
    H = torch.zeros_like(B)
    sizes = F.sum(1)
    # each row's passive indices first, in index order
    order = torch.argsort((~F).to(torch.int8), dim=1, stable=True)
    for k in torch.unique(sizes).tolist():
        if k == 0:
            continue
        rows = torch.nonzero(sizes == k).squeeze(1)
        P = order[rows, :k]
        M = G[P[:, :, None], P[:, None, :]]
        rhs = B[rows[:, None], P]
        h, info = torch.linalg.solve_ex(M, rhs)
        bad = info != 0
        if bool(bad.any()):
            # a singular passive block (more atoms than channels): the minimum-norm solution
            h[bad] = (torch.linalg.pinv(M[bad]) @ rhs[bad].unsqueeze(-1)).squeeze(-1)
        H[rows[:, None], P] = h
    return H


def _block_pivoting(G: torch.Tensor, B: torch.Tensor, tol: float, max_iter: int) -> torch.Tensor:
    n, K = B.shape
    dev = B.device
    scale = B.abs().amax(1).clamp_min(torch.finfo(B.dtype).tiny)
    tol_y = tol * scale
    tol_h = tol_y / float(torch.diagonal(G).max().clamp_min(torch.finfo(G.dtype).tiny))
    # start from the unconstrained solution's positive codes: most rows then need one or two exchanges
    F = torch.linalg.lstsq(G, B.T).solution.T > 0
    H = torch.zeros_like(B)
    todo = torch.arange(n, device=dev)
    alpha = torch.full((n,), 3, dtype=torch.long, device=dev)
    beta = torch.full((n,), K + 1, dtype=torch.long, device=dev)
    rows = torch.arange(K, device=dev)
    for _ in range(max_iter):
        Fi, Bi = F[todo], B[todo]
        Hi = _passive_solve(G, Fi, Bi)
        Yi = torch.where(Fi, torch.zeros((), dtype=B.dtype, device=dev), Hi @ G - Bi)
        wrong = (Fi & (Hi < -tol_h[todo, None])) | (~Fi & (Yi < -tol_y[todo, None]))
        n_wrong = wrong.sum(1)
        ok = n_wrong == 0
        H[todo[ok]] = Hi[ok].clamp_min(0)
        keep = ~ok
        todo, wrong, n_wrong = todo[keep], wrong[keep], n_wrong[keep]
        if len(todo) == 0:
            return H
        # Kim & Park's rule: exchange every infeasible variable while their number keeps falling (or up
        # to 3 times when it does not); then only the last one (Murty's rule), which cannot cycle
        a, b = alpha[todo], beta[todo]
        fewer = n_wrong < b
        full = fewer | (a >= 1)
        alpha[todo] = torch.where(fewer, torch.full_like(a, 3), torch.where(full, a - 1, a))
        beta[todo] = torch.where(fewer, n_wrong, b)
        last = (wrong * rows).argmax(1)
        single = rows[None, :] == last[:, None]
        F[todo] ^= torch.where(full[:, None], wrong, single)
    raise RuntimeError(f"sparse_codes: {len(todo)} of {n} rows did not reach the KKT conditions in {max_iter} "
                       "exchanges")


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


def solved_scores(basis, x: torch.Tensor, D: torch.Tensor, l1: float, l2: float, scale: float = 1.0) -> torch.Tensor:
    """scikit-learn's code (the value) with the active-set gradient."""
    value = torch.as_tensor(basis.transform(x.detach().double().cpu().numpy()), dtype=x.dtype, device=x.device)
    if not x.requires_grad:
        return value
    linear = _on_active_set(x / scale, D, value > 0, l1, l2) * scale
    return value + (linear - linear.detach())


def active_set_readout(W, code, unit_index: int):
    """``∂h_j/∂x`` of a sparse code ``code`` (K,) of atoms ``W`` (K x C, NumPy): on the atoms the code
    uses, the solution is linear in the data (the least-squares fit on those atoms); a unit the code
    does not use gets the pseudo-inverse's row, the direction that would make it fire."""
    import numpy as np

    j = int(unit_index)
    active = np.flatnonzero(np.abs(code) > 0)
    if j in active:
        Ws = W[active]
        J = np.linalg.lstsq(Ws @ Ws.T, Ws, rcond=None)[0]
        return J[int(np.searchsorted(active, j))]
    return np.linalg.pinv(W).T[j]
