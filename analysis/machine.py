"""Machine observer against people, per unit: does the Machine Interpretability Score (Zimmermann,
Klindt & Brendel 2024; :mod:`stimuli.measures.mis`) predict which units people find interpretable?

The export carries, per trial, the machine's Δ for the very query pair the trial showed (``mis_delta``)
and the unit's stored score (``unit_mis``, at the pipeline's α). :class:`MachineObserver` fits the slope
α of P(correct) = σ(α·Δ) to people's answers on main trials (by maximum likelihood,
:func:`fit_alpha`, statsmodels' binomial GLM), then compares per unit and per condition

- people's accuracy (with a Wilson score interval), and
- the machine's predicted accuracy with the fitted α: the mean of σ(α·Δ) over the trials people
  answered for that unit, so both numbers are about the same trials,

and correlates the two across units (Pearson with a Fisher-z interval, Spearman with the Fisher-z
interval of Bonett & Wright 2000). The stored MIS is reported beside them and correlated too.

α stays the slope of the plain logistic regression (a marginal, population-averaged slope): the
machine's predicted accuracy of a unit, the mean of σ(α·Δ), is an accuracy averaged over people, as
the MIS defines it. Beside it, ``alpha_glmm`` is the slope of ``correct ~ 0 + mis_delta +
(1 | participant) + (1 | unit)`` (our Laplace GLMM, crossed random intercepts): the slope for a typical
participant on a typical unit, whose standard error accounts for answers sharing a participant or a
unit. It is not the α of the predictions because it is a conditional slope (larger than the marginal
one by about √(1 + 0.35 σ²) for random-intercept SD σ), and because the unit intercept absorbs part of
the between-unit differences in Δ that the comparison per unit is about.

Δ is computed against both reference sets, which people see only in the ``natural`` reference type;
other reference types (the no-reference baseline, max-only, overlays) are left out by default.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import statsmodels.api as sm
from scipy import stats
from scipy.special import expit
from statsmodels.stats.proportion import proportion_confint

from ._json import clean as _clean
from .glmm import BinomialGLMM
from .load import main_trials
from .tables import format_table

__all__ = ["DEFAULT_ALPHA", "MachineObserver", "MachineObserverResult", "correlation", "fit_alpha",
           "has_machine_deltas", "wilson_interval"]

# The pipeline's default ``mis_alpha`` (stimuli.config): the export does not carry the α a study's
# units were scored at, so the stored MIS is described at this value.
DEFAULT_ALPHA = 1.0


def has_machine_deltas(df: pd.DataFrame) -> bool:
    """Whether any main trial of the export carries the machine's Δ."""
    return "mis_delta" in df.columns and pd.to_numeric(
        main_trials(df)["mis_delta"], errors="coerce").notna().any()


def wilson_interval(k, n, level: float = 0.95):
    """Wilson score interval of a binomial proportion k/n (statsmodels' ``proportion_confint``,
    method ``wilson``), clipped to contain k/n; NaN for n = 0.

    The clip matters at k = n (and k = 0): statsmodels' upper bound is 0.9999999999999999 at 7/7,
    23/23 or 28/28, below the proportion, and an error bar from it would be negative."""
    k = np.asarray(k, dtype=float)
    n = np.asarray(n, dtype=float)
    lo = np.full(np.broadcast(k, n).shape, np.nan)
    hi = lo.copy()
    ok = np.broadcast_to(n > 0, lo.shape)
    if ok.any():
        kk, nn = np.broadcast_to(k, lo.shape)[ok], np.broadcast_to(n, lo.shape)[ok]
        low, high = proportion_confint(kk, nn, alpha=1 - level, method="wilson")
        p = kk / nn
        lo[ok] = np.minimum(low, p)
        hi[ok] = np.maximum(high, p)
    if lo.ndim == 0:
        return float(lo), float(hi)
    return lo, hi


