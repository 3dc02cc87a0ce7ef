"""Satterthwaite's denominator degrees of freedom for the fixed effects of a linear mixed model, as
lmerTest computes them (Kuznetsova, Brockhoff & Christensen 2017, "lmerTest Package: Tests in Linear
Mixed Effects Models", J. Stat. Softw. 82(13), §3).

With varpar = (θ, σ), A = 2 H⁻¹ the asymptotic covariance of varpar (H the Hessian of the deviance, or
REML criterion, over varpar at the estimate) and, for a contrast l, v(varpar) = l' Cov(β̂; varpar) l,

    df = 2 v² / (∇v' A ∇v).

Nothing in Python computes this for our fits (statsmodels' MixedLM has no Satterthwaite df), so it is
written here. As lmerTest (which uses numDeriv), H and the Jacobian of Cov(β̂) are numerical
derivatives: Richardson-extrapolated central differences with numDeriv's default steps; H is inverted
by the Moore–Penrose inverse over eigenvalues above 1e-8, with a warning for the others.

The model is reached through two methods only: ``deviance_varpar(varpar, reml)`` and
``vcov_varpar(varpar)``.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["DDF_METHODS", "satterthwaite_df", "contrast_df", "varpar_covariance", "hessian", "jacobian"]

# "kenward-roger" is computed by analysis.kenward_roger
DDF_METHODS = ("satterthwaite", "kenward-roger", "normal")
# lmerTest's tolerance for an eigenvalue of H to count as zero
EIGEN_TOL = 1e-8
# numDeriv's zero.tol: below it a coordinate gets the absolute step eps
_ZERO_TOL = math.sqrt(np.finfo(float).eps / 7e-7)


def _steps(x, d, eps):
    x = np.asarray(x, dtype=float)
    return np.abs(d * x) + eps * (np.abs(x) < _ZERO_TOL)


def _richardson(a: list, v: float = 2.0):
    """Richardson extrapolation of central differences at steps h, h/v, h/v², ... (error O(h²))."""
    a = list(a)
    for m in range(1, len(a)):
        f = v ** (2 * m)
        a = [(a[k + 1] * f - a[k]) / (f - 1) for k in range(len(a) - 1)]
    return a[0]


def jacobian(fun, x, d: float = 1e-4, eps: float = 1e-4, r: int = 4, v: float = 2.0) -> np.ndarray:
    """d fun / d x (fun array-valued), numDeriv's ``jacobian`` defaults; shape fun.shape + (len(x),)."""
    x = np.asarray(x, dtype=float)
    h0 = _steps(x, d, eps)
    cols = []
    for i in range(len(x)):
        a, h = [], h0[i]
        for _ in range(r):
            e = np.zeros_like(x)
            e[i] = h
            a.append((np.asarray(fun(x + e)) - np.asarray(fun(x - e))) / (2 * h))
            h /= v
        cols.append(_richardson(a, v))
    return np.stack(cols, axis=-1)


def hessian(fun, x, d: float = 0.1, eps: float = 1e-4, r: int = 4, v: float = 2.0) -> np.ndarray:
    """Hessian of a scalar function, numDeriv's ``hessian`` (``genD``) with its default steps."""
    x = np.asarray(x, dtype=float)
    n = len(x)
    f0 = fun(x)
    h0 = _steps(x, d, eps)
    H = np.zeros((n, n))
    for i in range(n):
        a, h = [], h0.copy()
        for _ in range(r):
            e = np.zeros(n)
            e[i] = h[i]
            a.append((fun(x + e) - 2 * f0 + fun(x - e)) / h[i] ** 2)
            h /= v
        H[i, i] = _richardson(a, v)
    for i in range(n):
        for j in range(i):
            a, h = [], h0.copy()
            for _ in range(r):
                e = np.zeros(n)
                e[i], e[j] = h[i], h[j]
                a.append((fun(x + e) - 2 * f0 + fun(x - e) - H[i, i] * h[i] ** 2 - H[j, j] * h[j] ** 2)
                         / (2 * h[i] * h[j]))
                h /= v
            H[i, j] = H[j, i] = _richardson(a, v)
    return H


def varpar_covariance(H: np.ndarray) -> tuple[np.ndarray, list[str]]:
    """2 H⁺ (Moore–Penrose over eigenvalues > 1e-8) and lmerTest's warnings about the others."""
    vals, vecs = np.linalg.eigh((H + H.T) / 2)
    notes = []
    neg = vals < -EIGEN_TOL
    zero = np.abs(vals) <= EIGEN_TOL
    if neg.any():
        notes.append(f"Satterthwaite df: the Hessian of the deviance over (theta, sigma) has "
                     f"{int(neg.sum())} negative eigenvalue(s) ({', '.join(f'{v:.1e}' for v in vals[neg])}): "
                     "the model may not have converged")
    if zero.any():
        notes.append(f"Satterthwaite df: the Hessian of the deviance over (theta, sigma) has "
                     f"{int(zero.sum())} eigenvalue(s) close to zero; its generalised inverse is used")
    pos = vals > EIGEN_TOL
    Hinv = (vecs[:, pos] / vals[pos]) @ vecs[:, pos].T
    return 2 * Hinv, notes


def _pieces(model, result):
    """(A, J): the covariance of (θ, σ) and the Jacobian of Cov(β̂) over them, computed once per
    fit (the fit's own df and any later contrasts, such as estimated marginal means, share them)."""
    cached = getattr(result, "_satterthwaite_pieces", None)
    if cached is not None:
        return cached
    if result.sigma is None:
        raise ValueError("Satterthwaite's df need a linear mixed model (a residual σ)")
    varpar = np.concatenate([np.asarray(result.theta, dtype=float), [float(result.sigma)]])
    reml = result.criterion == "REML"
    H = hessian(lambda vp: model.deviance_varpar(vp, reml), varpar)
    A, notes = varpar_covariance(H)
    J = jacobian(model.vcov_varpar, varpar)  # p × p × len(varpar)
    result._satterthwaite_pieces = (A, J, notes)
    return A, J, notes


def contrast_df(model, result, L) -> np.ndarray:
    """Satterthwaite's df of each row l of ``L`` (estimable functions l'β), as lmerTest's
    ``contest1D`` and emmeans with ``lmer.df = "satterthwaite"``."""
    A, J, _ = _pieces(model, result)
    L = np.atleast_2d(np.asarray(L, dtype=float))
    V = model.vcov_varpar(np.concatenate([np.asarray(result.theta, float), [float(result.sigma)]]))
    out = np.empty(len(L))
    for i, ll in enumerate(L):
        g = np.einsum("i,ijk,j->k", ll, J, ll)
        denom = float(g @ A @ g)
        out[i] = 2 * float(ll @ V @ ll) ** 2 / denom if denom > 0 else np.inf
    return out


def satterthwaite_df(model, result) -> tuple[np.ndarray, list[str]]:
    """Satterthwaite's df of each fixed effect (the contrasts e_i) of a fitted LMM ``result`` of
    ``model``, and any warnings."""
    _, _, notes = _pieces(model, result)
    return contrast_df(model, result, np.eye(len(result.fixed))), list(notes)
