"""Accuracy per condition with seeded bootstrap CIs over participants and over units; per-unit
accuracy and its Kruskal–Wallis / Conover comparison across conditions; RT and confidence
(median, IQR) per condition. Computed on main trials (catch trials excluded)."""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats

from ._json import clean as _clean, records as _records
from .load import catch_trials, main_trials
from .nonparametric import FriedmanWilcoxon, KruskalConover, friedman_wilcoxon, kruskal_conover

__all__ = ["accuracy_by_condition", "accuracy_by_factor", "accuracy_by_paradigm", "FACTOR_COLUMNS", "describe",
           "cluster_bootstrap_ci", "unit_accuracy",
           "unit_accuracy_test", "rt_confidence_by_condition"]


def cluster_bootstrap_ci(clusters: pd.Series, correct: pd.Series, n_boot: int = 2000,
                         level: float = 0.95, rng=None) -> tuple[float, float]:
    """Percentile CI of pooled accuracy, resampling whole clusters (participants or units): scipy's
    ``bootstrap`` on the clusters' (correct, trials) pairs with the ratio of sums as statistic. NaN
    with fewer than two clusters."""
    g = correct.groupby(clusters.to_numpy())
    k = g.sum().to_numpy(float)
    n = g.size().to_numpy(float)
    if len(k) < 2:
        return float("nan"), float("nan")
    res = stats.bootstrap((k, n), _pooled, paired=True, vectorized=True, n_resamples=n_boot,
                          confidence_level=level, method="percentile", rng=np.random.default_rng(rng))
    return float(res.confidence_interval.low), float(res.confidence_interval.high)


def _pooled(k, n, axis=-1):
    return k.sum(axis=axis) / n.sum(axis=axis)


def _containing(interval, estimate) -> tuple[float, float]:
    """The interval widened, where needed, to contain its estimate (a percentile interval can miss
    it by a rounding, and an error bar of negative length breaks the figure); NaN stays NaN."""
    lo, hi = interval
    if np.isfinite(lo) and np.isfinite(hi):
        lo, hi = min(lo, estimate), max(hi, estimate)
    return lo, hi


def accuracy_by_condition(df: pd.DataFrame, n_boot: int = 2000, seed: int = 0,
                          level: float = 0.95, by: str = "condition") -> pd.DataFrame:
    main = main_trials(df)
    rng = np.random.default_rng(seed)
    rows = []
    for cond, d in main.groupby(by, sort=True):
        per_p = d.groupby("participant")["correct"].mean()
        acc = float(d["correct"].mean())
        lo, hi = _containing(cluster_bootstrap_ci(d["participant"], d["correct"], n_boot, level, rng), acc)
        ulo, uhi = _containing(cluster_bootstrap_ci(d["unit"], d["correct"], n_boot, level, rng), acc)
        row = {
            "condition": cond,
            "trials": int(len(d)),
            "participants": int(d["participant"].nunique()),
            "units": int(d["unit"].nunique()),
            "accuracy": acc,
            "ci_low": lo,
            "ci_high": hi,
            "unit_ci_low": ulo,
            "unit_ci_high": uhi,
            "participant_mean": float(per_p.mean()),
            "participant_sem": float(per_p.std(ddof=1) / np.sqrt(len(per_p))) if len(per_p) > 1 else float("nan"),
        }
        if "rt_ms" in d.columns:
            row["median_rt_s"] = float(pd.to_numeric(d["rt_ms"], errors="coerce").median() / 1000)
        if "confidence" in d.columns:
            row["mean_confidence"] = float(pd.to_numeric(d["confidence"], errors="coerce").mean())
        rows.append(row)
    return pd.DataFrame(rows)


#: the export's condition factors (docs/contracts.md §2), in the order a table lists them
FACTOR_COLUMNS = ("reference_type", "n_references", "min_references", "query_band", "basis", "layer", "paradigm")


def accuracy_by_factor(df: pd.DataFrame, n_boot: int = 2000, seed: int = 0, level: float = 0.95) -> pd.DataFrame:
    """Accuracy per level of each factor that varies in the data (main trials), pooled over the other
    factors, with the same bootstrap CIs as per condition: columns factor, level, then those of
    `accuracy_by_condition`. Empty when no factor column has two levels."""
    main = main_trials(df)
    tables = []
    for factor in FACTOR_COLUMNS:
        if factor in main.columns and main[factor].nunique(dropna=True) > 1:
            table = accuracy_by_condition(df, n_boot=n_boot, seed=seed, level=level, by=factor)
            table = table.rename(columns={"condition": "level"})
            table["level"] = table["level"].astype(str)
            table.insert(0, "factor", factor)
            tables.append(table)
    return pd.concat(tables, ignore_index=True) if tables else pd.DataFrame()


def accuracy_by_paradigm(df: pd.DataFrame, n_boot: int = 2000, seed: int = 0, level: float = 0.95) -> pd.DataFrame:
    """Accuracy per paradigm and reference type (main trials), with the same bootstrap CIs as per condition:
    columns paradigm, reference_type, then those of `accuracy_by_condition`. A reference 2AFC and an occlusion
    2AFC answer different questions, so their accuracies are read side by side, never pooled (Zimmermann et al.
    2021 report 68 ± 4 % with synthetic, about 66-67 ± 3 % with natural and 60 ± 3 % with no references on
    the occlusion task). Empty without a paradigm column."""
    main = main_trials(df)
    if "paradigm" not in main.columns or main.empty:
        return pd.DataFrame()
    tables = []
    kinds = "reference_type" if "reference_type" in main.columns else "condition"
    for paradigm, d in main.groupby("paradigm", sort=True):
        table = accuracy_by_condition(d, n_boot=n_boot, seed=seed, level=level, by=kinds)
        table = table.rename(columns={"condition": "reference_type"})
        table.insert(0, "paradigm", str(paradigm))
        tables.append(table)
    return pd.concat(tables, ignore_index=True)


