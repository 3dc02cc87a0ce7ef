"""Linear mixed models by (RE)ML, with lme4's profiled criterion (Bates et al. 2015, §3).

For a given θ: L L' = Λ'Z'ZΛ + I, c_u = L⁻¹Λ'Z'y, R_ZX = L⁻¹Λ'Z'X,
R_X R_X' = X'X − R_ZX'R_ZX, c_β = R_X⁻¹(X'y − R_ZX'c_u), β̂ = R_X'⁻¹c_β and the penalised
residual sum of squares r² = y'y − c_u'c_u − c_β'c_β. Then
ML:   −2ℓ(θ) = log|L|² + n (1 + log(2π r²/n))
REML: −2ℓ_R(θ) = log|L|² + log|R_X|² + (n−p)(1 + log(2π r²/(n−p))).
Only θ is optimised; everything else is closed form. On the dense path (small q) the
cross-products are formed once, so each evaluation costs one dense q × q Cholesky and never
touches the n rows; on the sparse path (many random effects) each evaluation assembles and
factorizes Λ'Z'ZΛ + I in the blocked sparse form of analysis/_blocked.py.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import scipy.optimize as opt

from ._mixed import (
    MixedResult,
    RandomStructure,
    cholesky_lower,
    fixed_table,
    information_criteria,
    lrt,
    DenseFactor,
    minimize_bounded,
    progress,
    single_threaded_blas,
    random_tables,
    ranef_tables,
    tri_solve,
)
from .formula import MixedDesign, build_design

__all__ = ["LinearMixedModel", "lrt"]


class LinearMixedModel:
    """``LinearMixedModel.from_formula("Reaction ~ Days + (Days | Subject)", df).fit(reml=True)``.

    ``method``: "auto", "dense" or "sparse" (see ``RandomStructure``).
    """

    def __init__(self, design: MixedDesign, method: str = "auto"):
        self.design = design
        y = design.y_raw
        if not pd.api.types.is_numeric_dtype(y) or pd.api.types.is_bool_dtype(y):
            y = pd.to_numeric(y, errors="raise")
        self.y = np.asarray(y, dtype=float)
        self.X = design.X
        self.rs = RandomStructure(design, method)
        rs = self.rs
        self.ZtZ = None if rs.sparse else rs.ZtWZ(None)
        self._progress = None
        self.ZtX = np.asarray(rs.Zt @ self.X)
        self.Zty = np.asarray(rs.Zt @ self.y)
        self.XtX = self.X.T @ self.X
        self.Xty = self.X.T @ self.y
        self.yty = float(self.y @ self.y)

    @classmethod
    def from_formula(cls, formula: str, data: pd.DataFrame, method: str = "auto") -> "LinearMixedModel":
        design = build_design(formula, data)
        if not design.blocks:
            raise ValueError("the formula has no random-effect term such as (1 | participant)")
        return cls(design, method)

    def _solve(self, theta):
        """The profiled pieces at θ. ``L`` is a factor object (``solve``, ``solve_t``,
        ``logdet``), dense or sparse; everything else is at most q × p."""
        rs = self.rs
        Lt = rs.Lambda_t(theta)
        if rs.sparse:
            L = rs.factor(rs.zl(theta), None)
        else:
            A = rs.sandwich(Lt, self.ZtZ)
            A[np.diag_indices_from(A)] += 1.0
            L = DenseFactor(A)
        if self._progress is not None:
            self._progress.update()
        cu = L.solve(Lt @ self.Zty)
        RZX = L.solve(np.asarray(Lt @ self.ZtX))
        RX = cholesky_lower(self.XtX - RZX.T @ RZX)
        cb = tri_solve(RX, self.Xty - RZX.T @ cu)
        beta = tri_solve(RX, cb, trans=True)
        r2 = max(self.yty - cu @ cu - cb @ cb, 1e-300)
        ldL = L.logdet()
        ldRX = 2 * np.log(np.diag(RX)).sum()
        return dict(L=L, Lt=Lt, cu=cu, RZX=RZX, RX=RX, beta=beta, r2=r2, ldL=ldL, ldRX=ldRX)

    def criterion(self, theta, reml: bool = True) -> float:
        """−2 × (restricted) log-likelihood profiled over β and σ."""
        try:
            s = self._solve(np.asarray(theta, dtype=float))
        except np.linalg.LinAlgError:
            return np.inf
        n, p = self.X.shape
        if reml:
            m = n - p
            return s["ldL"] + s["ldRX"] + m * (1 + math.log(2 * math.pi * s["r2"] / m))
        return s["ldL"] + n * (1 + math.log(2 * math.pi * s["r2"] / n))

    def criterion_and_gradient(self, theta, reml: bool = True):
        """The criterion and its exact gradient over θ.

        With D_k = ∂Λ/∂θ_k: ∂log|A| = 2 tr(A⁻¹Λ'Z'Z D_k) (entries of A⁻¹ on A's pattern only);
        ∂r² = −2 e'Z D_k û with e = y − Xβ̂ − ZΛû (β̂, û minimise the penalised sum of squares,
        so they hold still); ∂log|R_X|² = −2 tr(P⁻¹ W'D_kΛ'W) with P = X'V⁻¹X, W = Z'V⁻¹X and
        V = I + ZΛΛ'Z', V⁻¹X = X − ZΛA⁻¹Λ'Z'X.
        """
        rs = self.rs
        theta = np.asarray(theta, dtype=float)
        try:
            s = self._solve(theta)
        except np.linalg.LinAlgError:
            return np.inf, np.zeros(len(theta))
        X = self.X
        n, p = X.shape
        m = n - p if reml else n
        L, zl = s["L"], rs.zl(theta)
        u = L.solve_t(s["cu"] - s["RZX"] @ s["beta"])
        e = self.y - X @ s["beta"] - rs.mul(zl, u)
        # r² = ‖e‖² + ‖û‖² from the residuals: y'y − c_u'c_u − c_β'c_β loses ~10⁻¹¹ of the
        # criterion to cancellation at 10⁵ rows, enough to stall the line search
        r2 = float(e @ e + u @ u)
        f = s["ldL"] + (s["ldRX"] if reml else 0.0) + m * (1 + math.log(2 * math.pi * r2 / m))
        G = np.einsum("ica,ia->ic", L.row_inverse(rs), zl)
        if reml:
            UX = L.solve_t(s["RZX"])
            VX = X - np.column_stack([rs.mul(zl, UX[:, j]) for j in range(p)])
            W = np.asarray(rs.Zt @ VX)
            Y = np.asarray(s["Lt"] @ W)
            RXi = tri_solve(s["RX"], np.eye(p))
            Pinv = RXi.T @ RXi
        g = np.zeros(len(theta))
        t, off = 0, 0
        for k, blk in enumerate(rs.blocks):
            slots = np.flatnonzero(rs.slot_block == k)
            col0 = off + blk.codes * blk.p
            lev0 = off + np.arange(blk.n_levels) * blk.p
            for j in range(blk.p):
                for i in range(j, blk.p):
                    xi = blk.X[:, i]
                    g[t] = 2 * np.sum(xi * G[:, slots[j]]) - 2 * m * np.sum(e * xi * u[col0 + j]) / r2
                    if reml:
                        g[t] -= 2 * np.sum(Pinv * (W[lev0 + i].T @ Y[lev0 + j]).T)
                    t += 1
            off += blk.p * blk.n_levels
        return f, g

    def fit(self, reml: bool = True) -> MixedResult:
        with single_threaded_blas(), progress(f"LMM fit ({self.rs.method}, q={self.rs.q})") as bar:
            self._progress = bar
            try:
                return self._fit(reml)
            finally:
                self._progress = None

    def _fit(self, reml: bool = True) -> MixedResult:
        rs = self.rs
        if rs.sparse:
            # finite differences of a criterion summed over a million rows are noisy enough to
            # cost L-BFGS-B over a hundred evaluations; the exact gradient needs a dozen or two
            def run(x0):
                return opt.minimize(
                    lambda t: self.criterion_and_gradient(t, reml), x0, jac=True,
                    method="L-BFGS-B", bounds=rs.bounds(),
                    options={"ftol": 1e-14, "gtol": 1e-4, "maxiter": 1000, "maxcor": 20},
                )

            res = run(rs.theta0())
            nfev = res.nfev
            # an SD at zero is a stationary point (the criterion is even in it), where a
            # gradient method can stop although a positive SD is better: restart off the bound
            at0 = np.isfinite(rs.theta_lower) & (res.x <= 1e-8)
            if at0.any():
                again = run(np.where(at0, 0.1, res.x))
                nfev += again.nfev
                if again.fun < res.fun:
                    res = again
            theta = res.x
            _, g = self.criterion_and_gradient(theta, reml)
            free = ~(np.isfinite(rs.theta_lower) & (theta <= 1e-8))
            ok = bool(res.success) or bool(np.max(np.abs(g[free]), initial=0) < 1e-3)
        else:
            theta, dev, nfev, ok = minimize_bounded(
                lambda t: self.criterion(t, reml), rs.theta0(), rs.bounds(), polish=rs.q <= 200
            )
        # variances that sit on the boundary are exactly zero, as in lme4
        theta = np.where(np.isfinite(rs.theta_lower) & (theta < 1e-7), 0.0, theta)
        dev = self.criterion(theta, reml)
        s = self._solve(theta)
        n, p = self.X.shape
        sigma2 = s["r2"] / (n - p if reml else n)
        RXinv = tri_solve(s["RX"], np.eye(p))
        vcov = sigma2 * RXinv.T @ RXinv
        u = s["L"].solve_t(s["cu"] - s["RZX"] @ s["beta"])
        b = np.asarray(s["Lt"].T @ u)
        random, corr = random_tables(rs, theta, sigma2)
        random = pd.concat(
            [random, pd.DataFrame([{"group": "Residual", "term": "",
                                    "variance": sigma2, "sd": math.sqrt(sigma2)}])],
            ignore_index=True,
        )
        loglik = -dev / 2
        k = rs.n_theta + p + 1
        aic, bic = information_criteria(loglik, k, n)
        return MixedResult(
            kind="lmm",
            formula=self.design.formula,
            fixed=fixed_table(self.design.fixed_names, s["beta"], vcov),
            random=random,
            loglik=loglik,
            aic=aic,
            bic=bic,
            nobs=n,
            converged=ok and np.isfinite(dev),
            n_params=k,
            criterion="REML" if reml else "ML",
            deviance=dev,
            theta=theta,
            vcov=vcov,
            correlations=corr,
            ngroups={blk.group: blk.n_levels for blk in rs.blocks},
            ranef=ranef_tables(rs, b),
            sigma=math.sqrt(sigma2),
            se_method="exact",
            model=self,
            extra={"nfev": nfev, "method": rs.method},
        )
