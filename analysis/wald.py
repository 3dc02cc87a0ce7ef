"""A Wald test per fixed-effect term of a fitted mixed model (Type III): as
``car::Anova(fit, type = 3)`` for the binomial GLMM (χ² = b'V⁻¹b on q df), and as lmerTest's
``anova(fit)`` for an LMM: F = χ²/q on Kenward–Roger's df and scaling (pbkrtest, on the adjusted
covariance) or on Satterthwaite's multi-df rule (lmerTest's ``contestMD``: the one-df Satterthwaite
df ν_m of the eigen-directions of LVL', E = Σ ν_m/(ν_m − 2), df = 2E/(E − q)).

A term's columns come from formulaic's model spec (``term_indices``). With treatment contrasts (R's
default and ours) a main effect inside an interaction is tested at the reference levels of the
other factors, as car's Type III is with them. Kept apart from ``analysis.compare`` so that the
results object can offer it without an import loop.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from scipy import stats

from .summary import format_p, signif_stars

__all__ = ["wald_summary", "wald_table"]


def _term_columns(result) -> dict[str, list[int]]:
    """Fixed-effect term → its columns in the fit's X (aliased columns left out)."""
    design = result.model.design
    spec = design.fixed_spec
    names = list(design.fixed_names)
    mm_names = [design.translate.column_name(c) for c in spec.column_names]
    out = {}
    for term, idx in spec.term_indices.items():
        label = design.translate.column_name(str(term))
        if label in ("1", "(Intercept)"):
            label = "(Intercept)"
        cols = [names.index(mm_names[i]) for i in idx if mm_names[i] in names]
        if cols:
            out[label] = cols
    return out


def _satterthwaite_md(result, L) -> float:
    """lmerTest's ``contestMD`` df for a q-row hypothesis."""
    from .satterthwaite import contrast_df

    VL = L @ np.asarray(result.vcov, float) @ L.T
    _, vecs = np.linalg.eigh((VL + VL.T) / 2)
    rows = vecs.T @ L
    nu = contrast_df(result.model, result, rows)
    q = len(L)
    big = nu > 2
    E = float(np.sum(nu[big] / (nu[big] - 2)))
    return 2 * E / (E - q) if q < E else np.nan


def wald_table(result, intercept: bool = False) -> pd.DataFrame:
    """A Wald test per fixed-effect term: {term, df (numerator), statistic, statistic_kind,
    den_df, p}. GLMM (and LMM with ddf normal): χ²; LMM: F on Satterthwaite's or Kenward–Roger's
    denominator df."""
    beta = result.fixed["estimate"].to_numpy(float)
    V = np.asarray(result.vcov, float)
    rows = []
    for term, cols in _term_columns(result).items():
        if term == "(Intercept)" and not intercept:
            continue
        q = len(cols)
        L = np.zeros((q, len(beta)))
        L[np.arange(q), cols] = 1.0
        b = L @ beta
        chisq = float(b @ np.linalg.solve(L @ V @ L.T, b))
        if result.kind == "lmm" and result.ddf in ("Satterthwaite", "Kenward-Roger"):
            if result.ddf == "Kenward-Roger":
                from .kenward_roger import kenward_roger

                den, scale = kenward_roger(result.model, result).df(L)
                # V is Φ_A already: pbkrtest's scaled F
                F = (scale if math.isfinite(scale) else 1.0) * chisq / q
            else:
                den, F = _satterthwaite_md(result, L), chisq / q
            p = float(stats.f.sf(F, q, den)) if math.isfinite(den) else float("nan")
            rows.append({"term": term, "df": q, "statistic": F, "statistic_kind": "F", "den_df": den, "p": p})
        else:
            rows.append(
                {
                    "term": term,
                    "df": q,
                    "statistic": chisq,
                    "statistic_kind": "chisq",
                    "den_df": None,
                    "p": float(stats.chi2.sf(chisq, q)),
                }
            )
    return pd.DataFrame(rows, columns=["term", "df", "statistic", "statistic_kind", "den_df", "p"])


def wald_summary(table: pd.DataFrame, result) -> str:
    if not len(table):
        return "no fixed-effect terms to test"
    F = table["statistic_kind"].iloc[0] == "F"
    title = (
        "Type III Analysis of Variance Table with " + result.ddf + "'s method"
        if F
        else "Analysis of Deviance Table (Type III Wald chisquare tests)"
    )
    head = ["", "NumDF", "DenDF", "F value", "Pr(>F)", ""] if F else ["", "Chisq", "Df", "Pr(>Chisq)", ""]
    rows = [head]
    for r in table.itertuples():
        if F:
            rows.append([r.term, str(r.df), f"{r.den_df:.3f}", f"{r.statistic:.4f}", format_p(r.p), signif_stars(r.p)])
        else:
            rows.append([r.term, f"{r.statistic:.4f}", str(r.df), format_p(r.p), signif_stars(r.p)])
    widths = [max(len(t[i]) for t in rows) for i in range(len(head))]
    lines = [title, ""]
    for t in rows:
        lines.append(" ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(t, widths))).rstrip())
    lines += ["---", "Signif. codes:  0 '***' 0.001 '**' 0.01 '*' 0.05 '.' 0.1 ' ' 1"]
    return "\n".join(lines)
