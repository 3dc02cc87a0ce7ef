"""Rendering of a fitted mixed model (``MixedResult``): the text summary for people, laid out as lme4's
``summary(merMod)`` prints it, and the plain dictionary for machines (the CLI's ``--json``, version 1
of the contract in docs/contracts.md §4, checked against ``analysis/schema/results-v1.json``).

Kept apart from the fitting code of ``_mixed.py`` so that the fit and its presentation change
independently; nothing here imports the fitting modules. Fields the fitting side may or may not set
(``notes``, ``aliased``, ``response``, ``n_dropped``, ``gradient_max``, ``offset``) are read with
defaults, so a result without them renders as one whose checks found nothing.
"""

from __future__ import annotations

import math

import numpy as np
import scipy.special as sc

SCHEMA_VERSION = "1"
SINGULAR_LINE = "boundary (singular) fit: see help('isSingular')"


# -- what the summary and the JSON share --------------------------------------------------------------
def _num(v):
    if v is None:
        return None
    v = float(v)
    return v if math.isfinite(v) else None


def statistic_kind(result) -> str:
    """``t`` when the fixed-effect tests are t tests on denominator df (Satterthwaite), else ``z``."""
    return "t" if "t" in result.fixed.columns else "z"


def response_name(result) -> str:
    given = getattr(result, "response", None)
    if given:
        return str(given)
    return result.formula.split("~", 1)[0].strip()


def data_name(result, data: str | None = None) -> str | None:
    return data if data is not None else getattr(result, "data_name", None)


def _fitted_parts(result):
    """(y, fitted linear predictor, prior weights) from the result's model and its conditional modes, or
    None when the result carries no model (a result rebuilt from numbers)."""
    model = getattr(result, "model", None)
    if model is None or not hasattr(model, "X") or not hasattr(model, "rs"):
        return None
    beta = result.fixed["estimate"].to_numpy(float)
    X = np.asarray(model.X)
    if X.shape[1] != len(beta):
        return None
    # ranef_tables stores the modes block by block, level by level, term by term: Z's column order
    b = np.concatenate([np.asarray(t, float).ravel() for t in result.ranef.values()]) if result.ranef else np.zeros(0)
    Z = model.rs.Z
    eta = X @ beta + (Z @ b if Z.shape[1] == len(b) and len(b) else 0.0)
    offset = getattr(model, "offset", None)
    if offset is not None and np.ndim(offset) == 1 and len(offset) == len(eta):
        eta = eta + offset
    return np.asarray(model.y, float), eta, getattr(model, "n_trials", None)


def scaled_residuals(result) -> np.ndarray | None:
    """lme4's ``residuals(fit, type = "pearson", scaled = TRUE)``: for an LMM (y − ŷ)/σ, for the binomial
    GLMM the Pearson residuals (y − μ)·√n / √(μ(1 − μ)), conditional on the random effects' modes."""
    parts = _fitted_parts(result)
    if parts is None:
        return None
    y, eta, n = parts
    if result.kind == "lmm":
        if not result.sigma:
            return None
        return (y - eta) / result.sigma
    mu = sc.expit(eta)
    n = np.ones_like(y) if n is None else np.asarray(n, float)
    with np.errstate(divide="ignore", invalid="ignore"):
        return (y - mu) * np.sqrt(n) / np.sqrt(mu * (1 - mu))


def _quantiles(r: np.ndarray | None) -> dict | None:
    if r is None:
        return None
    r = r[np.isfinite(r)]
    if not len(r):
        return None
    # numpy's default "linear" method is R's quantile type 7, which summary.merMod uses
    q = np.quantile(r, [0, 0.25, 0.5, 0.75, 1])
    return dict(zip(("min", "q1", "median", "q3", "max"), map(float, q)))


# a correlation this close to ±1 is on the boundary: lme4 prints it as ±1.00 with its
# "boundary (singular) fit" line, the covariance matrix having a zero eigenvalue
CORR_BOUNDARY = 1 - 1e-4


def corr_at_boundary(corr, group_singular: bool) -> bool:
    """A random-effect correlation at ±1 (or undefined because a variance in its singular group is
    zero): the covariance matrix of its group is singular, as lme4's ``isSingular`` says."""
    c = float(corr)
    if not math.isfinite(c):
        return bool(group_singular)
    return bool(abs(c) >= CORR_BOUNDARY or (group_singular and abs(c) >= 0.99))


