"""Estimated marginal means and their pairwise contrasts on a fitted mixed model, as R's emmeans
(Lenth, ``emmeans(fit, ~ ref | cond, type = "response")`` and ``pairs()``).

The reference grid follows emmeans' rules: every factor of the fixed part at each of its levels,
each numeric covariate at its mean (``at`` fixes any variable to given values), the offset at its
mean over the fitted rows. A marginal mean averages the grid's rows with equal weights over the
factors that ``specs`` does not name; it is l'β with SE √(l'Vl). Degrees of freedom: asymptotic
(z) for the binomial GLMM; for an LMM, Satterthwaite's per estimate (lmerTest's, which emmeans
uses by default) or Kenward–Roger's with their adjusted covariance (pbkrtest), as the fit's own
``ddf``. ``type="response"`` back-transforms a GLMM's means to probabilities: SE by the delta
method (μ(1 − μ)·SE), the interval's ends through the inverse link.

Pairwise contrasts run within each ``by`` group, in level order ("a - b" for a before b), and
their p-values are adjusted within the group: Tukey's studentized range (scipy's
``studentized_range``), Holm or Bonferroni (statsmodels' ``multipletests``), or none. On the
response scale a binomial GLMM's contrasts are odds ratios (emmeans' ``odds.ratio``), tested on
the log-odds scale.
"""

from __future__ import annotations

import itertools
import math
import re
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy import stats
from scipy.special import expit
from statsmodels.stats.multitest import multipletests

from .summary import SCHEMA_VERSION, format_column

__all__ = ["ADJUSTMENTS", "EmmResult", "emmeans", "parse_at", "parse_specs", "reference_grid"]

ADJUSTMENTS = ("tukey", "holm", "bonferroni", "none")
TYPES = ("link", "response")


def parse_specs(specs: str) -> tuple[list[str], list[str]]:
    """``"ref | cond"`` (or ``"~ ref | cond"``, ``"ref * stim | cond"``) → (["ref"], ["cond"])."""
    text = specs.strip().lstrip("~").strip()
    left, _, right = text.partition("|")

    def split(s):
        return [v for v in (p.strip() for p in re.split(r"[*+:,]", s)) if v]

    names, by = split(left), split(right)
    if not names:
        raise ValueError(f"specs {specs!r} name no variable: write e.g. 'ref | cond'")
    return names, by


def parse_at(items) -> dict:
    """``["Days=3", "ref=natural,synthetic"]`` → {"Days": ["3"], "ref": ["natural", "synthetic"]}
    (values converted to the column's type when the grid is built)."""
    out = {}
    for item in items or ():
        name, sep, value = item.partition("=")
        if not sep or not name.strip():
            raise ValueError(f"bad --at {item!r}: expected name=value")
        out[name.strip()] = [v.strip() for v in value.split(",") if v.strip()]
    return out


def _fixed_variables(design) -> list[str]:
    """The data columns the fixed part uses, in the order the formula names them."""
    spec = design.fixed_spec
    used = set(spec.variables_by_source.get("data", set()))
    text = design.formula.split("~", 1)[1]
    order = [m for m in re.findall(r"[A-Za-z_.][A-Za-z0-9_.]*", text) if m in used]
    seen = []
    for v in order + sorted(used):
        if v not in seen:
            seen.append(v)
    return seen


def _factor_levels(design, var: str):
    """The levels of ``var`` as a factor of the fit (its coding's own order, a relevel's reference
    first), or None for a numeric covariate. Strings, booleans and ``factor(x)`` are factors."""
    col = design.data[var]
    for expr, (kind, state) in design.fixed_spec.encoder_state.items():
        if str(kind.value) != "categorical":
            continue
        names = re.findall(r"[A-Za-z_.][A-Za-z0-9_.]*", str(expr))
        if var in names and "categories" in state:
            levels = list(state["categories"])
            base = getattr(getattr(state.get("contrasts"), "contrasts", None), "base", None)
            if isinstance(base, (str, int, float, bool)) and base in levels:
                levels.remove(base)
                levels.insert(0, base)
            return levels
    if pd.api.types.is_bool_dtype(col):
        return [False, True]
    if not pd.api.types.is_numeric_dtype(col):
        return sorted(pd.unique(col.dropna()), key=str)
    return None


def _convert(values, like: pd.Series, levels):
    out = []
    for v in values:
        if levels is not None:
            match = [lv for lv in levels if str(lv) == str(v)]
            if not match:
                raise ValueError(f"--at {like.name}={v}: not a level ({', '.join(map(str, levels))})")
            out.append(match[0])
        else:
            try:
                out.append(float(v))
            except ValueError:
                raise ValueError(f"--at {like.name}={v}: {like.name} is numeric") from None
    return out