def correlation(x, y, method: str = "pearson", level: float = 0.95) -> dict:
    """r, its CI (Fisher z: scipy's for Pearson; for Spearman with Bonett & Wright's standard error
    √(1 + r²/2)/√(n − 3)),
    the two-sided p of r = 0, and n (pairs with both values). NaN where n < 3 or a side is constant;
    the interval needs n > 3."""
    x = np.asarray(x, dtype=float)
    y = np.asarray(y, dtype=float)
    ok = np.isfinite(x) & np.isfinite(y)
    x, y = x[ok], y[ok]
    n = int(len(x))
    out = {"method": method, "r": float("nan"), "ci_low": float("nan"), "ci_high": float("nan"),
           "p": float("nan"), "n": n}
    if n < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return out
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if method == "pearson":
            r, p = stats.pearsonr(x, y)
        elif method == "spearman":
            r, p = stats.spearmanr(x, y)
        else:
            raise ValueError(f"unknown correlation {method!r}; expected pearson or spearman")
    r, p = float(r), float(p)
    out.update(r=r, p=p)
    if n > 3 and abs(r) < 1:
        if method == "pearson":
            ci = stats.pearsonr(x, y).confidence_interval(confidence_level=level)
            out.update(ci_low=float(ci.low), ci_high=float(ci.high))
        else:
            # no library offers Bonett & Wright's interval for Spearman's rho: Fisher z with their SE
            se = math.sqrt(1 + r * r / 2) / math.sqrt(n - 3)
            z = stats.norm.ppf(0.5 + level / 2)
            out.update(ci_low=math.tanh(math.atanh(r) - z * se), ci_high=math.tanh(math.atanh(r) + z * se))
    return out


def _logistic_through_origin(deltas, human_correct, weights=None):
    """statsmodels' binomial GLM of P(correct) = σ(α·Δ) without an intercept (its IRLS fit, standard
    error and log-likelihood), after the checks statsmodels only warns about."""
    d = np.asarray(deltas, dtype=np.float64).ravel()
    y = np.asarray(human_correct, dtype=np.float64).ravel()
    w = np.ones_like(d) if weights is None else np.asarray(weights, dtype=np.float64).ravel()
    if not (len(d) == len(y) == len(w)) or len(d) == 0:
        raise ValueError("deltas, human_correct (and weights) need the same, non-zero length")
    if np.any((y < 0) | (y > 1)) or np.any(w < 0) or not np.all(np.isfinite(d)):
        raise ValueError("human_correct must lie in [0, 1], weights be non-negative and deltas finite")
    keep = (w > 0) & (d != 0)
    d, y, w = d[keep], y[keep], w[keep]
    if not len(d):
        raise ValueError("no task with a non-zero Δ: α is not identified")
    # Separation (every answer on the side Δ predicts, or every answer against it): statsmodels
    # would return a huge α with a warning; the ML estimate is infinite.
    if np.all(y[d > 0] == 1) and np.all(y[d < 0] == 0) or np.all(y[d > 0] == 0) and np.all(y[d < 0] == 1):
        raise ValueError("the answers are perfectly separated by the sign of Δ: the ML estimate of α is infinite")
    # var_weights: a proportion of n answers counts as n Bernoulli answers (same estimate and SE)
    return sm.GLM(y, d[:, None], family=sm.families.Binomial(), var_weights=w).fit(tol=1e-12)


def fit_alpha(deltas, human_correct, weights=None) -> float:
    """Maximum-likelihood α of P(correct) = σ(α·Δ), a logistic regression through the origin
    (statsmodels' ``GLM`` with the binomial family).

    ``human_correct`` holds 0/1 answers, or proportions correct with ``weights`` the number of answers
    behind each. Raises ValueError when the answers are perfectly separated by the sign of Δ (the
    estimate is then infinite) or no task has a non-zero Δ."""
    return float(_logistic_through_origin(deltas, human_correct, weights).params[0])