def fixed_correlation(result) -> np.ndarray:
    v = np.asarray(result.vcov, float)
    d = np.sqrt(np.clip(np.diag(v), 0, None))
    with np.errstate(divide="ignore", invalid="ignore"):
        return v / np.outer(d, d)


def convergence_messages(result) -> list[str]:
    out = []
    if not result.converged:
        out.append("the optimiser did not report convergence")
    out += [str(w) for w in result.warnings if "converge" in str(w).lower() or "gradient" in str(w).lower()]
    return out


def df_resid(result) -> int:
    return int(result.nobs - result.n_params)


# -- JSON -----------------------------------------------------------------------------------------------
def to_dict(result, data: str | None = None) -> dict:
    """The result as plain JSON-ready data: the shape docs/contracts.md §4 documents, one shape for the
    GLMM and the LMM (the keys that do not apply hold null)."""
    kind = statistic_kind(result)
    stat_col = kind
    has_df = "df" in result.fixed.columns
    fixed = []
    for r in result.fixed.to_dict(orient="records"):
        fixed.append({
            "term": str(r["term"]), "estimate": _num(r["estimate"]), "std_error": _num(r["std_error"]),
            "statistic": _num(r[stat_col]), "statistic_kind": kind,
            "df": _num(r["df"]) if has_df else None, "p": _num(r["p"]),
        })
    names = [str(t) for t in result.fixed["term"]]
    corr = fixed_correlation(result) if len(names) else np.zeros((0, 0))
    reml = result.criterion == "REML"
    gmax = getattr(result, "gradient_max", None)
    return {
        "schema_version": SCHEMA_VERSION,
        "kind": result.kind,
        "family": "binomial" if result.kind == "glmm" else "gaussian",
        "link": "logit" if result.kind == "glmm" else "identity",
        "formula": result.formula,
        "response": response_name(result),
        "data": data_name(result, data),
        "offset": getattr(result, "offset", None),
        "criterion": result.criterion,
        "nobs": int(result.nobs),
        "n_params": int(result.n_params),
        "df_resid": df_resid(result),
        "groups": [{"group": str(g), "levels": int(n)} for g, n in result.ngroups.items()],
        "random": [
            {"group": str(r.group), "term": str(r.term), "variance": _num(r.variance), "sd": _num(r.sd)}
            for r in result.random.itertuples()
        ],
        "random_corr": [
            {"group": str(r.group), "term1": str(r.term1), "term2": str(r.term2),
             "covariance": _num(r.covariance), "corr": _num(r.corr),
             "singular": corr_at_boundary(r.corr, str(r.group) in map(str, result.singular_groups))}
            for r in result.correlations.itertuples()
        ] if len(result.correlations) else [],
        "sigma": _num(result.sigma),
        "loglik": _num(result.loglik),
        "aic": _num(result.aic),
        "bic": _num(result.bic),
        # lme4 prints −2 logLik as the GLMM's (and an ML fit's) deviance; a REML fit has its criterion
        "deviance": None if reml else _num(-2 * result.loglik),
        "reml_criterion": _num(result.deviance) if reml else None,
        "ddf": result.ddf,
        "se_method": result.se_method or None,
        "fixed": fixed,
        "fixed_corr": {"terms": names, "matrix": [[_num(v) for v in row] for row in corr]},
        "scaled_residuals": _quantiles(scaled_residuals(result)),
        "converged": bool(result.converged),
        "convergence": {"converged": bool(result.converged), "gradient_max": _num(gmax),
                        "messages": convergence_messages(result)},
        "singular": bool(result.singular),
        "singular_groups": [str(g) for g in result.singular_groups],
        "warnings": [str(w) for w in result.warnings],
        "notes": [str(n) for n in getattr(result, "notes", []) or []],
        "aliased": [str(a) for a in getattr(result, "aliased", []) or []],
        "n_dropped": {str(k): int(v) for k, v in (getattr(result, "n_dropped", {}) or {}).items()},
    }


# -- R's number formatting ------------------------------------------------------------------------------
def _decimals(values, digits: int) -> int:
    """Decimals R's ``format(x, digits = d)`` gives a column: enough for every finite entry to show
    ``digits`` significant digits, trailing zeros common to all dropped."""
    need = 0
    for v in values:
        if v is None or not math.isfinite(v) or v == 0:
            continue
        dec = max(0, digits - 1 - math.floor(math.log10(abs(v))))
        # as R: no more decimals than the value needs at this precision
        s = f"{abs(v):.{dec}f}".rstrip("0")
        need = max(need, len(s.split(".")[1]) if "." in s else 0)
    return min(need, 15)


