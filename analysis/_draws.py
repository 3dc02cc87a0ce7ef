"""Responses drawn from a fitted mixed model (``MixedResult``), for the parametric bootstrap
(analysis.intervals) and the simulation-based residual check (analysis.residuals)."""

from __future__ import annotations

import numpy as np
from scipy.special import expit

__all__ = ["fitted_mean", "simulate_response"]


def simulate_response(result, rng: np.random.Generator) -> np.ndarray:
    """One response vector from the fitted model with new random effects, lme4's ``simulate(fit,
    use.u = FALSE)`` (what bootMer's parametric bootstrap and DHARMa's default draw): a GLMM's as
    proportions of each row's trials, an LMM's on the response's scale (offset removed)."""
    model = result.model
    rs = model.rs
    u = rng.standard_normal(rs.q)
    re = rs.mul(rs.zl(result.theta), u) if rs.q else 0.0
    xb = model.X @ result.params.to_numpy(float)
    if result.kind == "glmm":
        mu = expit(xb + model.offset + re)
        return rng.binomial(model.n_trials.astype(np.int64), mu) / model.n_trials
    return xb + result.sigma * (re + rng.standard_normal(len(xb)))


def fitted_mean(result, conditional: bool = True) -> np.ndarray:
    """The fitted mean on the scale ``simulate_response`` draws: given the conditional modes (lme4's
    ``fitted()``), or with the random effects at zero (``predict(fit, re.form = ~0, type =
    "response")``) when not ``conditional``."""
    model = result.model
    b = (
        np.concatenate([np.asarray(t, float).ravel() for t in result.ranef.values()])
        if result.ranef and conditional
        else np.zeros(0)
    )
    eta = model.X @ result.params.to_numpy(float)
    if len(b):
        eta = eta + model.rs.Z @ b
    if result.kind == "glmm":
        return expit(eta + model.offset)
    return eta