def reference_grid(design, at: dict | None = None) -> pd.DataFrame:
    """emmeans' reference grid: every level of every factor, numeric covariates at their mean (or
    the values ``at`` gives), one row per combination."""
    at = dict(at or {})
    values = {}
    for var in _fixed_variables(design):
        levels = _factor_levels(design, var)
        if var in at:
            values[var] = _convert(at.pop(var), design.data[var], levels)
        elif levels is not None:
            values[var] = levels
        else:
            values[var] = [float(pd.to_numeric(design.data[var]).mean())]
    if at:
        raise ValueError(
            f"--at names {', '.join(at)}, not a variable of the fixed effects ({', '.join(values) or 'none'})"
        )
    if not values:
        return pd.DataFrame(index=[0])
    rows = list(itertools.product(*values.values()))
    return pd.DataFrame(rows, columns=list(values))


@dataclass
class EmmResult:
    """Estimated marginal means (``means``) and, with ``pairs``, their contrasts (``contrasts``);
    ``summary()`` prints them as emmeans does, ``to_dict()`` is the CLI's ``--json``."""

    means: pd.DataFrame
    contrasts: pd.DataFrame | None
    specs: list
    by: list
    type: str
    adjust: str
    level: float
    kind: str
    ddf: str
    at: dict = field(default_factory=dict)
    grid_size: int = 0
    averaged_over: list = field(default_factory=list)
    formula: str = ""
    notes: list = field(default_factory=list)

    @property
    def response_scale(self) -> bool:
        return self.type == "response" and self.kind == "glmm"

    # -- text ----------------------------------------------------------------------------
    def _groups(self, frame):
        if not self.by:
            yield None, frame
            return
        for key, part in frame.groupby(self.by, sort=False):
            key = key if isinstance(key, tuple) else (key,)
            yield ", ".join(f"{b} = {k}" for b, k in zip(self.by, key)), part

    def summary(self) -> str:
        inf = self.ddf == "asymptotic"
        est_name = "prob" if self.response_scale else "emmean"
        lcl, ucl = ("asymp.LCL", "asymp.UCL") if inf else ("lower.CL", "upper.CL")
        lines = []
        for head, part in self._groups(self.means):
            if head:
                lines.append(f"{head}:")
            cols = self.specs
            est = format_column(list(part["estimate"]) + list(part["ci_low"]) + list(part["ci_high"]))
            se = format_column(list(part["std_error"]))
            n = len(part)
            rows = [[*cols, est_name, "SE", "df", lcl, ucl]]
            for i, r in enumerate(part.itertuples()):
                rows.append(
                    [*(str(getattr(r, c)) for c in cols), est[i], se[i], _df_text(r.df), est[n + i], est[2 * n + i]]
                )
            lines += _aligned(rows, len(cols)) + [""]
        if self.averaged_over:
            lines.append(f"Results are averaged over the levels of: {', '.join(self.averaged_over)} ")
        if self.ddf not in ("asymptotic", ""):
            lines.append(f"Degrees-of-freedom method: {self.ddf.lower()} ")
        lines.append(f"Confidence level used: {self.level:g} ")
        if self.response_scale:
            lines.append("Intervals are back-transformed from the logit scale ")
        if self.contrasts is not None:
            lines += [""] + self._contrast_lines()
        lines += [f"note: {n}" for n in self.notes]
        return "\n".join(lines).rstrip()

    def _contrast_lines(self) -> list[str]:
        c = self.contrasts
        ratio = self.response_scale
        stat = "z.ratio" if self.ddf == "asymptotic" else "t.ratio"
        lines = []
        for head, part in self._groups(c):
            if head:
                lines.append(f"{head}:")
            vals = list(part["odds_ratio"] if ratio else part["estimate"])
            ses = list(part["odds_ratio_se"] if ratio else part["std_error"])
            est, se = format_column(vals), format_column(ses)
            head_row = ["contrast", "odds.ratio" if ratio else "estimate", "SE", "df"]
            head_row += (["null"] if ratio else []) + [stat, "p.value"]
            rows = [head_row]
            for i, r in enumerate(part.itertuples()):
                # emmeans names a back-transformed logit contrast as the ratio it is: "a / b"
                label = str(r.contrast).replace(" - ", " / ") if ratio else str(r.contrast)
                rows.append(
                    [label, est[i], se[i], _df_text(r.df)]
                    + (["1"] if ratio else [])
                    + [f"{r.statistic:.3f}", _p_text(r.p)]
                )
            lines += _aligned(rows, 1) + [""]
        if self.averaged_over:
            lines.append(f"Results are averaged over the levels of: {', '.join(self.averaged_over)} ")
        if self.ddf not in ("asymptotic", ""):
            lines.append(f"Degrees-of-freedom method: {self.ddf.lower()} ")
        k = c.groupby(self.by, sort=False).size().max() if self.by else len(c)
        if k <= 1:
            pass  # one contrast per group: nothing to adjust, and emmeans says nothing
        elif self.adjust == "tukey":
            n_means = len(self.means) // max(1, len(list(self._groups(self.means))))
            lines.append(f"P value adjustment: tukey method for comparing a family of {n_means} estimates ")
        elif self.adjust != "none":
            lines.append(f"P value adjustment: {self.adjust} method for {k} tests ")
        if ratio:
            lines.append("Tests are performed on the log odds ratio scale ")
        return lines

    def __str__(self) -> str:
        return self.summary()

    # -- JSON ----------------------------------------------------------------------------
    def to_dict(self) -> dict:
        def rows(frame):
            out = []
            for r in frame.to_dict(orient="records"):
                out.append(
                    {
                        k: (_num(v) if isinstance(v, (float, np.floating)) else v.item() if hasattr(v, "item") else v)
                        for k, v in r.items()
                    }
                )
            return out

        return {
            "schema_version": SCHEMA_VERSION,
            "formula": self.formula,
            "kind": self.kind,
            "specs": list(self.specs),
            "by": list(self.by),
            "type": self.type,
            "scale": "response" if self.response_scale else "link",
            "ddf": self.ddf,
            "level": self.level,
            "adjust": self.adjust if self.contrasts is not None else None,
            "at": {k: [_plain(v) for v in vs] for k, vs in self.at.items()},
            "averaged_over": list(self.averaged_over),
            "grid_size": int(self.grid_size),
            "emmeans": rows(self.means),
            "contrasts": rows(self.contrasts) if self.contrasts is not None else None,
            "notes": list(self.notes),
        }


