"""Kenward–Roger's small-sample inference for the fixed effects of a linear mixed model, as R's
pbkrtest computes it (Kenward & Roger 1997, Biometrics 53: 983–997; Halekoh & Højsgaard 2014,
"A Kenward-Roger Approximation and Parametric Bootstrap Methods for Tests in Linear Mixed
Models — The R Package pbkrtest", J. Stat. Softw. 59(9)); lmerTest's ``ddf = "Kenward-Roger"``
and emmeans' ``lmer.df = "kenward-roger"`` call the same code.

The marginal covariance is written as a linear combination of known matrices,
Σ = Σ_r γ_r G_r: for each random term, one G per entry (i ≤ j) of its covariance matrix
(Z_i Z_j' + Z_j Z_i', or Z_i Z_i' on the diagonal) and the identity for the residual variance,
as pbkrtest's ``get_SigmaG``. With Φ = (X'Σ⁻¹X)⁻¹, P_r = −X'Σ⁻¹G_rΣ⁻¹X,
Q_rs = X'Σ⁻¹G_rΣ⁻¹G_sΣ⁻¹X and W = 2 I_E⁻¹ (I_E the expected REML information of γ), the
adjusted covariance of β̂ is Φ_A = Φ + 2Φ{Σ_rs W_rs (Q_rs − P_rΦP_s)}Φ (R_rs = 0 for a linear Σ)
and the denominator df of a hypothesis Lβ = 0 follow pbkrtest's ``.KR_adjust``.

Nothing in the Python ecosystem computes this for our fits (statsmodels has no Kenward–Roger;
mixedlm's is a test-time reference only), so it is written here. Σ⁻¹ is formed densely
(n × n): above ``MAX_ROWS`` observations the function refuses, and Satterthwaite's df — which
need nothing n × n — are the method to use.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

__all__ = ["MAX_ROWS", "KenwardRoger", "kenward_roger"]

# Σ⁻¹ and one Σ⁻¹G_r per variance parameter are n × n: 2,500 rows is 50 MB each
MAX_ROWS = 2500


def _sigma_g(model, result):
    """The known matrices G_r (sparse n × n) and Σ at the fit's estimates."""
    design = model.design
    n = design.n
    Gs = []
    for blk in design.blocks:
        cols = []
        for j in range(blk.p):
            cols.append(sp.csr_matrix((blk.X[:, j], (np.arange(n), blk.codes)), shape=(n, blk.n_levels)))
        for j in range(blk.p):
            for i in range(j, blk.p):
                M = cols[i] @ cols[j].T
                Gs.append((M + M.T).tocsr() if i != j else M.tocsr())
    Gs.append(sp.identity(n, format="csr"))
    sigma2 = float(result.sigma) ** 2
    Z = model.rs.Z
    Lt = model.rs.Lambda_t(np.asarray(result.theta, float))
    ZL = np.asarray((Z @ Lt.T).todense()) if Z.shape[1] else np.zeros((n, 0))
    Sigma = sigma2 * (ZL @ ZL.T + np.eye(n))
    return Gs, Sigma


