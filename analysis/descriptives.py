"""Accuracy per condition with seeded bootstrap CIs over participants and over units; RT and
confidence. Computed on main trials (catch trials excluded)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from .load import catch_trials, main_trials

__all__ = ["accuracy_by_condition", "describe", "cluster_bootstrap_ci"]


def cluster_bootstrap_ci(clusters: pd.Series, correct: pd.Series, n_boot: int = 2000,
                         level: float = 0.95, rng=None) -> tuple[float, float]:
    """Percentile CI of pooled accuracy, resampling whole clusters (participants or units)."""
    rng = np.random.default_rng(rng)
    g = correct.groupby(clusters.to_numpy())
    k = g.sum().to_numpy(float)
    n = g.size().to_numpy(float)
    if len(k) < 2:
        return float("nan"), float("nan")
    idx = rng.integers(0, len(k), size=(n_boot, len(k)))
    acc = k[idx].sum(1) / n[idx].sum(1)
    a = (1 - level) / 2
    lo, hi = np.quantile(acc, [a, 1 - a])
    return float(lo), float(hi)


def accuracy_by_condition(df: pd.DataFrame, n_boot: int = 2000, seed: int = 0,
                          level: float = 0.95, by: str = "condition") -> pd.DataFrame:
    main = main_trials(df)
    rng = np.random.default_rng(seed)
    rows = []
    for cond, d in main.groupby(by, sort=True):
        per_p = d.groupby("participant")["correct"].mean()
        lo, hi = cluster_bootstrap_ci(d["participant"], d["correct"], n_boot, level, rng)
        ulo, uhi = cluster_bootstrap_ci(d["unit"], d["correct"], n_boot, level, rng)
        row = {
            "condition": cond,
            "trials": int(len(d)),
            "participants": int(d["participant"].nunique()),
            "units": int(d["unit"].nunique()),
            "accuracy": float(d["correct"].mean()),
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


def describe(df: pd.DataFrame, n_boot: int = 2000, seed: int = 0, level: float = 0.95) -> dict:
    """Plain-dict summary (the CLI's ``describe --json``)."""
    table = accuracy_by_condition(df, n_boot=n_boot, seed=seed, level=level)
    catch = catch_trials(df)

    def clean(v):
        if isinstance(v, (float, np.floating)):
            return None if not np.isfinite(v) else float(v)
        if isinstance(v, np.integer):
            return int(v)
        return v

    return {
        "conditions": [{k: clean(v) for k, v in r.items()} for r in table.to_dict(orient="records")],
        "catch": {
            "trials": int(len(catch)),
            "accuracy": clean(float(catch["correct"].mean())) if len(catch) else None,
        },
        "participants": int(df["participant"].nunique()),
        "main_trials": int(len(main_trials(df))),
        "bootstrap": {"n_boot": n_boot, "seed": seed, "level": level,
                      "ci": "ci_low/ci_high resample participants; unit_ci_* resample units"},
    }