class MachineObserver:
    """P(correct) = σ(α·Δ) on the main trials of a response export that carry ``mis_delta``.

    ``reference_types``: which conditions' trials to use (by the export's ``reference_type``); None uses
    every trial with a Δ. ``level``: confidence level of every interval."""

    def __init__(self, data: pd.DataFrame, level: float = 0.95, reference_types=("natural",)):
        self.data = data
        self.level = level
        self.reference_types = reference_types

    def _trials(self) -> tuple[pd.DataFrame, list[str]]:
        notes = []
        main = main_trials(self.data)
        if "mis_delta" not in main.columns:
            raise ValueError("the export has no mis_delta column: the machine observer needs the Δ of "
                             "each trial's query pair (docs/contracts.md §2)")
        main = main.assign(mis_delta=pd.to_numeric(main["mis_delta"], errors="coerce"))
        if self.reference_types is not None and "reference_type" in main.columns:
            wanted = set(self.reference_types)
            other = main[~main["reference_type"].isin(wanted)]
            if len(other):
                left = ", ".join(sorted(map(str, other["condition"].unique())))
                notes.append(f"left out conditions whose reference type is not "
                             f"{' / '.join(sorted(wanted))} (Δ is measured against both reference "
                             f"sets): {left}")
            main = main[main["reference_type"].isin(wanted)]
        missing = main["mis_delta"].isna()
        if missing.any():
            notes.append(f"{int(missing.sum())} main trial(s) without a mis_delta left out "
                         f"(units whose measures have no mis_deltas)")
        used = main[~missing]
        if used.empty:
            raise ValueError("no main trial carries a mis_delta: nothing to compare")
        return used, notes

    def fit(self) -> MachineObserverResult:
        trials, notes = self._trials()
        delta = trials["mis_delta"].to_numpy(float)
        correct = trials["correct"].to_numpy(float)
        z = stats.norm.ppf(0.5 + self.level / 2)
        try:
            logit = _logistic_through_origin(delta, correct)
        except ValueError as exc:
            logit = None
            notes.append(f"α not fitted: {exc}")
        if logit is not None:
            alpha, se, loglik = float(logit.params[0]), float(logit.bse[0]), float(logit.llf)
            p = expit(alpha * delta)
        else:
            p = np.full(len(delta), np.nan)
            alpha = se = loglik = float("nan")
        trials = trials.assign(machine_p=p)
        crossed = self._crossed(trials, z, notes)
        units = self._per(trials, ["unit"], z)
        conditions = self._per(trials, ["condition"], z)
        correlations = {
            "machine_accuracy": {m: correlation(units["machine_accuracy"], units["human_accuracy"], m, self.level)
                                 for m in ("pearson", "spearman")},
            "stored_mis": {m: correlation(units["stored_mis"], units["human_accuracy"], m, self.level)
                           for m in ("pearson", "spearman")},
        }
        if len(units) < 4:
            notes.append(f"{len(units)} unit(s): too few for a correlation interval")
        for key, label in (("machine_accuracy", "the machine's predicted accuracy"),
                           ("stored_mis", "the stored MIS"), ("human_accuracy", "people's accuracy")):
            v = pd.to_numeric(units[key], errors="coerce").dropna()
            if len(v) >= 3 and v.nunique() == 1:
                notes.append(f"{label} is the same for every unit: no correlation with it")
        return MachineObserverResult(
            alpha=alpha, alpha_se=se, alpha_ci=(alpha - z * se, alpha + z * se), loglik=loglik,
            loglik_chance=float(len(delta) * math.log(0.5)), n_trials=int(len(trials)),
            n_participants=int(trials["participant"].nunique()), level=self.level,
            default_alpha=DEFAULT_ALPHA, units=units, conditions=conditions, correlations=correlations,
            notes=notes, alpha_glmm=crossed)

    #: the crossed-intercept model of the slope (see the module's docstring)
    CROSSED_FORMULA = "correct ~ 0 + mis_delta + (1 | participant) + (1 | unit)"

    def _crossed(self, trials: pd.DataFrame, z: float, notes: list) -> dict | None:
        """α by the binomial GLMM with crossed random intercepts for participants and units."""
        if trials["participant"].nunique() < 2 or trials["unit"].nunique() < 2:
            notes.append("alpha_glmm not fitted: it needs at least two participants and two units")
            return None
        try:
            fit = BinomialGLMM.from_formula(self.CROSSED_FORMULA, trials).fit()
        except (ValueError, np.linalg.LinAlgError, FloatingPointError) as exc:
            notes.append(f"alpha_glmm not fitted: {exc}")
            return None
        est, se = float(fit.params["mis_delta"]), float(fit.bse["mis_delta"])
        sd = fit.random.set_index("group")["sd"]
        out = {"formula": self.CROSSED_FORMULA, "alpha": est, "alpha_se": se,
               "alpha_ci": [est - z * se, est + z * se], "sd_participant": float(sd["participant"]),
               "sd_unit": float(sd["unit"]), "loglik": float(fit.loglik), "converged": bool(fit.converged),
               "singular": bool(fit.singular)}
        notes += [f"alpha_glmm: {w}" for w in fit.warnings]
        return out

    def _per(self, trials: pd.DataFrame, by: list[str], z: float) -> pd.DataFrame:
        extra = [c for c in ("basis", "layer") if c in trials.columns and c not in by]
        if by == ["unit"] and "condition" in trials.columns:
            extra.append("condition")
        g = trials.groupby(by, sort=True)
        out = pd.DataFrame({"trials": g.size(), "correct": g["correct"].sum()})
        for c in extra:
            out[c] = g[c].agg(lambda s: ", ".join(sorted(map(str, s.unique()))))
        if by != ["unit"]:
            out["units"] = g["unit"].nunique()
        out["human_accuracy"] = out["correct"] / out["trials"]
        lo, hi = wilson_interval(out["correct"].to_numpy(), out["trials"].to_numpy(), self.level)
        out["human_ci_low"], out["human_ci_high"] = lo, hi
        out["machine_accuracy"] = g["machine_p"].mean()
        out["mean_delta"] = g["mis_delta"].mean()
        if "unit_mis" in trials.columns:
            mis = pd.to_numeric(trials["unit_mis"], errors="coerce")
            per_unit = mis.groupby(trials["unit"]).first()
            if by == ["unit"]:
                out["stored_mis"] = per_unit.reindex(out.index)
            else:
                # one value per unit, so a unit answered more often does not weigh more
                unit_of = trials.drop_duplicates(by + ["unit"])
                out["stored_mis"] = unit_of.assign(m=unit_of["unit"].map(per_unit)).groupby(by)["m"].mean()
        else:
            out["stored_mis"] = np.nan
        cols = [*extra, *(["units"] if by != ["unit"] else []), "trials", "correct", "human_accuracy",
                "human_ci_low", "human_ci_high", "machine_accuracy", "stored_mis", "mean_delta"]
        return out.reset_index()[by + cols]


