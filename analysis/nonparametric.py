"""Kruskal–Wallis across conditions with Conover's post-hoc test and Holm's correction, as the
IMI study (Zimmermann et al. 2023) compared per-unit accuracies between models.

Conover–Iman (Conover 1999, *Practical Nonparametric Statistics*, §5.2): with all N
observations ranked jointly (mid-ranks for ties), R̄_i the mean rank of group i, and

    S² = (Σ R² − N (N+1)² / 4) / (N − 1)                  (rank variance, ties included)
    H  = (Σ_i n_i R̄_i² − N (N+1)² / 4) / S²               (Kruskal–Wallis, tie-corrected)

groups i and j differ when

    t_ij = |R̄_i − R̄_j| / sqrt(S² (N − 1 − H) / (N − k) · (1/n_i + 1/n_j))

is large against Student's t on N − k degrees of freedom (two-sided p here; scikit-posthocs'
``posthoc_conover`` computes it). Holm (1979), by statsmodels' ``multipletests``: the m p-values
sorted ascending are multiplied by m, m−1, …, 1 and made monotone. Kruskal–Wallis, Friedman and
Wilcoxon's signed-rank test are scipy's.

When every condition shows the same units (a within-unit design, e.g. one basis with and without
references) the per-unit accuracies are paired and Kruskal–Wallis, which assumes independent samples,
is the wrong test: unit-to-unit differences swamp the condition effect. Friedman's test ranks the
conditions within each unit instead (k ≥ 3; Wilcoxon's signed-rank test for k = 2), with pairwise
Wilcoxon signed-rank tests, Holm-adjusted, as post hoc tests.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from itertools import combinations

import numpy as np
import pandas as pd
import scikit_posthocs as sp
from scipy import stats
from statsmodels.stats.multitest import multipletests

from ._json import clean as _clean, records as _records

__all__ = ["holm", "conover_iman", "KruskalConover", "kruskal_conover", "FriedmanWilcoxon",
           "friedman_wilcoxon"]


def holm(p) -> np.ndarray:
    """Holm's step-down adjusted p-values (statsmodels' ``multipletests``, method ``holm``), in the
    order given; NaN entries are left out of m and stay NaN."""
    p = np.asarray(p, dtype=float)
    out = np.full_like(p, np.nan)
    ok = np.isfinite(p)
    if ok.any():
        out[ok] = multipletests(p[ok], method="holm")[1]
    return out


def conover_iman(samples: dict) -> pd.DataFrame:
    """Pairwise Conover–Iman tests for ``{group: values}``; columns group_a, group_b,
    mean_rank_a, mean_rank_b, t, df, p, p_holm.

    p comes from scikit-posthocs' ``posthoc_conover`` (unadjusted), Holm's correction from
    statsmodels. scikit-posthocs returns only p-values, so ``t`` is the Student-t quantile of p on
    N − k df (the statistic it tested). Two cases it leaves as NaN are decided here: every
    observation tied (S² = 0: no evidence, p = 1) and perfectly separated groups (N − 1 − H = 0:
    t infinite, p = 0)."""
    names = list(samples)
    data = [np.asarray(samples[g], dtype=float) for g in names]
    data = [d[np.isfinite(d)] for d in data]
    n = np.array([len(d) for d in data], dtype=float)
    N, k = n.sum(), len(data)
    cols = ["group_a", "group_b", "mean_rank_a", "mean_rank_b", "t", "df", "p", "p_holm"]
    if k < 2 or N - k < 1 or np.any(n == 0):
        return pd.DataFrame(columns=cols)
    ranks = stats.rankdata(np.concatenate(data))
    rbar = np.array([r.mean() for r in np.split(ranks, np.cumsum(n)[:-1].astype(int))])
    tied = np.ptp(ranks) == 0
    if not tied:
        long = pd.DataFrame({"value": np.concatenate(data), "group": np.repeat(np.arange(k), n.astype(int))})
        with np.errstate(invalid="ignore", divide="ignore"):
            pmat = sp.posthoc_conover(long, val_col="value", group_col="group", p_adjust=None)
    rows = []
    for i, j in combinations(range(k), 2):
        if tied:
            t, p = 0.0, 1.0
        else:
            p = float(pmat.loc[i, j])
            if not np.isfinite(p):
                t, p = np.inf, 0.0
            else:
                t = float(stats.t.isf(p / 2, N - k)) if p > 0 else np.inf
        rows.append([names[i], names[j], rbar[i], rbar[j], t, int(N - k), p])
    out = pd.DataFrame(rows, columns=cols[:-1])
    out["p_holm"] = holm(out["p"].to_numpy())
    return out


@dataclass
class KruskalConover:
    """Kruskal–Wallis H (tie-corrected, scipy) and the Conover–Iman pairs with Holm's p."""

    value: str
    by: str
    groups: pd.DataFrame  # group, n, median, mean_rank
    H: float
    df: int
    p: float
    pairs: pd.DataFrame
    notes: list = field(default_factory=list)

    def to_dict(self) -> dict:
        return {
            "test": "Kruskal-Wallis; Conover-Iman post hoc (two-sided t on N-k df), Holm-adjusted",
            "value": self.value,
            "by": self.by,
            "H": _clean(self.H),
            "df": int(self.df),
            "p": _clean(self.p),
            "groups": _records(self.groups),
            "pairs": _records(self.pairs),
            "notes": list(self.notes),
        }

    def headline(self) -> str:
        return (f"Kruskal–Wallis on {self.value} across {self.by}: H = {self.H:.3f}, df = {self.df}, "
                f"p = {self.p:.3g}. Conover–Iman post hoc tests (two-sided t on N − k df), Holm-adjusted:")

    def summary(self) -> str:
        lines = [f"Kruskal-Wallis on {self.value} by {self.by}: H = {self.H:.3f}, df = {self.df}, "
                 f"p = {self.p:.3g}"]
        for r in self.groups.itertuples():
            lines.append(f"  {r.group}: n = {r.n}, median = {r.median:.3f}, mean rank = {r.mean_rank:.2f}")
        lines.append("Conover-Iman post hoc (Holm-adjusted):")
        for r in self.pairs.itertuples():
            lines.append(f"  {r.group_a} vs {r.group_b}: t({r.df}) = {r.t:.3f}, p = {r.p:.3g}, "
                         f"p_holm = {r.p_holm:.3g}")
        lines += [f"note: {n}" for n in self.notes]
        return "\n".join(lines)


