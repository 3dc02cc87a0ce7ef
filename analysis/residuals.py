"""A simulation-based residual check of a fitted mixed model, as R's DHARMa (Hartig 2022,
``simulateResiduals``, ``testUniformity``, ``testDispersion``, ``testOutliers``).

``n_sim`` response vectors are drawn from the fitted model with new random effects (lme4's
``simulate(fit, use.u = FALSE)``, DHARMa's default for lme4). Each observation's scaled residual is
where it falls among its own simulations: for an integer response (a GLMM's successes) a randomised
probability integral transform, uniform between the share of simulations below the observation and
the share at or below it (DHARMa's PIT residuals), so that a well-specified model gives residuals
uniform on (0, 1) whatever the distribution. Then:

- uniformity: the Kolmogorov–Smirnov test of the residuals against U(0, 1) (scipy's ``kstest``, as
  DHARMa's ``testUniformity``);
- dispersion: DHARMa's default simulation test, the variance of the observed responses around the
  fitted (conditional) means over the same variance of each simulated response vector; the ratio
  and the two-sided p = 2·min(P(sim ≥ obs), P(sim ≤ obs));
- outliers: the number of observations outside every one of their simulations against its
  expectation, by a two-sided binomial test (scipy), as DHARMa's ``testOutliers(type =
  "binomial")``; the expectation is exact for discrete responses (``_outside_share``) where DHARMa's
  2/(n_sim + 1) holds only for continuous ones, which is why DHARMa falls back to a bootstrap there;
- a QQ plot of the residuals against U(0, 1) (``plot_qq``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scipy import stats

from ._draws import fitted_mean, simulate_response
from ._json import clean

__all__ = ["ResidualCheck", "pit_residuals", "plot_qq", "simulate_residuals"]


@dataclass
class ResidualCheck:
    residuals: np.ndarray
    n_sim: int
    seed: int
    uniformity: dict
    dispersion: dict
    outliers: dict
    kind: str = "glmm"
    notes: list = field(default_factory=list)

    def to_dict(self) -> dict:
        q = np.quantile(self.residuals, [0, 0.25, 0.5, 0.75, 1]) if len(self.residuals) else [np.nan] * 5
        return clean(
            {
                "method": "DHARMa scaled quantile residuals (randomised PIT, new random effects)",
                "n_sim": self.n_sim,
                "seed": self.seed,
                "nobs": len(self.residuals),
                "residual_quantiles": dict(zip(["min", "q1", "median", "q3", "max"], [float(v) for v in q])),
                "uniformity": self.uniformity,
                "dispersion": self.dispersion,
                "outliers": self.outliers,
                "notes": list(self.notes),
            }
        )

    def summary(self) -> str:
        u, d, o = self.uniformity, self.dispersion, self.outliers
        lines = [
            (
                f"Simulation-based residual check (DHARMa): {len(self.residuals)} observations, "
                f"{self.n_sim} simulations (seed {self.seed})"
            ),
            f"  uniformity (Kolmogorov-Smirnov): D = {u['statistic']:.4f}, p = {u['p']:.4g}",
            f"  dispersion (simulated variance ratio): ratio = {d['ratio']:.4f}, p = {d['p']:.4g}",
            (
                f"  outliers (outside every simulation): {o['count']} of {o['n']} "
                f"(expected share {o['expected_share']:.4g}), p = {o['p']:.4g}"
            ),
        ]
        lines += [f"note: {n}" for n in self.notes]
        return "\n".join(lines)


def _scale_of_draws(result, y):
    """A GLMM's responses as counts of successes (integers: the randomised PIT applies)."""
    if result.kind == "glmm":
        return np.rint(y * result.model.n_trials), True
    return y, False


def pit_residuals(obs, sims, rng, integer: bool = True) -> np.ndarray:
    """Each observation's place among its simulations (rows of ``sims``): the empirical CDF of the
    simulations at the observation, randomised uniformly over its jump for an integer response
    (DHARMa's ``getQuantile(method = "PIT")``)."""
    obs, sims = np.asarray(obs, float), np.asarray(sims, float)
    below = (sims < obs[:, None]).mean(axis=1)
    at_or_below = (sims <= obs[:, None]).mean(axis=1)
    if not integer:  # continuous: ties have probability zero
        return at_or_below
    r = below.copy()
    ties = at_or_below > below
    r[ties] = rng.uniform(below[ties], at_or_below[ties])
    return r


