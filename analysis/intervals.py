"""Confidence intervals of a fitted mixed model (``MixedResult``) for every fixed effect and every
random-effect SD (and correlation, and σ for an LMM), as lme4's ``confint.merMod``:

- ``wald``: estimate ± z·SE for the fixed effects (on the t distribution with the fit's
  Satterthwaite df where its tests use them); none for the variance parameters, as lme4.
- ``profile``: lme4's ``confint(method = "profile")``. The profile of a parameter φ_j is
  ζ(v) = sign(v − φ̂_j) √(D(v) − D̂), where D(v) is the deviance minimised over every other parameter
  with φ_j held at v (a constrained refit of our own model, warm-started from the last one) and D̂
  the deviance at the optimum; the interval's ends are the roots of ζ(v) = ±z_{1−α/2}. lme4
  interpolates a spline through a grid of profile points; here each end is found directly, by
  secant steps on ζ (nearly linear in a fixed effect) bracketed by the last two points. As lme4,
  the random-effect parameters are profiled on the standard-deviation / correlation scale, an
  LMM's on its ML deviance (a REML fit is refitted by ML first, lme4's ``refitML``), an LMM's fixed
  effects with β and σ profiled out in closed form, and a limit that the deviance never reaches (an
  SD whose profile stays below z at zero, a correlation at ±1) is that bound.
- ``boot``: a parametric bootstrap as lme4's ``bootMer`` with ``confint(method = "boot",
  boot.type = "perc")``: responses simulated from the fitted model (new random effects and new
  noise), the model refitted to each, percentile intervals of every parameter. Refits that fail
  (an error or a non-finite estimate) are counted and left out; refits the optimiser flags as not
  converged are counted and kept, as bootMer does.
"""

from __future__ import annotations

import copy
import math
import sys
import time
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import scipy.optimize as opt
from scipy import stats
from tqdm import tqdm

from ._draws import simulate_response
from ._json import clean
from ._mixed import MixedResult, single_threaded_blas

__all__ = [
    "METHODS",
    "IntervalResult",
    "ProfileTimeout",
    "bootstrap_intervals",
    "confint",
    "parameter_names",
    "profile_intervals",
    "report_intervals",
    "wald_intervals",
]

METHODS = ("wald", "profile", "boot")
# |ζ − target| at which an end is accepted: 1e-4 of a standard error on a near-linear profile,
# far inside the 2e-3 lme4's spline interpolation is reproduced to
ZETA_TOL = 1e-4


class ProfileTimeout(RuntimeError):
    """The profile did not finish within its time budget."""


@dataclass
class IntervalResult:
    """Intervals of one fit: ``table`` has one row per parameter (``parameter``, ``estimate``,
    ``lower``, ``upper``); ``method`` is ``wald``, ``profile`` or ``boot``."""

    method: str
    level: float
    table: pd.DataFrame
    notes: list = field(default_factory=list)
    extra: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return clean(
            {
                "method": self.method,
                "level": self.level,
                "parameters": [
                    {"parameter": str(r.parameter), "estimate": r.estimate, "lower": r.lower, "upper": r.upper}
                    for r in self.table.itertuples()
                ],
                "notes": [str(n) for n in self.notes],
                **self.extra,
            }
        )

    def summary(self) -> str:
        what = {"wald": "Wald", "profile": "Profile-likelihood", "boot": "Parametric bootstrap (percentile)"}[
            self.method
        ]
        lo, hi = (1 - self.level) / 2 * 100, (1 + self.level) / 2 * 100
        rows = [["", "estimate", f"{lo:g} %", f"{hi:g} %"]]
        for r in self.table.itertuples():
            rows.append(
                [str(r.parameter)]
                + ["NA" if v is None or not np.isfinite(v) else f"{v:.6g}" for v in (r.estimate, r.lower, r.upper)]
            )
        widths = [max(len(r[i]) for r in rows) for i in range(4)]
        lines = [f"{what} {self.level * 100:g}% confidence intervals:"]
        for r in rows:
            lines.append(r[0].ljust(widths[0]) + "".join("  " + c.rjust(w) for c, w in zip(r[1:], widths[1:])))
        if self.method == "boot":
            lines.append(
                f"{self.extra['n_boot']} simulations (seed {self.extra['seed']}): "
                f"{self.extra['n_failed']} refits failed, {self.extra['n_not_converged']} "
                "did not converge (kept)"
            )
        lines += [f"note: {n}" for n in self.notes]
        return "\n".join(lines)