def _plain(v):
    return v.item() if hasattr(v, "item") else v


def _num(v):
    v = float(v)
    return v if math.isfinite(v) else None


def _df_text(df: float) -> str:
    return "Inf" if not math.isfinite(df) else f"{df:.1f}" if df < 100 else f"{df:.0f}"


def _p_text(p: float) -> str:
    if not math.isfinite(p):
        return "NA"
    return "<.0001" if p < 1e-4 else f"{p:.4f}"


def _aligned(rows, n_left) -> list[str]:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return [
        " " + " ".join(c.ljust(w) if i < n_left else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths)))
        for r in rows
    ]


def _degrees_of_freedom(result, L) -> tuple[np.ndarray, np.ndarray, str]:
    """(df per row of L, the covariance of β̂ to use, the method's name)."""
    V = np.asarray(result.vcov, float)
    if result.kind != "lmm" or result.ddf == "normal":
        return np.full(len(L), np.inf), V, "asymptotic"
    model = result.model
    if model is None:
        raise ValueError("the fit carries no model: its df cannot be computed")
    if result.ddf == "Kenward-Roger":
        from .kenward_roger import kenward_roger

        kr = kenward_roger(model, result)
        return kr.contrast_df(L), kr.PhiA, "Kenward-Roger"
    from .satterthwaite import contrast_df

    return contrast_df(model, result, L), V, "Satterthwaite"