def kruskal_conover(df: pd.DataFrame, value: str, by: str) -> KruskalConover:
    """Kruskal–Wallis of ``value`` across the groups of ``by`` (e.g. per-unit accuracy across
    conditions), then Conover–Iman pairs with Holm's correction."""
    d = df[[by, value]].dropna()
    samples = {g: x[value].to_numpy(float) for g, x in d.groupby(by, sort=True)}
    if len(samples) < 2:
        raise ValueError(f"need at least two groups of {by!r}, got {len(samples)}")
    notes = []
    if np.ptp(d[value].to_numpy(float)) == 0:
        H, p = 0.0, 1.0  # scipy returns NaN when every value is tied
        notes.append("every value is tied: no evidence of a difference")
    else:
        H, p = stats.kruskal(*samples.values())
    pairs = conover_iman(samples)
    ranks = stats.rankdata(d[value].to_numpy(float))
    mean_rank = pd.Series(ranks, index=d.index).groupby(d[by]).mean()
    groups = pd.DataFrame({
        "group": list(samples),
        "n": [len(v) for v in samples.values()],
        "median": [float(np.median(v)) for v in samples.values()],
        "mean_rank": [float(mean_rank[g]) for g in samples],
    })
    if min(len(v) for v in samples.values()) < 5:
        notes.append("a group has fewer than 5 values: the chi-square approximation of H is rough")
    return KruskalConover(value=value, by=by, groups=groups, H=float(H), df=len(samples) - 1,
                          p=float(p), pairs=pairs, notes=notes)