@dataclass
class MachineObserverResult:
    alpha: float
    alpha_se: float
    alpha_ci: tuple
    loglik: float
    loglik_chance: float
    n_trials: int
    n_participants: int
    level: float
    default_alpha: float
    units: pd.DataFrame
    conditions: pd.DataFrame
    correlations: dict
    notes: list = field(default_factory=list)
    alpha_glmm: dict | None = None  # the slope with crossed random intercepts (see the module)

    def correlation_table(self) -> pd.DataFrame:
        names = {"machine_accuracy": "machine (fitted alpha)", "stored_mis": "stored MIS"}
        rows = []
        for key, by_method in self.correlations.items():
            for method, c in by_method.items():
                rows.append({"human accuracy vs": names.get(key, key), "method": method, "r": c["r"],
                             "ci_low": c["ci_low"], "ci_high": c["ci_high"], "p": c["p"], "units": c["n"]})
        return pd.DataFrame(rows)

    def alpha_line(self) -> str:
        pct = f"{100 * self.level:g} %"
        return (f"alpha = {self.alpha:.4g} (SE {self.alpha_se:.3g}; {pct} Wald CI "
                f"{self.alpha_ci[0]:.4g} to {self.alpha_ci[1]:.4g}) from {self.n_trials} main trials of "
                f"{self.n_participants} participants; log-likelihood {self.loglik:.2f} "
                f"(chance {self.loglik_chance:.2f})")

    def alpha_glmm_line(self) -> str | None:
        g = self.alpha_glmm
        if not g:
            return None
        pct = f"{100 * self.level:g} %"
        return (f"with crossed random intercepts ({g['formula']}): alpha = {g['alpha']:.4g} (SE "
                f"{g['alpha_se']:.3g}; {pct} Wald CI {g['alpha_ci'][0]:.4g} to {g['alpha_ci'][1]:.4g}), "
                f"SD participant {g['sd_participant']:.3g}, SD unit {g['sd_unit']:.3g}")

    def summary(self) -> str:
        unit_cols = ["unit", "basis", "trials", "human_accuracy", "human_ci_low", "human_ci_high",
                     "machine_accuracy", "stored_mis"]
        cond_cols = ["condition", "units", "trials", "human_accuracy", "human_ci_low", "human_ci_high",
                     "machine_accuracy", "stored_mis"]
        parts = [
            "Machine observer vs people: P(correct) = sigmoid(alpha * delta)",
            self.alpha_line(),
            *([self.alpha_glmm_line()] if self.alpha_glmm else []),
            "",
            f"Per condition (machine: mean predicted accuracy at the fitted alpha; stored MIS at "
            f"alpha = {self.default_alpha:g}, mean over units)",
            format_table(self.conditions[[c for c in cond_cols if c in self.conditions.columns]]),
            "",
            "Correlation across units",
            format_table(self.correlation_table()),
            "",
            "Per unit",
            format_table(self.units[[c for c in unit_cols if c in self.units.columns]]),
        ]
        parts += [f"note: {n}" for n in self.notes]
        return "\n".join(parts)

    def to_dict(self) -> dict:
        return _clean({
            "alpha": self.alpha, "alpha_se": self.alpha_se, "alpha_ci": list(self.alpha_ci),
            "level": self.level, "loglik": self.loglik, "loglik_chance": self.loglik_chance,
            "n_trials": self.n_trials, "n_participants": self.n_participants,
            "n_units": int(len(self.units)), "default_alpha": self.default_alpha,
            "correlations": self.correlations,
            "alpha_glmm": self.alpha_glmm,
            "conditions": self.conditions.to_dict(orient="records"),
            "units": self.units.to_dict(orient="records"),
            "notes": list(self.notes),
        })