def _outside_share(obs, sims) -> float:
    """The share of observations expected outside all their simulations under the model. The
    observation and its simulations are n_sim + 1 exchangeable draws, so the chance that the
    observation is the one strictly above (below) all others is 1/(n_sim + 1) when the row's
    maximum (minimum) is attained once, and 0 when it is tied: DHARMa's 2/(n_sim + 1) for a
    continuous response, much less for a binary one, whose draws are almost always tied."""
    every = np.column_stack([obs, sims])
    hi, lo = every.max(axis=1), every.min(axis=1)
    once = (every == hi[:, None]).sum(axis=1) == 1
    once_lo = (every == lo[:, None]).sum(axis=1) == 1
    return float(np.mean((once.astype(float) + once_lo) / every.shape[1]))


def simulate_residuals(result, n_sim: int = 250, seed: int = 0) -> ResidualCheck:
    """DHARMa's ``simulateResiduals(fit, n = n_sim)`` and its three tests."""
    if result.model is None:
        raise ValueError("the residual check needs the fit's model (a result rebuilt from numbers has none)")
    if n_sim < 10:
        raise ValueError("the residual check needs at least 10 simulations")
    rng = np.random.default_rng(seed)
    model = result.model
    obs, integer = _scale_of_draws(result, np.asarray(model.y, float))
    sims = np.column_stack([_scale_of_draws(result, simulate_response(result, rng))[0] for _ in range(n_sim)])
    r = pit_residuals(obs, sims, rng, integer)
    below = (sims < obs[:, None]).mean(axis=1)
    at_or_below = (sims <= obs[:, None]).mean(axis=1)
    ks = stats.kstest(r, "uniform")
    # population-level means (random effects at zero), as DHARMa takes for lme4 fits: the
    # simulations draw new random effects, so observed and simulated responses spread around the
    # same values only without the conditional modes (with them the test reads underdispersion)
    fitted = fitted_mean(result, conditional=False)
    if result.kind == "glmm":
        fitted = fitted * model.n_trials
    observed_var = float(np.var(obs - fitted, ddof=1))
    simulated_var = np.var(sims - fitted[:, None], axis=0, ddof=1)
    p_disp = min(
        1.0, 2 * min(float(np.mean(simulated_var >= observed_var)), float(np.mean(simulated_var <= observed_var)))
    )
    outside = int(np.sum((at_or_below == 0) | (below == 1)))
    expected = _outside_share(obs, sims)
    p_out = (
        float(stats.binomtest(outside, len(r), expected).pvalue)
        if len(r) and expected > 0
        else (1.0 if outside == 0 else 0.0)
    )
    notes = []
    if result.kind == "glmm" and np.all(model.n_trials == 1):
        notes.append(
            "binary responses: the dispersion test cannot see overdispersion per row "
            "(DHARMa's advice: test it on responses grouped by participant or unit)"
        )
    return ResidualCheck(
        residuals=r,
        n_sim=n_sim,
        seed=seed,
        kind=result.kind,
        uniformity={"test": "Kolmogorov-Smirnov", "statistic": float(ks.statistic), "p": float(ks.pvalue)},
        dispersion={
            "test": "DHARMa simulated variance ratio",
            "ratio": observed_var / float(np.mean(simulated_var)),
            "p": p_disp,
        },
        outliers={"test": "binomial", "count": outside, "n": len(r), "expected_share": expected, "p": p_out},
        notes=notes,
    )


def plot_qq(check: ResidualCheck, out_stem) -> list[Path]:
    """QQ plot of the scaled residuals against U(0, 1), with the tests' p values; writes
    ``out_stem``.png and .svg."""
    from .plots import _save, plt

    r = np.sort(check.residuals)
    n = len(r)
    expected = (np.arange(1, n + 1) - 0.5) / n
    fig, ax = plt.subplots(figsize=(4.2, 4.2))
    ax.plot([0, 1], [0, 1], color="grey", lw=1, ls="--")
    ax.scatter(expected, r, s=6, color="#4c78a8", alpha=0.6, lw=0)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("expected (uniform)")
    ax.set_ylabel("scaled residual")
    ax.set_title(
        f"QQ plot of scaled residuals\nKS p = {check.uniformity['p']:.3g}, dispersion p = "
        f"{check.dispersion['p']:.3g}, outliers p = {check.outliers['p']:.3g}",
        fontsize=9,
    )
    return _save(fig, out_stem)