# -- the random-effect parameters on the SD / correlation scale ---------------------------------------
def parameter_names(result: MixedResult) -> list[str]:
    """lme4's names with ``oldNames = FALSE``: ``sd_(Intercept)|Subject``, ``cor_Days.(Intercept)|Subject``,
    ``sigma``, then the fixed effects."""
    rs = result.model.rs
    out = [f"sd_{a}|{g}" if a == b else f"cor_{a}.{b}|{g}" for g, a, b in rs.theta_names]
    if result.kind == "lmm":
        out.append("sigma")
    return out + [str(t) for t in result.fixed["term"]]


def _is_sd(rs) -> np.ndarray:
    return np.array([a == b for _, a, b in rs.theta_names])


def theta_to_sdcor(rs, theta, scale=1.0) -> np.ndarray:
    """θ (lower triangles of the relative factors T_k) → SDs and correlations in θ's layout."""
    out = np.empty(rs.n_theta)
    for s, T in zip(rs.theta_slices, rs.templates(np.asarray(theta, float))):
        S = scale**2 * T @ T.T
        sd = np.sqrt(np.clip(np.diag(S), 0, None))
        k = 0
        vals = []
        for j in range(len(T)):
            for i in range(j, len(T)):
                if i == j:
                    vals.append(sd[i])
                else:
                    vals.append(S[i, j] / (sd[i] * sd[j]) if sd[i] > 0 and sd[j] > 0 else 0.0)
                k += 1
        out[s] = vals
    return out


def sdcor_to_theta(rs, phi, scale=1.0) -> np.ndarray:
    """The inverse: T = diag(sd) chol(R) / scale, lower triangular with T T' = D R D / scale²
    (well defined with an SD at zero, where chol(D R D) is not)."""
    phi = np.asarray(phi, float)
    out = np.empty(rs.n_theta)
    for b, s in zip(rs.blocks, rs.theta_slices):
        p = b.p
        v = phi[s]
        R, sd = np.eye(p), np.empty(p)
        k = 0
        for j in range(p):
            for i in range(j, p):
                if i == j:
                    sd[i] = v[k]
                else:
                    R[i, j] = R[j, i] = v[k]
                k += 1
        C = np.ones((1, 1)) if p == 1 else _cholesky_psd(np.clip(R, -1.0, 1.0))
        T = sd[:, None] * C / scale
        out[s] = [T[i, j] for j in range(p) for i in range(j, p)]
    return out


def _cholesky_psd(R: np.ndarray) -> np.ndarray:
    """Lower-triangular C with C C' = R for a correlation matrix that may be singular (a correlation
    at ±1 is a boundary the profile visits, where LAPACK's Cholesky fails)."""
    p = len(R)
    C = np.zeros_like(R)
    for j in range(p):
        C[j, j] = math.sqrt(max(R[j, j] - C[j, :j] @ C[j, :j], 0.0))
        for i in range(j + 1, p):
            C[i, j] = (R[i, j] - C[i, :j] @ C[j, :j]) / C[j, j] if C[j, j] > 1e-12 else 0.0
    return C


def _bounds(rs) -> list:
    return [(0.0, None) if a == b else (-1.0, 1.0) for _, a, b in rs.theta_names]