def unit_accuracy(df: pd.DataFrame, by: str = "condition") -> pd.DataFrame:
    """Accuracy of each unit in each condition (main trials): condition, unit, [basis, layer],
    trials, participants, accuracy."""
    main = main_trials(df)
    extra = [c for c in ("basis", "layer") if c in main.columns]
    cols = [by, "unit", *extra, "trials", "participants", "accuracy"]
    if main.empty:
        return pd.DataFrame(columns=cols)
    g = main.groupby([by, "unit"], sort=True)
    out = pd.DataFrame({
        "trials": g.size(),
        "participants": g["participant"].nunique(),
        "accuracy": g["correct"].mean().astype(float),
    })
    for c in extra:
        out[c] = g[c].first()
    return out.reset_index()[cols]


def unit_accuracy_test(df: pd.DataFrame, by: str = "condition",
                       units: pd.DataFrame | None = None) -> KruskalConover | FriedmanWilcoxon | None:
    """Per-unit accuracy across conditions; None with fewer than two conditions.

    Conditions over disjoint units (e.g. one basis each): Kruskal–Wallis with Conover–Iman pairs,
    Holm-adjusted (Zimmermann et al. 2023). Conditions that all show the same units (e.g. one basis
    with different references): the accuracies are paired by unit, so Friedman's test with Wilcoxon
    signed-rank pairs. A partial overlap fits neither; Kruskal–Wallis runs with a note."""
    units = unit_accuracy(df, by) if units is None else units
    if units[by].nunique() < 2:
        return None
    unit_sets = units.groupby(by)["unit"].apply(frozenset)
    if unit_sets.nunique() == 1 and len(unit_sets.iloc[0]) >= 2:
        return friedman_wilcoxon(units, "accuracy", by, "unit")
    res = kruskal_conover(units, "accuracy", by)
    shared = units.groupby("unit")[by].nunique()
    if (shared > 1).any():
        res.notes.append(f"{int((shared > 1).sum())} unit(s) appear in several conditions but not in all: the "
                         "samples are not independent, as the Kruskal-Wallis test assumes, nor fully paired")
    return res


def _quartiles(x: pd.Series) -> dict:
    x = pd.to_numeric(x, errors="coerce").dropna()
    if x.empty:
        return {"n": 0, "median": float("nan"), "q1": float("nan"), "q3": float("nan"),
                "iqr": float("nan")}
    q1, med, q3 = np.quantile(x.to_numpy(float), [0.25, 0.5, 0.75])
    return {"n": int(len(x)), "median": float(med), "q1": float(q1), "q3": float(q3),
            "iqr": float(q3 - q1)}


def rt_confidence_by_condition(df: pd.DataFrame, by: str = "condition") -> pd.DataFrame:
    """Median and IQR (quartiles by linear interpolation, numpy's default) of the response time
    in seconds and of the confidence rating per condition, main trials; columns of an absent
    measure are left out."""
    main = main_trials(df)
    rows = []
    for cond, d in main.groupby(by, sort=True):
        row = {by: cond}
        if "rt_ms" in d.columns:
            q = _quartiles(pd.to_numeric(d["rt_ms"], errors="coerce") / 1000)
            row.update({f"rt_{k}" if k == "n" else f"rt_{k}_s": v for k, v in q.items()})
        if "confidence" in d.columns and d["confidence"].notna().any():
            q = _quartiles(d["confidence"])
            row.update({f"confidence_{k}": v for k, v in q.items()})
            row["confidence_mean"] = float(pd.to_numeric(d["confidence"], errors="coerce").mean())
        rows.append(row)
    return pd.DataFrame(rows)


def describe(df: pd.DataFrame, n_boot: int = 2000, seed: int = 0, level: float = 0.95) -> dict:
    """Plain-dict summary (the CLI's ``describe --json``)."""
    table = accuracy_by_condition(df, n_boot=n_boot, seed=seed, level=level)
    catch = catch_trials(df)
    units = unit_accuracy(df)
    test = unit_accuracy_test(df, units=units)
    return {
        "conditions": _records(table),
        "rt_confidence": _records(rt_confidence_by_condition(df)),
        "factors": _records(accuracy_by_factor(df, n_boot=n_boot, seed=seed, level=level)),
        "paradigms": _records(accuracy_by_paradigm(df, n_boot=n_boot, seed=seed, level=level)),
        "units": _records(units),
        "unit_accuracy_test": test.to_dict() if test is not None else None,
        "catch": {
            "trials": int(len(catch)),
            "accuracy": _clean(float(catch["correct"].mean())) if len(catch) else None,
        },
        "participants": int(df["participant"].nunique()),
        "main_trials": int(len(main_trials(df))),
        "bootstrap": {"n_boot": n_boot, "seed": seed, "level": level,
                      "ci": "ci_low/ci_high resample participants; unit_ci_* resample units"},
    }
