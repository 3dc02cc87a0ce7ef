"""What an analyst asks of a fitted mixed model after the fit, with lme4's and statsmodels' names:
``predict`` (new data; conditional on the random effects' modes or at the population level; link
or response scale), ``fitted`` and ``residuals`` (response, Pearson, deviance), ``ranef_condvar``
(the modes with their conditional variances, lme4's ``ranef(fit, condVar = TRUE)``) and
``odds_ratios`` (exp β with Wald intervals, for the binomial GLMM).

Conditional variances: b = Λθu, and given y the spherical effects u have covariance σ²(L L')⁻¹
for an LMM, (L L')⁻¹ at the final PIRLS weights for the GLMM (L L' = Λ'Z'WZΛ + I, the factor the
fit uses), so a level's p × p block is T (A⁻¹)_ll T' (σ² for an LMM), lme4's ``condVar``
(Bates et al. 2015, §5.1; the GLMM's as lme4's, at the conditional modes).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats
from scipy.special import expit, xlogy

__all__ = ["RESIDUAL_TYPES", "fitted", "odds_ratios", "predict", "ranef_condvar", "residuals"]

RESIDUAL_TYPES = ("response", "pearson", "deviance")


def _model(result):
    model = getattr(result, "model", None)
    if model is None or getattr(model, "design", None) is None:
        raise ValueError("the fit carries no model: refit to predict")
    return model


def _modes(result) -> list[np.ndarray]:
    """The conditional modes per random term as n_levels × p arrays, in the design's block order."""
    return [np.asarray(t, float) for t in result.ranef.values()]


def _level_codes(block, data: pd.DataFrame, allow_new_levels: bool) -> np.ndarray:
    import re

    gvars = [re.sub(r"^(?:as\.)?factor\((.*)\)$", r"\1", g.strip()).strip() for g in block.group.split(":")]
    for g in gvars:
        if g not in data.columns:
            raise ValueError(
                f"the new data lack the grouping column {g!r} (use population-level "
                "predictions, re_form='population', to predict without it)"
            )
    key = data[gvars[0]].astype(str)
    for g in gvars[1:]:
        key = key + ":" + data[g].astype(str)
    index = {str(lv): i for i, lv in enumerate(block.levels)}
    codes = key.map(index)
    new = codes.isna()
    if new.any() and not allow_new_levels:
        shown = ", ".join(sorted(set(key[new]))[:5])
        raise ValueError(
            f"new levels of {block.group} in the data ({shown}): pass "
            "allow_new_levels=True to predict them at the population level, as lme4"
        )
    return codes.fillna(-1).to_numpy(dtype=np.int64)


def predict(
    result,
    newdata: pd.DataFrame | None = None,
    re_form: str = "conditional",
    type: str = "response",
    allow_new_levels: bool = False,
) -> np.ndarray:
    """Predictions as lme4's ``predict(fit, newdata, re.form, type)``: ``re_form`` "conditional"
    (the random effects' conditional modes added; lme4's default) or "population" (``re.form =
    NA``: fixed effects only); ``type`` "link" or "response" (probabilities for the GLMM). A level
    of a grouping factor the fit never saw is refused unless ``allow_new_levels`` (then its random
    effect is zero, as lme4's)."""
    if re_form not in ("conditional", "population"):
        raise ValueError("re_form must be 'conditional' or 'population'")
    if type not in ("link", "response"):
        raise ValueError("type must be 'link' or 'response'")
    model = _model(result)
    design = model.design
    beta = result.fixed["estimate"].to_numpy(float)
    if newdata is None:
        eta = np.asarray(model.X) @ beta
        if design.offset is not None:
            eta = eta + design.offset
        if re_form == "conditional" and result.ranef:
            b = np.concatenate([m.ravel() for m in _modes(result)])
            eta = eta + model.rs.Z @ b
    else:
        data = newdata.reset_index(drop=True)
        eta = design.fixed_matrix(data) @ beta
        if design.offsets:
            eta = eta + design.offset_values(data)
        if re_form == "conditional":
            for block, modes in zip(design.blocks, _modes(result)):
                codes = _level_codes(block, data, allow_new_levels)
                Xr = np.asarray(block.spec.get_model_matrix(data, na_action="raise"), float)
                known = codes >= 0
                contrib = np.zeros(len(data))
                contrib[known] = np.sum(Xr[known] * modes[codes[known]], axis=1)
                eta = eta + contrib
    if type == "response" and result.kind == "glmm":
        return expit(eta)
    return np.asarray(eta, float)


def fitted(result) -> np.ndarray:
    """lme4's ``fitted()``: the conditional predictions on the response scale at the fitted rows."""
    return predict(result, None, "conditional", "response")