# -- Wald ---------------------------------------------------------------------------------------------
def wald_intervals(result: MixedResult, level: float = 0.95) -> IntervalResult:
    ci = result.conf_int(1 - level)
    names = parameter_names(result)
    n_var = len(names) - len(result.fixed)
    phi = _estimates(result)
    rows = [{"parameter": n, "estimate": phi[i], "lower": np.nan, "upper": np.nan} for i, n in enumerate(names[:n_var])]
    rows += [
        {"parameter": str(t), "estimate": float(est), "lower": float(ci.iloc[k, 0]), "upper": float(ci.iloc[k, 1])}
        for k, (t, est) in enumerate(result.params.items())
    ]
    notes = ["Wald intervals of the fixed effects only; none for the variance parameters, as lme4"]
    if result.df_fixed is not None:
        notes.append("on the t distribution with the Satterthwaite df")
    return IntervalResult("wald", level, pd.DataFrame(rows), notes)


def _estimates(result: MixedResult) -> np.ndarray:
    rs = result.model.rs
    scale = result.sigma if result.kind == "lmm" else 1.0
    phi = list(theta_to_sdcor(rs, result.theta, scale))
    if result.kind == "lmm":
        phi.append(result.sigma)
    return np.array(phi + list(result.params.to_numpy(float)))


# -- profile ------------------------------------------------------------------------------------------
class _Profile:
    """The deviance of a fit as a function of its parameters on the SD / correlation scale, and its
    minimum over all but one of them. ``x`` is the full vector (SDs and correlations in θ's layout,
    [σ], β); ``names`` follows ``parameter_names``."""

    def __init__(self, result: MixedResult):
        self.result = result
        self.model = result.model
        self.rs = self.model.rs
        self.nth = self.rs.n_theta
        self.names = parameter_names(result)
        self.x_hat = _estimates(result)
        self.d = len(self.x_hat)
        self.lo = np.array([b[0] if b[0] is not None else -np.inf for b in self.bounds()])
        self.hi = np.array([b[1] if b[1] is not None else np.inf for b in self.bounds()])
        self.nfev = 0

    def bounds(self):
        raise NotImplementedError


class _GLMMProfile(_Profile):
    """x = (SDs/correlations, β); the Laplace deviance with its exact gradient (chain rule through
    the SD → θ map)."""

    def __init__(self, result):
        super().__init__(result)
        self.dev_hat = float(result.deviance)
        self.scalar = bool(np.all(_is_sd(self.rs))) and all(b.p == 1 for b in self.rs.blocks)

    def bounds(self):
        return _bounds(self.result.model.rs) + [(None, None)] * len(self.result.fixed)

    def value_grad(self, x):
        self.nfev += 1
        nth = self.nth
        theta = x[:nth] if self.scalar else sdcor_to_theta(self.rs, x[:nth])
        dev, g = self.model.deviance_and_gradient(theta, x[nth:])
        if not np.isfinite(dev):
            return 1e300, np.zeros(self.d)
        if not self.scalar:
            J = self._jacobian(x[:nth])
            g = np.concatenate([J.T @ g[:nth], g[nth:]])
        return float(dev), g

    def _jacobian(self, phi):
        """dθ/dφ by differences, one-sided at a bound (an SD at zero, a correlation at ±1)."""
        h = 1e-7
        lo, hi = self.lo[: self.nth], self.hi[: self.nth]
        J = np.empty((self.nth, self.nth))
        for k in range(self.nth):
            e = np.zeros(self.nth)
            e[k] = h
            up, down = np.minimum(phi + e, hi), np.maximum(phi - e, lo)
            J[:, k] = (sdcor_to_theta(self.rs, up) - sdcor_to_theta(self.rs, down)) / (up[k] - down[k])
        return J

    def hessian(self):
        x = self.x_hat
        h = 1e-4 * np.maximum(np.abs(x), 1.0)
        H = np.empty((self.d, self.d))
        for i in range(self.d):
            e = np.zeros(self.d)
            e[i] = h[i]
            xp, xm = np.clip(x + e, self.lo, self.hi), np.clip(x - e, self.lo, self.hi)
            H[:, i] = (self.value_grad(xp)[1] - self.value_grad(xm)[1]) / (xp[i] - xm[i])
        return (H + H.T) / 2

    def minimise(self, j, v, start):
        """min over x_{-j} with x_j = v: (deviance, x)."""
        free = np.arange(self.d) != j
        x = np.array(start, float)
        x[j] = v

        def f(z):
            x[free] = z
            dev, g = self.value_grad(x)
            return dev, g[free]

        b = [bd for k, bd in enumerate(self.bounds()) if free[k]]
        res = opt.minimize(
            f,
            np.clip(x[free], self.lo[free], self.hi[free]),
            jac=True,
            method="L-BFGS-B",
            bounds=b,
            options={"ftol": 1e-13, "gtol": 1e-6, "maxiter": 500},
        )
        x[free] = res.x
        return float(res.fun), x.copy()