def emmeans(
    result,
    specs,
    by=None,
    type: str = "response",
    pairs: bool = False,
    adjust: str = "tukey",
    at: dict | None = None,
    level: float = 0.95,
) -> EmmResult:
    """Estimated marginal means of a ``MixedResult``; ``specs`` a list of variables or emmeans'
    ``"ref | cond"``; ``by`` further grouping variables; ``at`` {variable: values} fixing the
    grid. ``pairs``: pairwise contrasts within each by group, ``adjust``-ed."""
    if type not in TYPES:
        raise ValueError(f"type must be one of {', '.join(TYPES)}, not {type!r}")
    if adjust not in ADJUSTMENTS:
        raise ValueError(f"adjust must be one of {', '.join(ADJUSTMENTS)}, not {adjust!r}")
    if isinstance(specs, str):
        names, by2 = parse_specs(specs)
    else:
        names, by2 = list(specs), []
    by = list(by2) + [b for b in (by or []) if b not in by2]
    model = getattr(result, "model", None)
    design = getattr(model, "design", None)
    if design is None or design.fixed_spec is None:
        raise ValueError("estimated marginal means need the fitted model (result.model)")
    at = {k: list(v) if isinstance(v, (list, tuple)) else [v] for k, v in (at or {}).items()}
    grid = reference_grid(design, at)
    for v in names + by:
        if v not in grid.columns:
            raise ValueError(f"{v!r} is not a variable of the fixed effects ({', '.join(grid.columns) or 'none'})")
    keys = names + by
    Xg = design.fixed_matrix(grid)
    # emmeans' reference offset: the mean of the fitted rows' offsets (the LMM subtracted it from y)
    offset = float(np.mean(design.offset)) if design.offset is not None else 0.0
    # equal weights over the grid's other variables: the mean of each cell's rows of X
    cells = grid.groupby(keys, sort=False).indices if keys else {(): np.arange(len(grid))}
    cell_keys = list(cells)
    L = np.vstack([Xg[idx].mean(axis=0) for idx in cells.values()])
    beta = result.fixed["estimate"].to_numpy(float)
    df, V, ddf = _degrees_of_freedom(result, L)
    est = L @ beta + offset
    se = np.sqrt(np.clip(np.einsum("ij,jk,ik->i", L, V, L), 0, None))
    q = stats.t.isf((1 - level) / 2, df)
    lo, hi = est - q * se, est + q * se
    means = pd.DataFrame([dict(zip(keys, k if isinstance(k, tuple) else (k,))) for k in cell_keys])
    response = type == "response" and result.kind == "glmm"
    if response:
        p = expit(est)
        means["estimate"], means["std_error"] = p, p * (1 - p) * se
        means["ci_low"], means["ci_high"] = expit(lo), expit(hi)
        means["link_estimate"], means["link_std_error"] = est, se
    else:
        means["estimate"], means["std_error"], means["ci_low"], means["ci_high"] = est, se, lo, hi
    means["df"] = df
    contrasts = None
    if pairs:
        contrasts = _pairs(means, L, V, beta, names, by, result, adjust, level, response)
    averaged = [c for c in grid.columns if c not in keys and grid[c].nunique() > 1]
    notes = []
    if result.kind == "lmm" and type == "response":
        notes.append("an LMM's identity link: the response scale is the link scale")
    return EmmResult(
        means=means,
        contrasts=contrasts,
        specs=names,
        by=by,
        type=type,
        adjust=adjust,
        level=level,
        kind=result.kind,
        ddf=ddf,
        at=at,
        grid_size=len(grid),
        averaged_over=averaged,
        formula=result.formula,
        notes=notes,
    )


def _pairs(means, L, V, beta, names, by, result, adjust, level, response) -> pd.DataFrame:
    groups = means.groupby(by, sort=False).indices if by else {(): np.arange(len(means))}
    rows, Ls, fam = [], [], []
    for gi, (gkey, idx) in enumerate(groups.items()):
        gkey = gkey if isinstance(gkey, tuple) else (gkey,)
        for a, b in itertools.combinations(idx, 2):
            label = " - ".join(" ".join(str(means[n].iloc[i]) for n in names) for i in (a, b))
            rows.append({**dict(zip(by, gkey)), "contrast": label})
            Ls.append(L[a] - L[b])
            fam.append((gi, len(idx)))
    out = pd.DataFrame(rows, columns=[*by, "contrast"])
    if not rows:
        for c in ("estimate", "std_error", "df", "statistic", "p", "ci_low", "ci_high"):
            out[c] = []
        return out
    C = np.vstack(Ls)
    df, V2, _ = _degrees_of_freedom(result, C)
    est = C @ beta
    se = np.sqrt(np.clip(np.einsum("ij,jk,ik->i", C, V2, C), 0, None))
    with np.errstate(divide="ignore", invalid="ignore"):
        stat = est / se
    raw = 2 * stats.t.sf(np.abs(stat), df)
    p = raw.copy()
    crit = np.empty(len(C))
    fam = np.asarray(fam)
    for g in np.unique(fam[:, 0]):
        sel = np.flatnonzero(fam[:, 0] == g)
        k_means, m = int(fam[sel[0], 1]), len(sel)
        if adjust == "tukey" and k_means > 2:
            # emmeans: P(studentized range > √2 |t|) on the contrast's df (infinite for z)
            p[sel] = stats.studentized_range.sf(np.sqrt(2) * np.abs(stat[sel]), k_means, df[sel])
            for d in np.unique(df[sel]):
                at = sel[df[sel] == d]
                crit[at] = stats.studentized_range.ppf(level, k_means, d) / np.sqrt(2)
        elif adjust in ("holm", "bonferroni") and m > 1:
            p[sel] = multipletests(raw[sel], method=adjust)[1]
            # a Holm interval does not exist: emmeans gives Bonferroni's, as here
            crit[sel] = stats.t.isf((1 - level) / (2 * m), df[sel])
        else:
            crit[sel] = stats.t.isf((1 - level) / 2, df[sel])
    out["estimate"], out["std_error"], out["df"] = est, se, df
    out["statistic"], out["p"], out["p_unadjusted"] = stat, p, raw
    out["ci_low"], out["ci_high"] = est - crit * se, est + crit * se
    if response:
        orat = np.exp(est)
        out["odds_ratio"], out["odds_ratio_se"] = orat, orat * se
        out["odds_ratio_ci_low"], out["odds_ratio_ci_high"] = np.exp(out["ci_low"]), np.exp(out["ci_high"])
    return out
