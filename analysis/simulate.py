"""Simulated response exports with planted effects, for tests and benchmarks."""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.special import expit

__all__ = ["simulate_responses"]


def simulate_responses(
    n_participants: int = 100,
    n_units: int = 60,
    bases=("neuron", "pca", "nmf"),
    effects=(0.0, 0.5, -0.4),
    intercept: float = 0.8,
    sd_participant: float = 0.6,
    sd_unit: float = 0.9,
    trials_per_pair: int = 1,
    log_rt_mean: float = 7.8,
    log_rt_effects=(0.0, 0.1, -0.05),
    sd_rt_participant: float = 0.3,
    sd_rt_unit: float = 0.15,
    sd_rt_residual: float = 0.4,
    seed: int = 0,
) -> pd.DataFrame:
    """Participants × units fully crossed; each unit belongs to one basis (units are nested in
    bases, participants cross them), as in a study that shows every participant every unit.

    Planted truth: logit P(correct) = intercept + effects[basis] + a_participant + c_unit,
    log rt_ms = log_rt_mean + log_rt_effects[basis] + participant + unit + noise.
    """
    rng = np.random.default_rng(seed)
    unit_basis = np.arange(n_units) % len(bases)
    a = rng.normal(0, sd_participant, n_participants)
    c = rng.normal(0, sd_unit, n_units)
    ar = rng.normal(0, sd_rt_participant, n_participants)
    cr = rng.normal(0, sd_rt_unit, n_units)
    P, U = np.meshgrid(np.arange(n_participants), np.arange(n_units), indexing="ij")
    P = np.repeat(P.ravel(), trials_per_pair)
    U = np.repeat(U.ravel(), trials_per_pair)
    B = unit_basis[U]
    eta = intercept + np.asarray(effects)[B] + a[P] + c[U]
    correct = (rng.random(len(P)) < expit(eta)).astype(int)
    log_rt = (log_rt_mean + np.asarray(log_rt_effects)[B] + ar[P] + cr[U]
              + rng.normal(0, sd_rt_residual, len(P)))
    basis = np.asarray(bases)[B]
    return pd.DataFrame(
        {
            "study": "sim",
            "participant": np.char.add("p", P.astype(str)),
            "condition": basis,
            "basis": basis,
            "layer": "layer3",
            "unit": np.char.add(np.char.add("layer3:", basis), np.char.add(":", U.astype(str))),
            "trial_kind": "main",
            "correct": correct,
            "rt_ms": np.exp(log_rt),
            "log_rt": log_rt,
            "confidence": rng.integers(1, 4, len(P)),
        }
    )