class _LMMProfile(_Profile):
    """x = (SDs/correlations, σ, β) of the ML fit. The variance parameters are profiled with β
    closed form (β̂(θ)); a fixed effect β_j is profiled with the other β and σ closed form: at θ,
    the penalised RSS with β_j = b is r²(θ) + (b − β̂_j)² / V_jj with V = (R_X R_X')⁻¹, so only θ is
    optimised."""

    def __init__(self, result):
        super().__init__(result)
        self.n, self.p = self.model.X.shape
        self.dev_hat = float(result.deviance)

    def bounds(self):
        return _bounds(self.result.model.rs) + [(1e-12, None)] + [(None, None)] * len(self.result.fixed)

    def _theta(self, x):
        return sdcor_to_theta(self.rs, x[: self.nth], x[self.nth])

    def dev_var(self, x):
        """ML deviance at (SDs/correlations, σ), β at β̂(θ)."""
        self.nfev += 1
        try:
            return float(self.model.deviance_varpar(np.append(self._theta(x), x[self.nth]), reml=False))
        except np.linalg.LinAlgError:
            return 1e300

    def dev_beta(self, theta, j, b):
        """ML deviance at θ with β_j = b, the other β and σ at their conditional optimum."""
        self.nfev += 1
        try:
            s = self.model._solve(theta)
        except np.linalg.LinAlgError:
            return 1e300
        RXinv = np.linalg.inv(s["RX"])
        vjj = float(RXinv[:, j] @ RXinv[:, j])
        r2 = s["r2"] + (b - s["beta"][j]) ** 2 / vjj
        return float(s["ldL"] + self.n * (1 + math.log(2 * math.pi * r2 / self.n)))

    def hessian(self):
        """Of the ML deviance over (SDs/correlations, σ), by central differences; the β block from
        the ML fit's covariance (2 Cov⁻¹), which is all the starting guesses need."""
        k = self.nth + 1
        x = self.x_hat
        h = 1e-4 * np.maximum(np.abs(x[:k]), 1e-2)
        H = np.zeros((self.d, self.d))
        f0 = self.dev_var(x)
        for i in range(k):
            for m in range(i, k):

                def at(si, sm, i=i, m=m):
                    y = x.copy()
                    y[i] += si * h[i]
                    y[m] += sm * h[m]
                    return self.dev_var(np.clip(y, self.lo, self.hi))

                if i == m:
                    H[i, i] = (at(1, 0) - 2 * f0 + at(-1, 0)) / h[i] ** 2
                else:
                    H[i, m] = H[m, i] = (at(1, 1) - at(1, -1) - at(-1, 1) + at(-1, -1)) / (4 * h[i] * h[m])
        H[k:, k:] = 2 * np.linalg.inv(np.asarray(self.result.vcov))
        return H

    def minimise(self, j, v, start):
        x = np.array(start, float)
        k = self.nth + 1
        if j >= k:  # a fixed effect: only θ is optimised
            beta_j = j - k
            th0 = np.clip(self._theta(x), self.rs.theta_lower, None)
            if self.nth:
                res = opt.minimize(
                    lambda t: self.dev_beta(t, beta_j, v),
                    th0,
                    method="L-BFGS-B",
                    bounds=self.rs.bounds(),
                    options={"ftol": 1e-14, "gtol": 1e-8, "maxiter": 500},
                )
                theta, dev = res.x, float(res.fun)
            else:
                theta, dev = th0, self.dev_beta(th0, beta_j, v)
            s = self.model._solve(theta)
            RXinv = np.linalg.inv(s["RX"])
            V = RXinv.T @ RXinv
            beta = s["beta"] + V[:, beta_j] / V[beta_j, beta_j] * (v - s["beta"][beta_j])
            r2 = s["r2"] + (v - s["beta"][beta_j]) ** 2 / V[beta_j, beta_j]
            sigma = math.sqrt(r2 / self.n)
            x[: self.nth] = theta_to_sdcor(self.rs, theta, sigma)
            x[self.nth] = sigma
            x[k:] = beta
            return dev, x
        free = np.zeros(self.d, bool)
        free[:k] = True
        free[j] = False
        x[j] = v
        z0 = np.clip(x[free], self.lo[free], self.hi[free])
        if free.any():

            def f(z):
                y = x.copy()
                y[free] = z
                return self.dev_var(y)

            b = [bd for m, bd in enumerate(self.bounds()) if free[m]]
            res = opt.minimize(
                f, z0, method="L-BFGS-B", bounds=b, options={"ftol": 1e-14, "gtol": 1e-8, "maxiter": 500, "eps": 1e-8}
            )
            x[free] = res.x
            dev = float(res.fun)
        else:
            dev = self.dev_var(x)
        s = self.model._solve(self._theta(x))
        x[k:] = s["beta"]
        return dev, x