def format_column(values, digits: int = 4) -> list[str]:
    dec = _decimals(values, digits)
    return ["NaN" if v is None or not math.isfinite(v) else f"{v:.{dec}f}" for v in values]


def format_p(p: float) -> str:
    """R's ``format.pval`` as ``printCoefmat`` calls it: ``< 2e-16`` below machine precision."""
    if p is None or not math.isfinite(p):
        return "NA"
    if p < 2.2e-16:
        return "< 2e-16"
    if p < 1e-4:
        return f"{p:.3g}"
    # three significant digits in fixed notation: 0.545, 0.00121
    return f"{p:.{max(0, 2 - math.floor(math.log10(p)))}f}"


def signif_stars(p: float) -> str:
    if p is None or not math.isfinite(p):
        return ""
    return "***" if p < 0.001 else "**" if p < 0.01 else "*" if p < 0.05 else "." if p < 0.1 else ""


def abbreviate(name: str, minlength: int = 6) -> str:
    """R's ``abbreviate()``, which lme4 uses for the columns of the correlation of fixed effects
    (``(Intercept)`` → ``(Intr)``): lower-case vowels go first, from the right, then lower-case letters,
    never the first character."""
    chars = list(name.replace(" ", ""))
    for pick in (lambda c: c in "aeiou", str.islower):
        i = len(chars) - 1
        while len(chars) > minlength and i > 0:
            if pick(chars[i]):
                del chars[i]
            i -= 1
    return "".join(chars[:max(minlength, 1)]) if len(chars) > minlength else "".join(chars)


def _table(rows: list[list[str]], align: list[str]) -> list[str]:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    out = []
    for r in rows:
        cells = [c.ljust(w) if a == "l" else c.rjust(w) for c, w, a in zip(r, widths, align)]
        out.append(" ".join(cells).rstrip())
    return out


# -- text -----------------------------------------------------------------------------------------------
def title(result) -> str:
    if result.kind == "glmm":
        return ("Generalized linear mixed model fit by maximum likelihood (Laplace Approximation)\n"
                " Family: binomial  ( logit )")
    line = f"Linear mixed model fit by {result.criterion}"
    if result.ddf in ("Satterthwaite", "Kenward-Roger"):
        line += f". t-tests use {result.ddf}'s method"
    return line


def _criteria_lines(result) -> list[str]:
    if result.criterion == "REML":
        return [f"REML criterion at convergence: {result.deviance:.1f}"]
    names = ["AIC", "BIC", "logLik", "deviance", "df.resid"]
    vals = [f"{result.aic:.1f}", f"{result.bic:.1f}", f"{result.loglik:.1f}", f"{-2 * result.loglik:.1f}",
            f"{df_resid(result)}"]
    w = [max(8, len(n), len(v)) for n, v in zip(names, vals)]
    return [" ".join(n.rjust(k) for n, k in zip(names, w)), " ".join(v.rjust(k) for v, k in zip(vals, w))]


def _random_lines(result) -> list[str]:
    rnd = result.random
    var = format_column([float(v) for v in rnd["variance"]])
    sd = format_column([float(v) for v in rnd["sd"]])
    corr = result.correlations
    has_corr = len(corr) > 0
    rows = [["Groups", "Name", "Variance", "Std.Dev."] + (["Corr"] if has_corr else [])]
    last_group = None
    terms_of: dict = {}
    for r in rnd.itertuples():
        terms_of.setdefault(r.group, []).append(r.term)
    for i, r in enumerate(rnd.itertuples()):
        group = "" if r.group == last_group else str(r.group)
        last_group = r.group
        row = [group, str(r.term), var[i], sd[i]]
        if has_corr:
            # lme4 prints the lower triangle: a term's correlations with the terms before it
            terms = terms_of[r.group]
            k = terms.index(r.term) if r.term in terms else 0
            cells = []
            for prev in terms[:k]:
                hit = corr[(corr["group"] == r.group) & (corr["term1"] == prev) & (corr["term2"] == r.term)]
                c = float(hit["corr"].iloc[0]) if len(hit) else float("nan")
                cells.append(f"{c:5.2f}" if math.isfinite(c) else "  NaN")
            row.append(" ".join(cells))
        rows.append(row)
    lines = _table(rows, ["l", "l", "r", "r"] + (["l"] if has_corr else []))
    return [" " + line for line in lines]


