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

from ._mixed import (
    CHECK_NOBS_MAX,
    DenseFactor,
    MixedResult,
    RandomStructure,
    cholesky_lower,
    deriv12,
    design_fields,
    fixed_table,
    gradient_check,
    information_criteria,
    lrt,
    minimize_bounded,
    progress,
    random_tables,
    ranef_tables,
    single_threaded_blas,
    start_value_warnings,
    theta_labels,
    tri_solve,
)
from .formula import FormulaError, MixedDesign, build_design
from .kenward_roger import kenward_roger
from .satterthwaite import DDF_METHODS, satterthwaite_df

__all__ = ["LinearMixedModel", "lrt"]


class LinearMixedModel:
    """``LinearMixedModel.from_formula("Reaction ~ Days + (Days | Subject)", df).fit(reml=True)``.

    ``method``: "auto", "dense" or "sparse" (see ``RandomStructure``). ``strict``: values a
    transform in the formula cannot take (``log(RT)`` with RT ≤ 0) raise instead of being
    dropped with a note. An ``offset(...)`` term is subtracted from the response.
    """

    def __init__(self, design: MixedDesign, method: str = "auto"):
        self.design = design
        y = design.y_raw
        if not pd.api.types.is_numeric_dtype(y) or pd.api.types.is_bool_dtype(y):
            try:
                y = pd.to_numeric(y, errors="raise")
            except (TypeError, ValueError) as e:
                raise FormulaError(f"the response {design.response} is not numeric: {e}") from None
        self.y = np.asarray(y, dtype=float)
        if design.offset is not None:
            self.y = self.y - design.offset
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
    def from_formula(cls, formula: str, data: pd.DataFrame, method: str = "auto",
                     strict: bool = False) -> LinearMixedModel:
        design = build_design(formula, data, strict=strict)
        if design.trials is not None:
            raise FormulaError("cbind(successes, failures) is a binomial response: fit it with the GLMM")
        if not design.blocks:
            raise FormulaError("the formula has no random-effect term such as (1 | participant)")
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

    def _criterion_from_residuals(self, theta, reml: bool = True) -> float:
        """The criterion with r² = ‖y − Xβ̂ − ZΛû‖² + ‖û‖² summed from the residuals: the closed
        form y'y − c_u'c_u − c_β'c_β loses ~10⁻¹¹ of the criterion to cancellation at 10⁵ rows and
        more at 10⁶, which finite-difference gradients magnify into a hundred extra evaluations.
        Costs a few passes over the rows, which the sparse path makes anyway."""
        rs = self.rs
        theta = np.asarray(theta, dtype=float)
        try:
            s = self._solve(theta)
        except np.linalg.LinAlgError:
            return np.inf
        n, p = self.X.shape
        u = s["L"].solve_t(s["cu"] - s["RZX"] @ s["beta"])
        e = self.y - self.X @ s["beta"] - rs.mul(rs.zl(theta), u)
        r2 = float(e @ e + u @ u)
        m = n - p if reml else n
        return s["ldL"] + (s["ldRX"] if reml else 0.0) + m * (1 + math.log(2 * math.pi * r2 / m))

    def fit(self, reml: bool = True, ddf: str = "satterthwaite") -> MixedResult:
        """``ddf``: ``"satterthwaite"`` (default, as lmerTest) for t tests of the fixed effects on
        Satterthwaite's denominator df; ``"kenward-roger"`` for Kenward–Roger's df and adjusted
        standard errors (pbkrtest; REML only, up to ``kenward_roger.MAX_ROWS`` rows);
        ``"normal"`` for the normal approximation (z)."""
        if ddf not in DDF_METHODS:
            raise ValueError(f"unknown ddf {ddf!r}; expected one of {', '.join(DDF_METHODS)}")
        with single_threaded_blas(), progress(f"LMM fit ({self.rs.method}, q={self.rs.q})") as bar:
            self._progress = bar
            try:
                res = self._fit(reml)
            finally:
                self._progress = None
            if ddf == "satterthwaite":
                df, notes = satterthwaite_df(self, res)
                res.with_ddf(df, "Satterthwaite", notes)
            elif ddf == "kenward-roger":
                if not reml:
                    raise ValueError("Kenward–Roger df are defined for a REML fit (pbkrtest refits "
                                     "an ML fit by REML first): drop --ml")
                kr = kenward_roger(self, res)
                # as lmerTest's summary(ddf = "Kenward-Roger"): the adjusted covariance Φ_A gives
                # the standard errors, Kenward–Roger's df the t tests
                res.vcov = kr.PhiA
                res.fixed["std_error"] = np.sqrt(np.clip(np.diag(kr.PhiA), 0, None))
                res.with_ddf(kr.contrast_df(np.eye(len(res.fixed))), "Kenward-Roger")
                res.se_method = "Kenward-Roger (pbkrtest's adjusted covariance)"
            return res

    # -- the narrow interface of analysis.satterthwaite: (θ, σ) not profiled -------------------
    def deviance_varpar(self, varpar, reml: bool = True) -> float:
        """−2 × (restricted) log-likelihood at θ = varpar[:-1], σ = varpar[-1], with β at its
        conditional estimate (lmerTest's ``devfun_vp``)."""
        varpar = np.asarray(varpar, dtype=float)
        s2 = float(varpar[-1]) ** 2
        s = self._solve(varpar[:-1])
        n, p = self.X.shape
        dev = s["ldL"] + s["r2"] / s2 + n * math.log(2 * math.pi * s2)
        if reml:
            dev += s["ldRX"] - p * math.log(2 * math.pi * s2)
        return dev

    def vcov_varpar(self, varpar) -> np.ndarray:
        """Covariance of β̂ at θ = varpar[:-1], σ = varpar[-1]: σ² (R_X R_X')⁻¹ (lmerTest's
        ``get_covbeta``)."""
        varpar = np.asarray(varpar, dtype=float)
        s = self._solve(varpar[:-1])
        RXinv = tri_solve(s["RX"], np.eye(self.X.shape[1]))
        return float(varpar[-1]) ** 2 * RXinv.T @ RXinv

    def _fit(self, reml: bool = True) -> MixedResult:
        rs = self.rs
        if rs.sparse:
            crit = lambda t: self._criterion_from_residuals(t, reml)  # noqa: E731
            theta, dev, nfev, ok = minimize_bounded(crit, rs.theta0(), rs.bounds(), polish=False)
            # an SD at zero is a stationary point (the criterion is even in it), where a
            # gradient method can stop although a positive SD is better: restart off the bound
            at0 = np.isfinite(rs.theta_lower) & (theta <= 1e-8)
            if at0.any():
                th2, dev2, nf2, ok2 = minimize_bounded(
                    crit, np.where(at0, 0.1, theta), rs.bounds(), polish=False
                )
                nfev += nf2
                if dev2 < dev:
                    theta, dev, ok = th2, dev2, ok2
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
        converged = bool(ok and np.isfinite(dev))
        warnings = [] if converged else ["the optimiser did not report convergence"]
        # lme4's derivative check over θ, by its central differences, on fits small enough
        # (check.conv.nobsmax) and off the boundary (lme4 skips singular fits)
        gmax, gw = None, []
        free = ~(np.isfinite(rs.theta_lower) & (theta <= 0))
        if n < CHECK_NOBS_MAX and rs.n_theta and free.all():
            g, H = deriv12(lambda t: self.criterion(t, reml), theta, fx=dev)
            gmax, gw = gradient_check(g, H, theta_labels(rs))
        bad = gw + start_value_warnings(rs, theta)
        if bad:
            converged = False
            warnings += bad
        return MixedResult(
            kind="lmm",
            formula=self.design.formula,
            fixed=fixed_table(self.design.fixed_names, s["beta"], vcov),
            random=random,
            loglik=loglik,
            aic=aic,
            bic=bic,
            nobs=n,
            converged=converged,
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
            warnings=warnings,
            gradient_max=gmax,
            **design_fields(self.design),
        )