class KenwardRoger:
    """The pieces pbkrtest's ``vcovAdj`` computes, once per fit: ``Phi`` (the unadjusted
    covariance of β̂), ``PhiA`` (the adjusted one), ``P`` and ``W``; ``df(L)`` gives the
    denominator df of the hypothesis Lβ = 0 and ``F_scaling``."""

    def __init__(self, model, result):
        if result.sigma is None:
            raise ValueError("Kenward–Roger df need a linear mixed model (a residual σ)")
        n = model.design.n
        if n > MAX_ROWS:
            raise ValueError(
                f"Kenward–Roger df form n × n matrices and are offered up to {MAX_ROWS:,} "
                f"observations ({n:,} here); use --ddf satterthwaite"
            )
        X = np.asarray(model.X, float)
        Gs, Sigma = _sigma_g(model, result)
        Sinv = np.linalg.inv(Sigma)
        Sinv = (Sinv + Sinv.T) / 2
        SX = Sinv @ X
        Phi = np.linalg.inv(X.T @ SX)
        Phi = (Phi + Phi.T) / 2
        GS = [G @ SX for G in Gs]  # G_r Σ⁻¹X, n × p
        M = [np.asarray((G.T @ Sinv).T) for G in Gs]  # Σ⁻¹G_r (G symmetric), n × n
        P = [-SX.T @ g for g in GS]
        m = len(Gs)
        Q = {}
        IE2 = np.empty((m, m))
        for r in range(m):
            SGr = Sinv @ GS[r]
            for s in range(r, m):
                Q[r, s] = GS[s].T @ SGr  # X'Σ⁻¹G_sΣ⁻¹G_rΣ⁻¹X
                Q[s, r] = Q[r, s].T
                IE2[r, s] = IE2[s, r] = (
                    np.sum(M[r] * M[s].T) - 2 * np.sum(Phi * Q[r, s]) + np.trace(Phi @ P[r] @ Phi @ P[s])
                )
        eig = np.linalg.eigvalsh(IE2)
        W = 2 * (np.linalg.inv(IE2) if np.min(np.abs(eig)) > 1e-10 else np.linalg.pinv(IE2))
        U = np.zeros_like(Phi)
        for r in range(m):
            for s in range(m):
                U += W[r, s] * (Q[r, s] - P[r] @ Phi @ P[s])
        self.Phi = Phi
        self.PhiA = Phi + 2 * Phi @ ((U + U.T) / 2) @ Phi
        self.P, self.W = P, W

    def df(self, L) -> tuple[float, float]:
        """(denominator df, F scaling) of the hypothesis Lβ = 0, pbkrtest's ``.KR_adjust``."""
        L = np.atleast_2d(np.asarray(L, float))
        Phi, P, W = self.Phi, self.P, self.W
        Theta = L.T @ np.linalg.solve(L @ Phi @ L.T, L)
        TP = Theta @ Phi
        A1 = A2 = 0.0
        u = [TP @ Pr @ Phi for Pr in P]
        m = len(P)
        for i in range(m):
            for j in range(i, m):
                e = 1.0 if i == j else 2.0
                A1 += e * W[i, j] * np.trace(u[i]) * np.trace(u[j])
                A2 += e * W[i, j] * np.sum(u[i] * u[j].T)
        q = np.linalg.matrix_rank(L)
        B = (A1 + 6 * A2) / (2 * q)
        g = ((q + 1) * A1 - (q + 4) * A2) / ((q + 2) * A2)
        c1 = g / (3 * q + 2 * (1 - g))
        c2 = (q - g) / (3 * q + 2 * (1 - g))
        c3 = (q + 2 - g) / (3 * q + 2 * (1 - g))
        V0 = 1 + c1 * B
        V0 = 0.0 if abs(V0) < 1e-10 else V0
        V1, V2 = 1 - c2 * B, 1 - c3 * B
        rho = (1 / q) * ((1 - A2 / q) / V1 if V1 != 0 else 0.0) ** 2 * V0 / V2
        df2 = 4 + (q + 2) / (q * rho - 1)
        scaling = np.nan if abs(df2 - 4) < 1e-2 else df2 * (1 - A2 / q) / (df2 - 2)
        return float(df2), float(scaling)

    def contrast_df(self, L) -> np.ndarray:
        """The df of each row of ``L`` as a one-degree-of-freedom t test."""
        return np.array([self.df(row[None, :])[0] for row in np.atleast_2d(np.asarray(L, float))])


def kenward_roger(model, result) -> KenwardRoger:
    """The fit's ``KenwardRoger`` pieces, computed once and kept on the result."""
    kr = getattr(result, "_kenward_roger", None)
    if kr is None:
        kr = KenwardRoger(model, result)
        result._kenward_roger = kr
    return kr