def _ml_result(result: MixedResult) -> tuple[MixedResult, list[str]]:
    if result.kind == "lmm" and result.criterion == "REML":
        return (
            result.model.fit(reml=False, ddf="normal"),
            ["the LMM is profiled on its ML deviance (refitted by ML, as lme4's profile does)"],
        )
    return result, []


def profile_intervals(
    result: MixedResult, level: float = 0.95, parameters=None, budget_s: float | None = None
) -> IntervalResult:
    """lme4's ``confint(fit, method = "profile", level = level)`` from constrained refits of our
    own model. ``parameters``: names (``parameter_names``) to profile, default all. ``budget_s``:
    raise ``ProfileTimeout`` once the profile has run that long."""
    if result.model is None:
        raise ValueError("profile intervals need the fit's model (a result rebuilt from numbers has none)")
    t0 = time.perf_counter()
    try:
        return _profile_intervals(result, level, parameters, None if budget_s is None else t0 + budget_s, t0)
    finally:
        # the model's warm-start slots hold the last constrained refit; put the fit's own back
        _restore(result)


def _profile_intervals(result, level, parameters, deadline, t0) -> IntervalResult:
    fit, notes = _ml_result(result)
    with single_threaded_blas():
        prof = (_GLMMProfile if fit.kind == "glmm" else _LMMProfile)(fit)
        names = prof.names
        wanted = names if parameters is None else list(parameters)
        unknown = [p for p in wanted if p not in names]
        if unknown:
            raise ValueError(f"unknown parameter(s) {', '.join(unknown)}; the fit has {', '.join(names)}")
        z = float(stats.norm.isf((1 - level) / 2))
        try:
            H = prof.hessian()
            cov = 2 * np.linalg.inv(H)
            if not np.all(np.isfinite(cov)) or np.any(np.diag(cov) <= 0):
                cov = None
        except np.linalg.LinAlgError:
            cov = None
        rows = []
        for name in wanted:
            j = names.index(name)
            lo, hi, more = _profile_one(prof, j, z, cov, deadline)
            notes += more
            rows.append(
                {"parameter": name, "estimate": float(result_estimate(result, name, prof)), "lower": lo, "upper": hi}
            )
    extra = {"seconds": round(time.perf_counter() - t0, 3), "evaluations": int(prof.nfev)}
    return IntervalResult("profile", level, pd.DataFrame(rows), notes, extra)


def result_estimate(result, name, prof):
    names = parameter_names(result)
    return _estimates(result)[names.index(name)] if name in names else prof.x_hat[prof.names.index(name)]


def _restore(result):
    model = result.model
    if result.kind == "glmm":
        model._u = np.zeros(model.rs.q)
        model._beta = result.params.to_numpy(float).copy()
        model._last = None
        model._chord = None