@dataclass
class FriedmanWilcoxon:
    """Friedman's χ² over blocks (Wilcoxon's signed-rank test for two groups) and pairwise Wilcoxon
    signed-rank tests with Holm's p."""

    value: str
    by: str
    block: str
    groups: pd.DataFrame  # group, n, median, mean_rank (rank within each block)
    statistic: float
    df: int
    p: float
    pairs: pd.DataFrame  # group_a, group_b, n, W, p, p_holm
    test: str
    notes: list = field(default_factory=list)

    def to_dict(self) -> dict:
        return {
            "test": f"{self.test} over {self.block} (paired); Wilcoxon signed-rank post hoc, Holm-adjusted",
            "value": self.value, "by": self.by, "block": self.block,
            "statistic": _clean(self.statistic), "df": int(self.df), "p": _clean(self.p),
            "groups": _records(self.groups), "pairs": _records(self.pairs), "notes": list(self.notes),
        }

    def headline(self) -> str:
        name = "χ²" if self.test == "Friedman" else "W"
        return (f"{self.test} test on {self.value} across {self.by}, paired by {self.block} (every "
                f"{self.by} shows the same {self.block}s): {name} = {self.statistic:.3f}"
                + (f", df = {self.df}" if self.test == "Friedman" else "")
                + f", p = {self.p:.3g}. Wilcoxon signed-rank post hoc tests, Holm-adjusted:")

    def summary(self) -> str:
        lines = [self.headline()]
        for r in self.groups.itertuples():
            lines.append(f"  {r.group}: n = {r.n}, median = {r.median:.3f}, mean rank = {r.mean_rank:.2f}")
        for r in self.pairs.itertuples():
            lines.append(f"  {r.group_a} vs {r.group_b}: W = {r.W:.1f} (n = {r.n}), p = {r.p:.3g}, "
                         f"p_holm = {r.p_holm:.3g}")
        lines += [f"note: {n}" for n in self.notes]
        return "\n".join(lines)


def _signed_rank(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """Wilcoxon's signed-rank W and two-sided p; zero differences dropped (Wilcoxon's convention),
    no evidence when every difference is zero."""
    if np.all(a == b):
        return 0.0, 1.0
    res = stats.wilcoxon(a, b, zero_method="wilcox", alternative="two-sided")
    return float(res.statistic), float(res.pvalue)


def friedman_wilcoxon(df: pd.DataFrame, value: str, by: str, block: str) -> FriedmanWilcoxon:
    """Friedman's test of ``value`` across the groups of ``by`` with ``block`` (e.g. the unit) as the
    repeated factor; blocks missing a group are left out and counted in a note."""
    wide = df.pivot_table(index=block, columns=by, values=value, aggfunc="mean")
    names = [str(c) for c in wide.columns]
    if len(names) < 2:
        raise ValueError(f"need at least two groups of {by!r}, got {len(names)}")
    complete = wide.dropna()
    notes = []
    if len(complete) < len(wide):
        notes.append(f"{len(wide) - len(complete)} {block}(s) lack a {by} and are left out of the paired test")
    if len(complete) < 2:
        raise ValueError(f"need at least two {block}s seen in every {by}, got {len(complete)}")
    x = complete.to_numpy(float)
    within = np.apply_along_axis(stats.rankdata, 1, x)
    if len(names) == 2:
        test, (statistic, p) = "Wilcoxon signed-rank", _signed_rank(x[:, 0], x[:, 1])
    elif np.all(np.ptp(x, axis=1) == 0):
        test, statistic, p = "Friedman", 0.0, 1.0
        notes.append(f"every {block} has the same {value} in every {by}: no evidence of a difference")
    else:
        test = "Friedman"
        statistic, p = (float(v) for v in stats.friedmanchisquare(*x.T))
    rows = []
    for i, j in combinations(range(len(names)), 2):
        w, pv = _signed_rank(x[:, i], x[:, j])
        rows.append([names[i], names[j], int(np.sum(x[:, i] != x[:, j])), w, pv])
    pairs = pd.DataFrame(rows, columns=["group_a", "group_b", "n", "W", "p"])
    pairs["p_holm"] = holm(pairs["p"].to_numpy())
    groups = pd.DataFrame({"group": names, "n": len(x), "median": np.median(x, axis=0),
                           "mean_rank": within.mean(axis=0)})
    if len(x) < 10:
        notes.append(f"fewer than 10 {block}s: the p-value's large-sample approximation is rough")
    return FriedmanWilcoxon(value=value, by=by, block=block, groups=groups, statistic=float(statistic),
                            df=len(names) - 1, p=float(p), pairs=pairs, test=test, notes=notes)
