"""Comparing fitted mixed models: nested likelihood-ratio tests as lme4's ``anova(m1, m2, …)``;
the Wald table per fixed-effect term (Type III) is ``analysis.wald``'s, re-exported here.

``anova`` refits REML fits by ML (as lme4 does) and takes each χ² from ``_mixed.lrt``; before that
it refuses models fitted to different rows (``_mixed.same_data``) and models that are not nested:
the smaller model's fixed-effect columns must lie in the span of the larger's, and each of its
random terms must be one of the larger's terms or a subset of one (same grouping factor).
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from ._mixed import lrt, same_data
from .summary import SCHEMA_VERSION, format_p, signif_stars
from .wald import wald_summary, wald_table

__all__ = ["AnovaTable", "NotNestedError", "anova", "check_nested", "wald_summary", "wald_table"]


class NotNestedError(ValueError):
    """Two models of which neither is a special case of the other."""


def _column_space_within(Xs: np.ndarray, Xb: np.ndarray, tol: float = 1e-7) -> bool:
    if Xs.shape[1] == 0:
        return True
    coef, *_ = np.linalg.lstsq(Xb, Xs, rcond=None)
    resid = Xs - Xb @ coef
    return bool(np.max(np.abs(resid)) <= tol * max(1.0, float(np.max(np.abs(Xs)))))


def _random_within(small, big) -> bool:
    for b in small.model.design.blocks:
        if not any(c.group == b.group and set(b.columns) <= set(c.columns) for c in big.model.design.blocks):
            return False
    return True


def check_nested(small, big) -> None:
    """Raise ``NotNestedError`` unless ``small`` is nested in ``big`` (fixed and random parts)."""
    if small.kind != big.kind:
        raise NotNestedError(f"a {small.kind} and a {big.kind} are not nested models")
    if small.model is None or big.model is None:
        raise NotNestedError("the fits carry no model: nesting cannot be checked")
    if not _column_space_within(small.model.X, big.model.X):
        raise NotNestedError(
            f"the fixed effects of {small.formula!r} are not within those of {big.formula!r}: the models are not nested"
        )
    if not _random_within(small, big):
        raise NotNestedError(
            f"the random effects of {small.formula!r} are not within those of "
            f"{big.formula!r}: the models are not nested"
        )


@dataclass
class AnovaTable:
    """``rows``: one per model in increasing number of parameters (npar, AIC, BIC, logLik,
    deviance, chisq, df, p; the first model's test columns empty), as lme4's anova prints."""

    rows: pd.DataFrame
    refitted_ml: bool

    def summary(self) -> str:
        r = self.rows
        lines = ["Data: (the same rows for every model)", "Models:"]
        for i, f in enumerate(r["formula"]):
            lines.append(f"m{i + 1}: {f}")
        head = ["", "npar", "AIC", "BIC", "logLik", "deviance", "Chisq", "Df", "Pr(>Chisq)", ""]
        table = [head]
        for i, x in enumerate(r.itertuples()):
            test = x.chisq is not None and math.isfinite(x.chisq) if x.chisq is not None else False
            table.append(
                [
                    f"m{i + 1}",
                    str(x.npar),
                    f"{x.aic:.2f}",
                    f"{x.bic:.2f}",
                    f"{x.loglik:.2f}",
                    f"{x.deviance:.2f}",
                    f"{x.chisq:.4f}" if test else "",
                    str(int(x.df)) if test else "",
                    format_p(x.p) if test else "",
                    signif_stars(x.p) if test else "",
                ]
            )
        widths = [max(len(t[i]) for t in table) for i in range(len(head))]
        for t in table:
            lines.append(
                " ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(t, widths))).rstrip()
            )
        lines.append("---")
        lines.append("Signif. codes:  0 '***' 0.001 '**' 0.01 '*' 0.05 '.' 0.1 ' ' 1")
        if self.refitted_ml:
            lines.append("refitting model(s) with ML (instead of REML)")
        return "\n".join(lines)

    def to_dict(self) -> dict:
        return {
            "schema_version": SCHEMA_VERSION,
            "refitted_ml": self.refitted_ml,
            "models": [{k: _plain(v) for k, v in row.items()} for row in self.rows.to_dict(orient="records")],
        }


def _plain(v):
    if v is None:
        return None
    if isinstance(v, (float, np.floating)):
        return float(v) if math.isfinite(v) else None
    return v.item() if hasattr(v, "item") else v


def anova(*fits) -> AnovaTable:
    """lme4's ``anova(m1, m2, …)``: each model against the one before it (by number of
    parameters), after checking that they share their rows and are nested."""
    if len(fits) < 2:
        raise ValueError("model comparison needs at least two models (give --formula twice)")
    for f in fits[1:]:
        same_data(fits[0], f)
    refitted = any(f.criterion == "REML" for f in fits)
    ml = [f.model.fit(reml=False, ddf="normal") if f.criterion == "REML" else f for f in fits]
    order = sorted(range(len(ml)), key=lambda i: ml[i].n_params)
    ml = [ml[i] for i in order]
    for a, b in itertools.pairwise(ml):
        check_nested(a, b)
    rows = []
    for i, f in enumerate(ml):
        row = {
            "formula": f.formula,
            "npar": int(f.n_params),
            "aic": f.aic,
            "bic": f.bic,
            "loglik": f.loglik,
            "deviance": -2 * f.loglik,
            "chisq": None,
            "df": None,
            "p": None,
        }
        if i:
            t = lrt(ml[i - 1], f)
            row.update(chisq=t["chisq"], df=t["df"], p=t["p"])
        rows.append(row)
    return AnovaTable(pd.DataFrame(rows), refitted)
