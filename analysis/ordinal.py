"""Cumulative-logit mixed models for ordered ratings (confidence 1–3), as R's ``ordinal::clmm``
(Christensen 2019, "Cumulative link models for ordinal regression with the R package ordinal"),
on the Laplace machinery of the GLMM (``analysis._mixed.RandomStructure``: the same Λθ, Z and
factorizations).

Model: P(Y ≤ k) = σ(α_k − η), k = 1 … K−1, with ordered thresholds α_1 < … < α_{K−1} and
η = Xβ + Zb (no intercept: the thresholds carry it), b = Λθ u, u ~ N(0, I); here the random terms are
random intercepts (crossed or nested; clmm's scalar terms), so θ holds their SDs. For given
(α, β, θ), Newton's method finds the conditional mode û of log p(y | η(u)) − ‖u‖²/2 with the
observed information W = −∂² log p/∂η², which is positive since the cumulative logit is log-concave;
the Laplace deviance is −2 log p(y | û) + ‖û‖² + log|Λ'Z'WZΛ + I|, clmm's ``link = "logit"``,
``threshold = "flexible"``, ``nAGQ = 1``. The outer optimisation runs over (α_1, log of the
increments α_k − α_{k−1}, β, θ) by L-BFGS-B; standard errors come from the Hessian of the deviance over
(α, β, θ) by central differences (clmm's ``Hess = TRUE``). With no random term left (all SDs zero) the
likelihood is that of statsmodels' ``OrderedModel(distr="logit")``, the fixed-effects model it
reduces to.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import scipy.optimize as opt
from scipy import stats
from scipy.special import expit

from ._json import clean
from ._mixed import RandomStructure, single_threaded_blas
from .formula import FormulaError, build_design

__all__ = ["ClmmResult", "CumulativeLogitMixedModel"]


def _levels(y: pd.Series) -> tuple[np.ndarray, list]:
    """Codes 0..K−1 of an ordered response: numbers in numeric order, an ordered categorical in its
    order, anything else sorted."""
    if isinstance(y.dtype, pd.CategoricalDtype) and y.cat.ordered:
        levels = list(y.cat.categories)
        codes = y.cat.codes.to_numpy()
    else:
        vals = pd.to_numeric(y, errors="coerce") if not pd.api.types.is_numeric_dtype(y) else y
        if vals.notna().all():
            levels = sorted(pd.unique(vals))
            codes = pd.Categorical(vals, categories=levels).codes
        else:
            levels = sorted(pd.unique(y.astype(str)))
            codes = pd.Categorical(y.astype(str), categories=levels).codes
    return np.asarray(codes, int), levels


class CumulativeLogitMixedModel:
    """``CumulativeLogitMixedModel.from_formula("confidence ~ condition + (1 | participant) +
    (1 | unit)", df).fit()``; the response's ordered levels are its sorted values."""

    def __init__(self, design, method: str = "auto"):
        self.design = design
        if any(b.p != 1 for b in design.blocks):
            raise FormulaError(
                "the cumulative-logit mixed model takes random intercepts only, "
                "such as (1 | participant) + (1 | unit), as ordinal::clmm"
            )
        keep = [i for i, n in enumerate(design.fixed_names) if n != "(Intercept)"]
        self.X = design.X[:, keep]
        self.fixed_names = [design.fixed_names[i] for i in keep]
        self.y, self.levels = _levels(design.y_raw.reset_index(drop=True))
        self.K = len(self.levels)
        if self.K < 2:
            raise ValueError(f"the response {design.response} has a single level; nothing to model")
        self.rs = RandomStructure(design, method)
        self._u = np.zeros(self.rs.q)
        self.nth = self.rs.n_theta

    @classmethod
    def from_formula(cls, formula: str, data: pd.DataFrame, method: str = "auto", strict: bool = False):
        design = build_design(formula, data, strict=strict)
        if design.trials is not None:
            raise FormulaError("cbind() is a binomial response; an ordinal response is one column")
        return cls(design, method)

    # -- the pieces of the likelihood --------------------------------------------------------------
    def _derivs(self, alpha, eta):
        """log p_i, ∂ log p_i/∂η and W_i = −∂² log p_i/∂η² at η."""
        a = np.concatenate([[-np.inf], alpha, [np.inf]])
        a1, a0 = a[self.y + 1] - eta, a[self.y] - eta
        s1, s0 = expit(a1), expit(a0)
        # the difference of two CDF values near 1 loses digits: take it from the upper tails there
        upper = a0 > 0
        p = np.where(upper, expit(-a0) - expit(-a1), s1 - s0)
        p = np.maximum(p, 1e-300)
        f1, f0 = s1 * (1 - s1), s0 * (1 - s0)
        g1, g0 = f1 * (1 - 2 * s1), f0 * (1 - 2 * s0)
        d = -(f1 - f0) / p
        w = -((g1 - g0) / p - d**2)
        return np.log(p), d, np.maximum(w, 1e-12)

    def _laplace(self, alpha, beta, theta, tol=1e-10, maxit=50):
        rs = self.rs
        xb = self.X @ beta
        if not self.nth or not np.any(theta > 0):
            lp, _, _ = self._derivs(alpha, xb)
            return -2 * float(lp.sum()), np.zeros(rs.q)
        zl = rs.zl(theta)
        u = self._u.copy()

        def pdev(u):
            eta = xb + rs.mul(zl, u)
            lp, d, w = self._derivs(alpha, eta)
            return -2 * float(lp.sum()) + u @ u, d, w

        f, d, w = pdev(u)
        for _ in range(maxit):
            L = rs.factor(zl, w)
            g = rs.tmul(zl, d) - u
            du = L.solve_t(L.solve(g))
            decrement = float(g @ du)
            step = 1.0
            for _ in range(30):
                f_new, d_new, w_new = pdev(u + step * du)
                if f_new <= f + 1e-12 * abs(f):
                    break
                step /= 2
            u, f, d, w = u + step * du, f_new, d_new, w_new
            if decrement < tol:
                break
        L = rs.factor(zl, w)
        self._u = u
        return f + L.logdet(), u

    def deviance(self, alpha, beta, theta) -> float:
        """The Laplace approximation of −2 log-likelihood at thresholds α, coefficients β, SDs θ."""
        alpha = np.asarray(alpha, float)
        if np.any(np.diff(alpha) <= 0):
            return np.inf
        try:
            return self._laplace(alpha, np.asarray(beta, float), np.asarray(theta, float))[0]
        except (np.linalg.LinAlgError, FloatingPointError):
            return np.inf

    def _unpack(self, z):
        k = self.K - 1
        alpha = z[0] + np.concatenate([[0.0], np.cumsum(np.exp(z[1:k]))])
        p = self.X.shape[1]
        return alpha, z[k : k + p], np.abs(z[k + p :])

    # -- fitting ---------------------------------------------------------------------------------------
    def fit(self) -> ClmmResult:
        with single_threaded_blas():
            return self._fit()

    def _fit(self) -> ClmmResult:
        k, p, nth = self.K - 1, self.X.shape[1], self.nth
        counts = np.bincount(self.y, minlength=self.K).astype(float)
        cum = np.cumsum(counts)[:-1] / counts.sum()
        a0 = np.log(np.clip(cum, 1e-4, 1 - 1e-4) / (1 - np.clip(cum, 1e-4, 1 - 1e-4)))
        a0 = np.maximum.accumulate(a0 + np.arange(k) * 1e-3)
        z0 = np.concatenate([[a0[0]], np.log(np.maximum(np.diff(a0), 1e-3)), np.zeros(p), np.full(nth, 0.5)])
        self._u[:] = 0

        def f(z):
            alpha, beta, theta = self._unpack(z)
            return self.deviance(alpha, beta, theta)

        bounds = [(None, None)] * (k + p) + [(0.0, None)] * nth
        res = opt.minimize(
            f, z0, method="L-BFGS-B", bounds=bounds, options={"ftol": 1e-14, "gtol": 1e-7, "maxiter": 2000, "eps": 1e-7}
        )
        z, ok = res.x, bool(res.success)
        if nth and np.any(np.abs(z[k + p :]) < 0.05):
            # a derivative-free polish near the boundary, where an SD close to zero makes the
            # finite-difference gradient poor just where L-BFGS-B stops (elsewhere it gains ~1e-11)
            nm = opt.minimize(
                f,
                res.x,
                method="Nelder-Mead",
                options={"xatol": 1e-8, "fatol": 1e-10, "maxfev": 200 * (len(z0) + 1), "adaptive": True},
            )
            if nm.fun <= res.fun:
                z = nm.x
            ok = ok or bool(nm.success)
        alpha, beta, theta = self._unpack(z)
        theta = np.where(theta < 1e-5, 0.0, theta)
        dev = self.deviance(alpha, beta, theta)
        converged = ok and bool(np.isfinite(dev))
        x = np.concatenate([alpha, beta, theta])
        cov, hess_ok = self._covariance(x, k, p)
        _, u = self._laplace(alpha, beta, theta)
        return self._result(alpha, beta, theta, dev, cov, hess_ok, converged, u)

    def _dev_x(self, x):
        k, p = self.K - 1, self.X.shape[1]
        return self.deviance(x[:k], x[k : k + p], np.abs(x[k + p :]))

    def _covariance(self, x, k, p):
        """2 H⁻¹ over (α, β, θ) with H by central differences; θ at zero is left out (a bound)."""
        free = np.ones(len(x), bool)
        free[k + p :] = x[k + p :] > 0
        idx = np.flatnonzero(free)
        h = 1e-4 * np.maximum(np.abs(x), 0.1)
        H = np.zeros((len(idx), len(idx)))
        f0 = self._dev_x(x)
        for a, i in enumerate(idx):
            for b, j in enumerate(idx[: a + 1]):

                def at(si, sj, i=i, j=j):
                    y = x.copy()
                    y[i] += si * h[i]
                    y[j] += sj * h[j]
                    return self._dev_x(y)

                if i == j:
                    H[a, a] = (at(1, 0) - 2 * f0 + at(-1, 0)) / h[i] ** 2
                else:
                    H[a, b] = H[b, a] = (at(1, 1) - at(1, -1) - at(-1, 1) + at(-1, -1)) / (4 * h[i] * h[j])
        cov = np.full((len(x), len(x)), np.nan)
        try:
            np.linalg.cholesky(H)
            cov[np.ix_(idx, idx)] = 2 * np.linalg.inv(H)
            return cov, True
        except np.linalg.LinAlgError:
            return cov, False

    def _result(self, alpha, beta, theta, dev, cov, hess_ok, converged, u) -> ClmmResult:
        k, p = self.K - 1, self.X.shape[1]
        se = np.sqrt(np.diag(cov))
        names = [f"{self.levels[i]}|{self.levels[i + 1]}" for i in range(k)]
        thr = pd.DataFrame({"threshold": names, "estimate": alpha, "std_error": se[:k]})
        thr["z"] = thr.estimate / thr.std_error
        fixed = pd.DataFrame({"term": self.fixed_names, "estimate": beta, "std_error": se[k : k + p]})
        fixed["z"] = fixed.estimate / fixed.std_error
        fixed["p"] = 2 * stats.norm.sf(np.abs(fixed.z))
        random = pd.DataFrame(
            {"group": [b.group for b in self.rs.blocks], "term": "(Intercept)", "variance": theta**2, "sd": theta}
        )
        warnings = [] if converged else ["the optimiser did not report convergence"]
        if not hess_ok:
            warnings.append("the Hessian is not positive definite: standard errors are not available")
        zero = [b.group for b, t in zip(self.rs.blocks, theta) if t == 0]
        if zero:
            warnings.append(f"boundary (singular) fit: the SD of {', '.join(zero)} is zero")
        n_par = k + p + self.nth
        loglik = -dev / 2
        n = len(self.y)
        return ClmmResult(
            formula=self.design.formula,
            response=self.design.response,
            levels=list(self.levels),
            thresholds=thr,
            fixed=fixed,
            random=random,
            loglik=loglik,
            aic=dev + 2 * n_par,
            bic=dev + n_par * math.log(n),
            nobs=n,
            n_params=n_par,
            converged=converged,
            ngroups={b.group: b.n_levels for b in self.rs.blocks},
            warnings=warnings,
            notes=list(self.design.notes),
            theta=theta,
            vcov=cov,
            model=self,
        )


@dataclass
class ClmmResult:
    """A fitted cumulative-logit mixed model (statsmodels' result names where they apply)."""

    formula: str
    response: str
    levels: list
    thresholds: pd.DataFrame  # threshold ("1|2"), estimate, std_error, z
    fixed: pd.DataFrame  # term, estimate, std_error, z, p
    random: pd.DataFrame  # group, term, variance, sd
    loglik: float
    aic: float
    bic: float
    nobs: int
    n_params: int
    converged: bool
    ngroups: dict = field(default_factory=dict)
    warnings: list = field(default_factory=list)
    notes: list = field(default_factory=list)
    theta: np.ndarray | None = None
    vcov: np.ndarray | None = None
    model: object = None

    @property
    def params(self) -> pd.Series:
        return pd.Series(self.fixed["estimate"].to_numpy(), index=self.fixed["term"].to_numpy())

    @property
    def bse(self) -> pd.Series:
        return pd.Series(self.fixed["std_error"].to_numpy(), index=self.fixed["term"].to_numpy())

    @property
    def llf(self) -> float:
        return float(self.loglik)

    def to_dict(self) -> dict:
        return clean(
            {
                "kind": "clmm",
                "link": "logit",
                "threshold": "flexible",
                "formula": self.formula,
                "response": self.response,
                "levels": [str(v) for v in self.levels],
                "nobs": int(self.nobs),
                "n_params": int(self.n_params),
                "loglik": self.loglik,
                "aic": self.aic,
                "bic": self.bic,
                "converged": bool(self.converged),
                "groups": [{"group": str(g), "levels": int(n)} for g, n in self.ngroups.items()],
                "random": [
                    {"group": str(r.group), "term": str(r.term), "variance": r.variance, "sd": r.sd}
                    for r in self.random.itertuples()
                ],
                "thresholds": [
                    {"threshold": str(r.threshold), "estimate": r.estimate, "std_error": r.std_error, "z": r.z}
                    for r in self.thresholds.itertuples()
                ],
                "fixed": [
                    {
                        "term": str(r.term),
                        "estimate": r.estimate,
                        "std_error": r.std_error,
                        "statistic": r.z,
                        "statistic_kind": "z",
                        "p": r.p,
                    }
                    for r in self.fixed.itertuples()
                ],
                "warnings": [str(w) for w in self.warnings],
                "notes": [str(n) for n in self.notes],
            }
        )

    def to_json(self, **kw) -> str:
        return json.dumps(self.to_dict(), **kw)

    def summary(self) -> str:
        """Laid out as ordinal's ``summary(clmm(...))``."""
        out = [
            "Cumulative Link Mixed Model fitted with the Laplace approximation",
            "",
            f"formula: {self.formula}",
            "",
            " link  threshold nobs  logLik    AIC",
            f" logit flexible  {self.nobs:<5d} {self.loglik:<9.2f} {self.aic:.2f}",
            "",
            "Random effects:",
            f" {'Groups':<14}{'Name':<13}{'Variance':>10}{'Std.Dev.':>10}",
        ]
        for r in self.random.itertuples():
            out.append(f" {r.group:<14}{r.term:<13}{r.variance:10.4f}{r.sd:10.4f}")
        out.append("Number of groups:  " + ",  ".join(f"{g} {n}" for g, n in self.ngroups.items()))
        out += ["", "Coefficients:", f"{'':<24}{'Estimate':>10}{'Std. Error':>12}{'z value':>9}{'Pr(>|z|)':>11}"]
        for r in self.fixed.itertuples():
            out.append(f"{r.term:<24}{r.estimate:10.4f}{r.std_error:12.4f}{r.z:9.3f}{r.p:11.3g}")
        out += ["", "Threshold coefficients:", f"{'':<8}{'Estimate':>10}{'Std. Error':>12}{'z value':>9}"]
        for r in self.thresholds.itertuples():
            out.append(f"{r.threshold:<8}{r.estimate:10.4f}{r.std_error:12.4f}{r.z:9.3f}")
        out += [f"note: {n}" for n in self.notes] + [f"warning: {w}" for w in self.warnings]
        return "\n".join(out)

    def __str__(self) -> str:
        return self.summary()