def _profile_one(prof: _Profile, j: int, z: float, cov, deadline=None) -> tuple[float, float, list]:
    """Both ends of parameter j's interval: the roots of ζ(v) = ∓z."""
    v_hat = prof.x_hat[j]
    if cov is not None:
        se = math.sqrt(cov[j, j])
        # the constrained optimum moves, to first order, along the covariance's column j: the
        # warm start of each refit
        slope = cov[:, j] / cov[j, j]
    else:
        se = max(0.25 * abs(v_hat), 0.05)
        slope = np.zeros(prof.d)
        slope[j] = 1.0
    notes, out = [], []
    for sign in (-1.0, 1.0):
        end = _one_end(prof, j, sign * z, se, slope, deadline)
        if end is None:
            notes.append(f"{prof.names[j]}: the profile did not reach ζ = {sign * z:+.3f}; no interval end")
            end = np.nan
        out.append(float(end))
    return out[0], out[1], notes


def _one_end(prof: _Profile, j: int, target: float, se: float, slope, deadline=None) -> float | None:
    """The root of ζ(v) = target on one side of the estimate, by secant steps on ζ, bracketed once
    the last two points straddle the target; the bound itself where ζ never gets there."""
    sign = math.copysign(1.0, target)
    v_hat = prof.x_hat[j]
    cache = {0.0: prof.x_hat.copy()}  # offset from v_hat → x at the constrained optimum

    def zeta(off):
        if deadline is not None and time.perf_counter() > deadline:
            raise ProfileTimeout(prof.names[j])
        near = min(cache, key=lambda o: abs(o - off))
        start = cache[near] + slope * (off - near)
        dev, x = prof.minimise(j, v_hat + off, np.clip(start, prof.lo, prof.hi))
        # a refit that beats the fit's own optimum: measure from it, as lme4 does
        prof.dev_hat = min(prof.dev_hat, dev)
        cache[off] = x
        return math.copysign(math.sqrt(max(dev - prof.dev_hat, 0.0)), off)

    bound = prof.lo[j] if sign < 0 else prof.hi[j]
    room = abs(bound - v_hat)
    if room == 0:
        return v_hat
    a, za = 0.0, 0.0
    b = sign * min(abs(target) * se, 0.9 * room)
    zb = zeta(b)
    for _ in range(60):
        if abs(zb - target) < ZETA_TOL:
            return v_hat + b
        if (zb - target) * (za - target) < 0:  # bracketed: a secant step kept inside [a, b]
            c = b - (zb - target) * (b - a) / (zb - za)
            lo, hi = sorted((a, b))
            c = min(max(c, lo + 0.02 * (hi - lo)), hi - 0.02 * (hi - lo))
            zc = zeta(c)
            if (zc - target) * (zb - target) < 0:
                a, za = b, zb
            b, zb = c, zc
            continue
        # not yet bracketed: extrapolate along the secant, at most 4× further out
        step = (target - zb) * (b - a) / (zb - za) if zb != za else b
        c = b + float(np.clip(step, -4 * abs(b), 4 * abs(b)))
        if abs(c) >= room:
            c = sign * room
            zc = zeta(c)
            if abs(zc) < abs(target):  # the deviance never rises by z² before the bound
                return bound
        else:
            zc = zeta(c)
        a, za, b, zb = b, zb, c, zc
    return None


# -- parametric bootstrap -----------------------------------------------------------------------------
def refit_to(result: MixedResult, y: np.ndarray) -> MixedResult:
    """The same model refitted to response ``y`` (the model object is copied, not changed)."""
    from scipy.special import gammaln

    m = copy.copy(result.model)
    if result.kind == "glmm":
        m.y = y
        k = y * m.n_trials
        m._const = float(np.sum(gammaln(m.n_trials + 1) - gammaln(k + 1) - gammaln(m.n_trials - k + 1)))
        m._u = np.zeros(m.rs.q)
        m._beta = np.zeros(m.X.shape[1])
        m._last = m._chord = m._progress = None
        return m.fit(se="rx")
    m.y = y
    m.Zty = np.asarray(m.rs.Zt @ y)
    m.Xty = m.X.T @ y
    m.yty = float(y @ y)
    m._progress = None
    return m.fit(reml=result.criterion == "REML", ddf="normal")