def residuals(result, type: str = "response") -> np.ndarray:
    """lme4's ``residuals(fit, type)`` at the fitted rows, conditional on the modes: ``response``
    y − μ (a proportion for aggregated binomial rows), ``pearson`` (y − μ)/√(V(μ)/n) (for an LMM
    the response residuals, as lme4's unscaled Pearson residuals), ``deviance``
    sign(y − μ)√dᵢ (an LMM's are its response residuals)."""
    if type not in RESIDUAL_TYPES:
        raise ValueError(f"type must be one of {', '.join(RESIDUAL_TYPES)}")
    model = _model(result)
    mu = fitted(result)
    if result.kind == "lmm":
        y = np.asarray(model.y, float)
        if model.design.offset is not None:
            y = y + model.design.offset  # the LMM stores y − offset
        return y - mu
    y = np.asarray(model.y, float)
    n = np.asarray(model.n_trials, float)
    r = y - mu
    if type == "response":
        return r
    if type == "pearson":
        return r * np.sqrt(n) / np.sqrt(mu * (1 - mu))
    d = 2 * n * (xlogy(y, y) - xlogy(y, mu) + xlogy(1 - y, 1 - y) - xlogy(1 - y, 1 - mu))
    return np.sign(r) * np.sqrt(np.clip(d, 0, None))


def _conditional_u_cov(result):
    """(A⁻¹ restricted to each level's own block of u, scale): per block a list of p × p arrays."""
    model = _model(result)
    rs = model.rs
    theta = np.asarray(result.theta, float)
    if result.kind == "lmm":
        L = model._solve(theta)["L"]
        scale = float(result.sigma) ** 2
    else:
        beta = result.fixed["estimate"].to_numpy(float)
        L = model._pirls(theta, beta)[1]["L"]
        scale = 1.0
    q = rs.q
    blocks, off = [], 0
    for blk in rs.blocks:
        p, nl = blk.p, blk.n_levels
        out = np.empty((nl, p, p))
        # A⁻¹'s columns of this block in chunks: q solves in all, never a q × q inverse on the
        # sparse path
        chunk = max(1, 2048 // p) * p
        for start in range(0, nl * p, chunk):
            cols = np.arange(off + start, min(off + nl * p, off + start + chunk))
            E = np.zeros((q, len(cols)))
            E[cols, np.arange(len(cols))] = 1.0
            Ainv = L.solve_t(L.solve(E))
            for k, c in enumerate(cols):
                lvl, j = divmod(c - off, p)
                out[lvl, :, j] = Ainv[off + lvl * p : off + lvl * p + p, k]
        blocks.append(out)
        off += nl * p
    return blocks, scale


def ranef_condvar(result) -> pd.DataFrame:
    """lme4's ``ranef(fit, condVar = TRUE)`` as one long table: {group, level, term, mode,
    condvar, condsd}, one row per level and term."""
    model = _model(result)
    ucov, scale = _conditional_u_cov(result)
    rows = []
    for blk, T, C, modes in zip(
        model.rs.blocks, model.rs.templates(np.asarray(result.theta, float)), ucov, _modes(result)
    ):
        V = scale * np.einsum("ij,ljk,mk->lim", T, C, T)  # T C_l T' per level
        for li, level in enumerate(blk.levels):
            for j, term in enumerate(blk.columns):
                v = float(V[li, j, j])
                rows.append(
                    {
                        "group": blk.group,
                        "level": str(level),
                        "term": term,
                        "mode": float(modes[li, j]),
                        "condvar": v,
                        "condsd": float(np.sqrt(max(v, 0))),
                    }
                )
    return pd.DataFrame(rows, columns=["group", "level", "term", "mode", "condvar", "condsd"])


def odds_ratios(result, level: float = 0.95) -> pd.DataFrame:
    """exp(β) with Wald intervals exp(β ± z·SE) for a binomial GLMM (``exp(cbind(OR = fixef(fit),
    confint(fit, method = "Wald")))`` in R)."""
    if result.kind != "glmm":
        raise ValueError("odds ratios are for the binomial GLMM (logit link)")
    f = result.fixed
    z = stats.norm.isf((1 - level) / 2)
    est, se = f["estimate"].to_numpy(float), f["std_error"].to_numpy(float)
    return pd.DataFrame(
        {
            "term": f["term"].to_numpy(),
            "odds_ratio": np.exp(est),
            "ci_low": np.exp(est - z * se),
            "ci_high": np.exp(est + z * se),
            "p": f["p"].to_numpy(float),
        }
    )