def _fixed_lines(result) -> list[str]:
    f = result.fixed
    kind = statistic_kind(result)
    has_df = "df" in f.columns
    est = format_column([float(v) for v in f["estimate"]] + [float(v) for v in f["std_error"]])
    n = len(f)
    head = ["", "Estimate", "Std. Error"] + (["df"] if has_df else []) + [f"{kind} value", f"Pr(>|{kind}|)", ""]
    rows = [head]
    for i, r in enumerate(f.itertuples()):
        stat = float(getattr(r, kind))
        p = float(r.p)
        row = [str(r.term), est[i], est[n + i]]
        if has_df:
            row.append(f"{float(r.df):.3f}" if math.isfinite(float(r.df)) else "NaN")
        row += [f"{stat:.3f}" if math.isfinite(stat) else "NaN", format_p(p), signif_stars(p)]
        rows.append(row)
    lines = _table(rows, ["l"] + ["r"] * (len(head) - 2) + ["l"])
    lines.append("---")
    lines.append("Signif. codes:  0 '***' 0.001 '**' 0.01 '*' 0.05 '.' 0.1 ' ' 1")
    if result.kind == "lmm" and kind == "z":
        lines.append("(LMM with --ddf normal: Wald z tests, the large-sample approximation to t)")
    return lines


def _fixed_corr_lines(result) -> list[str]:
    names = [str(t) for t in result.fixed["term"]]
    if len(names) < 2:
        return []
    c = fixed_correlation(result)
    short = [abbreviate(t) for t in names]
    rows = [[""] + short[:-1]]
    for i in range(1, len(names)):
        rows.append([names[i]] + [f"{c[i, j]:.3f}" for j in range(i)] + [""] * (len(names) - 1 - i))
    return _table(rows, ["l"] + ["r"] * (len(names) - 1))


def summary(result, data: str | None = None, correlation: bool = False) -> str:
    """The result as lme4's ``summary()`` prints it: title, formula and data, the information criteria
    (or the REML criterion), scaled residuals, random effects with a Corr column, number of observations
    and groups, fixed effects, optionally their correlation, then notes, warnings and lme4's
    convergence and singularity lines."""
    lines = [title(result), f"Formula: {result.formula}"]
    name = data_name(result, data)
    if name:
        lines.append(f"   Data: {name}")
    if getattr(result, "offset", None):
        lines.append(f" Offset: {result.offset}")
    lines += [""] + _criteria_lines(result)
    q = _quantiles(scaled_residuals(result))
    if q:
        vals = [f"{v:.4f}" for v in q.values()]
        w = [max(len(v), 7) for v in vals]
        lines += ["", "Scaled residuals: ",
                  " ".join(h.rjust(k) for h, k in zip(["Min", "1Q", "Median", "3Q", "Max"], w)),
                  " ".join(v.rjust(k) for v, k in zip(vals, w))]
    lines += ["", "Random effects:"] + _random_lines(result)
    groups = "; ".join(f"{g}, {k}" for g, k in result.ngroups.items())
    lines.append(f"Number of obs: {result.nobs}, groups:  {groups}")
    lines += ["", "Fixed effects:"] + _fixed_lines(result)
    if correlation:
        cl = _fixed_corr_lines(result)
        if cl:
            lines += ["", "Correlation of Fixed Effects:"] + cl
    aliased = getattr(result, "aliased", []) or []
    if aliased:
        lines += ["", f"fixed-effect model matrix is rank deficient so dropping {len(aliased)} column"
                      f"{'s' if len(aliased) > 1 else ''} / coefficient{'s' if len(aliased) > 1 else ''}: "
                      + ", ".join(map(str, aliased))]
    notes = [str(n) for n in getattr(result, "notes", []) or []]
    if notes:
        lines += [""] + [f"note: {n}" for n in notes]
    tail = []
    gmax = getattr(result, "gradient_max", None)
    if not result.converged:
        tail.append("convergence: the optimiser did not report convergence"
                    + (f" (max|grad| = {gmax:.3g})" if gmax is not None and math.isfinite(gmax) else ""))
    if result.singular:
        tail += [SINGULAR_LINE, f"  (singular: {', '.join(map(str, result.singular_groups))})"]
    for w in result.warnings:
        if str(w).startswith("boundary (singular) fit"):
            continue  # said by lme4's own line above; the groups stay in the JSON's singular_groups
        tail.append(f"warning: {w}")
    if tail:
        lines += [""] + tail
    return "\n".join(lines)