def bootstrap_intervals(
    result: MixedResult, n_boot: int = 200, seed: int = 0, level: float = 0.95, progress: bool | None = None
) -> IntervalResult:
    """Percentile intervals from ``n_boot`` parametric-bootstrap refits (lme4's ``bootMer``; a
    tqdm bar on stderr when it is a terminal, or when ``progress`` is True)."""
    if result.model is None:
        raise ValueError("a bootstrap needs the fit's model (a result rebuilt from numbers has none)")
    if n_boot < 2:
        raise ValueError("--boot-n must be at least 2")
    t0 = time.perf_counter()
    rng = np.random.default_rng(seed)
    names = parameter_names(result)
    draws, failed, not_conv, errors = [], 0, 0, []
    bar = tqdm(
        total=n_boot,
        desc="parametric bootstrap",
        unit=" refits",
        file=sys.stderr,
        disable=None if progress is None else not progress,
        leave=False,
    )
    with bar:
        for _ in range(n_boot):
            y = simulate_response(result, rng)
            try:
                r = refit_to(result, y)
                est = _estimates(r)
                if not np.all(np.isfinite(est)):
                    raise FloatingPointError("non-finite estimate")
            except (ValueError, np.linalg.LinAlgError, FloatingPointError) as exc:
                failed += 1
                if len(errors) < 3:
                    errors.append(" ".join(str(exc).split()) or type(exc).__name__)
                bar.update()
                continue
            not_conv += not r.converged
            draws.append(est)
            bar.update()
    _restore(result)
    notes = []
    if failed:
        notes.append(
            f"{failed} of {n_boot} refits failed and are left out" + (f" (e.g. {errors[0]})" if errors else "")
        )
    if not_conv:
        notes.append(f"{not_conv} of {n_boot} refits did not converge; kept, as bootMer keeps them")
    D = np.array(draws) if draws else np.full((0, len(names)), np.nan)
    a = (1 - level) / 2
    est = _estimates(result)
    rows = []
    for k, name in enumerate(names):
        lo, hi = np.quantile(D[:, k], [a, 1 - a]) if len(D) >= 2 else (np.nan, np.nan)
        rows.append({"parameter": name, "estimate": float(est[k]), "lower": float(lo), "upper": float(hi)})
    extra = {
        "n_boot": int(n_boot),
        "n_failed": int(failed),
        "n_not_converged": int(not_conv),
        "seed": int(seed),
        "seconds": round(time.perf_counter() - t0, 3),
    }
    return IntervalResult("boot", level, pd.DataFrame(rows), notes, extra)


def report_intervals(result: MixedResult, level: float = 0.95, budget_s: float = 60.0) -> IntervalResult:
    """Profile intervals when they finish within ``budget_s`` seconds, else Wald intervals with a
    note saying so (the report's choice)."""
    if budget_s > 0:
        try:
            return profile_intervals(result, level, budget_s=budget_s)
        except ProfileTimeout:
            why = f"profile intervals did not finish within the {budget_s:g} s budget"
    else:
        why = "profile intervals were not asked for (budget 0 s)"
    out = wald_intervals(result, level)
    out.notes.insert(0, f"{why}: Wald intervals instead")
    return out


def confint(
    result: MixedResult,
    method: str = "wald",
    level: float = 0.95,
    n_boot: int = 200,
    seed: int = 0,
    progress: bool | None = None,
) -> IntervalResult:
    """``method``: ``wald``, ``profile`` or ``boot`` (lme4's ``confint.merMod``)."""
    if method not in METHODS:
        raise ValueError(f"unknown interval method {method!r}; expected one of {', '.join(METHODS)}")
    if not 0 < level < 1:
        raise ValueError("the confidence level must lie between 0 and 1")
    if method == "wald":
        return wald_intervals(result, level)
    if method == "profile":
        return profile_intervals(result, level)
    return bootstrap_intervals(result, n_boot, seed, level, progress)
