"""Rendering of a fitted mixed model (``MixedResult``): the text summary for people and the plain
dictionary for machines (the CLI's ``--json``). Kept apart from the fitting code of ``_mixed.py`` so
that the fit and its presentation change independently; nothing here imports the fitting modules.
"""

from __future__ import annotations

import math


def to_dict(result) -> dict:
    """The result as plain JSON-ready data (the CLI's ``--json``)."""
    def num(v):
        v = float(v)
        return v if math.isfinite(v) else None

    stat_cols = [c for c in ("df", "t", "z") if c in result.fixed.columns]
    return {
        "fixed": [
            {"term": r["term"], "estimate": num(r["estimate"]), "std_error": num(r["std_error"]),
             **{c: num(r[c]) for c in stat_cols}, "p": num(r["p"])}
            for r in result.fixed.to_dict(orient="records")
        ],
        "random": [
            {"group": r.group, "term": r.term, "variance": num(r.variance), "sd": num(r.sd)}
            for r in result.random.itertuples()
        ],
        "loglik": num(result.loglik),
        "aic": num(result.aic),
        "bic": num(result.bic),
        "nobs": int(result.nobs),
        "converged": bool(result.converged),
        "criterion": result.criterion,
        "ddf": result.ddf,
        "singular": result.singular,
        "warnings": list(result.warnings),
    }

def summary(result) -> str:
    """The result as text for people."""
    title = {
        "glmm": "Generalized linear mixed model fit by maximum likelihood (Laplace "
        "approximation) [binomial, logit]",
        "lmm": f"Linear mixed model fit by {result.criterion}"
        + (" (t tests use Satterthwaite's method)" if result.ddf == "Satterthwaite" else ""),
    }[result.kind]
    lines = [title, f"Formula: {result.formula}", ""]
    if result.criterion == "REML":
        lines.append(f"REML criterion at convergence: {result.deviance:.4f}")
    lines.append(
        f"     AIC      BIC   logLik  -2logLik\n"
        f"{result.aic:8.1f} {result.bic:8.1f} {result.loglik:8.1f} {-2 * result.loglik:9.1f}"
    )
    lines += ["", "Random effects:", f" {'Groups':<14}{'Name':<16}{'Variance':>12}{'Std.Dev.':>12}"]
    for r in result.random.itertuples():
        lines.append(f" {r.group:<14}{r.term:<16}{r.variance:12.6g}{r.sd:12.6g}")
    if len(result.correlations):
        for r in result.correlations.itertuples():
            lines.append(f" Corr({r.group}: {r.term1}, {r.term2}) = {r.corr:.3f}")
    groups = ", ".join(f"{g}, {k}" for g, k in result.ngroups.items())
    lines.append(f"Number of obs: {result.nobs}, groups:  {groups}")
    lines += ["", "Fixed effects:"]
    if "df" in result.fixed.columns:
        lines.append(f"{'':<24}{'Estimate':>12}{'Std. Error':>12}{'df':>10}{'t value':>10}{'Pr(>|t|)':>11}")
        for r in result.fixed.itertuples():
            lines.append(f"{r.term:<24}{r.estimate:12.6g}{r.std_error:12.4g}{r.df:10.2f}{r.t:10.3f}{r.p:11.3g}")
    else:
        stat = "z value" if result.kind == "glmm" else "t value"
        lines.append(f"{'':<24}{'Estimate':>12}{'Std. Error':>12}{stat:>10}{'Pr(>|z|)':>11}")
        for r in result.fixed.itertuples():
            lines.append(f"{r.term:<24}{r.estimate:12.6g}{r.std_error:12.4g}{r.z:10.3f}{r.p:11.3g}")
        if result.kind == "lmm":
            lines.append("(p from the normal approximation to t, as for large samples)")
    if not result.converged:
        lines.append("WARNING: the optimiser did not report convergence")
    lines += [f"WARNING: {w}" for w in result.warnings]
    return "\n".join(lines)
