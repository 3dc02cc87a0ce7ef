"""Simulated response exports with planted effects, for tests and benchmarks."""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.special import expit

__all__ = ["OCCLUSION_ACCURACY", "simulate_groups", "simulate_machine_responses", "simulate_occlusion_responses",
           "simulate_responses"]

#: people's accuracy on the occlusion task by reference type in Zimmermann et al. (2021, NeurIPS, "How well
#: do feature visualizations support causal understanding of CNN activations?"): synthetic 68 ± 4 %,
#: natural about 66-67 ± 3 % (66.5 here), none 60 ± 3 %
OCCLUSION_ACCURACY = {"synthetic": 0.68, "natural": 0.665, "none": 0.60}


def _identity_columns(P: np.ndarray, U: np.ndarray, basis: np.ndarray) -> dict:
    """Who answered which unit, named as the export names them (one basis per condition, layer3)."""
    return {
        "study": "sim",
        "participant": np.char.add("p", P.astype(str)),
        "condition": basis,
        "basis": basis,
        "layer": "layer3",
        "unit": np.char.add(np.char.add("layer3:", basis), np.char.add(":", U.astype(str))),
    }


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
    units_per_participant: int | None = None,
) -> pd.DataFrame:
    """Participants × units fully crossed; each unit belongs to one basis (units are nested in
    bases, participants cross them), as in a study that shows every participant every unit.
    With ``units_per_participant`` each participant sees that many units drawn at random
    instead (an incomplete crossed design, as a large online study has).

    Planted truth: logit P(correct) = intercept + effects[basis] + a_participant + c_unit,
    log rt_ms = log_rt_mean + log_rt_effects[basis] + participant + unit + noise.
    """
    rng = np.random.default_rng(seed)
    unit_basis = np.arange(n_units) % len(bases)
    a = rng.normal(0, sd_participant, n_participants)
    c = rng.normal(0, sd_unit, n_units)
    ar = rng.normal(0, sd_rt_participant, n_participants)
    cr = rng.normal(0, sd_rt_unit, n_units)
    if units_per_participant is None:
        P, U = np.meshgrid(np.arange(n_participants), np.arange(n_units), indexing="ij")
    else:
        k = units_per_participant
        if not 0 < k <= n_units:
            raise ValueError(f"units_per_participant must lie in 1..{n_units}")
        P = np.repeat(np.arange(n_participants), k)[:, None]
        # k distinct units per participant: the k smallest of n_units uniform keys per row
        # would need n_participants × n_units memory, so draw in chunks of participants
        U = np.concatenate([
            np.argpartition(rng.random((min(4096, n_participants - s), n_units)), k - 1, axis=1)[:, :k]
            for s in range(0, n_participants, 4096)
        ])
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
            **_identity_columns(P, U, basis),
            "trial_kind": "main",
            "correct": correct,
            "rt_ms": np.exp(log_rt),
            "log_rt": log_rt,
            "confidence": rng.integers(1, 4, len(P)),
        }
    )


def simulate_machine_responses(
    n_participants: int = 60,
    n_units: int = 30,
    n_pairs: int = 10,
    alpha: float = 8.0,
    related: bool = True,
    bases=("neuron", "pca", "nmf"),
    delta_mean: float = 0.12,
    delta_sd_unit: float = 0.1,
    delta_sd_pair: float = 0.05,
    unrelated_accuracy: float = 0.75,
    sd_unit_unrelated: float = 0.8,
    catch_per_participant: int = 2,
    stored_alpha: float = 1.0,
    seed: int = 0,
) -> pd.DataFrame:
    """An export with the machine observer's columns (``mis_delta``, ``unit_mis``): every participant
    answers one main trial per unit, on a query pair drawn at random, plus catch trials (no Δ).

    Each unit u has pairs with Δ_ui = μ_u + e_ui, μ_u ~ N(delta_mean, delta_sd_unit),
    e_ui ~ N(0, delta_sd_pair); its stored MIS is mean_i σ(stored_alpha·Δ_ui), as the pipeline stores it.
    Planted truth: with ``related``, P(correct) = σ(alpha·Δ) of the pair shown; otherwise people ignore
    what the machine sees, logit P(correct) = logit(unrelated_accuracy) + c_u with
    c_u ~ N(0, sd_unit_unrelated) drawn independently of Δ.
    """
    rng = np.random.default_rng(seed)
    unit_basis = np.arange(n_units) % len(bases)
    mu = rng.normal(delta_mean, delta_sd_unit, n_units)
    deltas = mu[:, None] + rng.normal(0, delta_sd_pair, (n_units, n_pairs))
    stored_mis = expit(stored_alpha * deltas).mean(axis=1)
    c = rng.normal(0, sd_unit_unrelated, n_units)
    P, U = np.meshgrid(np.arange(n_participants), np.arange(n_units), indexing="ij")
    P, U = P.ravel(), U.ravel()
    pair = rng.integers(0, n_pairs, len(P))
    delta = deltas[U, pair]
    if related:
        p = expit(alpha * delta)
    else:
        p = expit(np.log(unrelated_accuracy / (1 - unrelated_accuracy)) + c[U])
    correct = (rng.random(len(P)) < p).astype(int)
    kind = np.full(len(P), "main", dtype=object)
    mis_delta = delta.astype(float)
    if catch_per_participant:
        cP = np.repeat(np.arange(n_participants), catch_per_participant)
        cU = rng.integers(0, n_units, len(cP))
        P, U = np.concatenate([P, cP]), np.concatenate([U, cU])
        correct = np.concatenate([correct, (rng.random(len(cP)) < 0.97).astype(int)])
        kind = np.concatenate([kind, np.full(len(cP), "catch", dtype=object)])
        mis_delta = np.concatenate([mis_delta, np.full(len(cP), np.nan)])
    correct_query = np.where(rng.random(len(P)) < 0.5, "a", "b")
    other = np.where(correct_query == "a", "b", "a")
    basis = np.asarray(bases)[unit_basis[U]]
    return pd.DataFrame(
        {
            **_identity_columns(P, U, basis),
            "reference_type": "natural",
            "paradigm": "reference_2afc",
            "trial_kind": kind,
            "correct_query": correct_query,
            "choice": np.where(correct == 1, correct_query, other),
            "correct": correct,
            "confidence": rng.integers(1, 4, len(P)),
            "rt_ms": np.exp(rng.normal(7.8, 0.4, len(P))),
            "instructions_ms": 30000.0,
            "unit_mis": stored_mis[U],
            "mis_delta": mis_delta,
        }
    )


def simulate_groups(groups, logits: dict, participants_per_group: int = 20, units: int = 40,
                    trials_per_condition: int = 10, sd_participant: float = 0.5, sd_unit: float = 0.8,
                    factors: dict | None = None, thresholds=None, seed=0) -> pd.DataFrame:
    """Participants in between-participant groups, each group's participants answering every
    condition of their group: ``groups`` lists the groups' conditions (one condition per group is a
    between-participants design, one group with all conditions a within-participant design, and
    anything else a mixed one, as a study's design assigns them). ``units`` units are shared by every
    condition (a unit is a unit of the network, shown under each condition); a participant answers
    ``trials_per_condition`` distinct units in each condition (units repeat only beyond ``units``).

    Planted truth: logit P(correct) = logits[condition] + a_participant + c_unit, a ~ N(0,
    sd_participant²), c ~ N(0, sd_unit²). ``factors``: {condition: {factor: level}} adds the
    conditions' factor columns (e.g. ``ref`` and ``cond`` of a 2 × 2 design). ``thresholds``: also a
    ``confidence`` rating 1..K from a cumulative logit on the same linear predictor,
    P(confidence ≤ k) = σ(thresholds[k−1] − η) (ordinal::clmm's parametrisation)."""
    rng = np.random.default_rng(seed)
    groups = [list(g) for g in groups]
    conditions = [c for g in groups for c in g]
    missing = [c for c in conditions if c not in logits]
    if missing:
        raise ValueError(f"no accuracy for condition(s) {', '.join(missing)}")
    n_p = participants_per_group * len(groups)
    a = rng.normal(0.0, sd_participant, n_p)
    c = rng.normal(0.0, sd_unit, units)
    reps = -(-trials_per_condition // units)
    P, U, C = [], [], []
    for g, conds in enumerate(groups):
        for i in range(participants_per_group):
            p = g * participants_per_group + i
            for cond in conds:
                us = np.concatenate([rng.permutation(units) for _ in range(reps)])[:trials_per_condition]
                P.append(np.full(len(us), p))
                U.append(us)
                C.append(np.full(len(us), cond, dtype=object))
    P, U, C = np.concatenate(P), np.concatenate(U), np.concatenate(C)
    eta = np.array([logits[k] for k in C], float) + a[P] + c[U]
    out = pd.DataFrame({
        "participant": np.char.add("p", P.astype(str)),
        "unit": np.char.add("u", U.astype(str)),
        "condition": C.astype(str),
        "trial_kind": "main",
        "correct": (rng.random(len(eta)) < expit(eta)).astype(int),
    })
    for name in sorted({f for levels in (factors or {}).values() for f in levels}):
        out[name] = [factors[k][name] for k in C]
    if thresholds is not None:
        cum = expit(np.asarray(thresholds, float)[None, :] - eta[:, None])
        out["confidence"] = 1 + (rng.random(len(eta))[:, None] > cum).sum(axis=1)
    return out


def simulate_occlusion_responses(
    n_participants: int = 90,
    n_units: int = 40,
    accuracy: dict | None = None,
    sd_participant: float = 0.4,
    sd_unit: float = 0.5,
    catch_per_participant: int = 3,
    basis: str = "pca",
    seed: int = 0,
) -> pd.DataFrame:
    """An export of an occlusion 2AFC study (paradigm ``occlusion_2afc``), one condition per reference type
    between participants (participants dealt to them in turn), every participant answering one main trial
    per unit plus catch trials, with the occlusion columns the web app exports (``occlusion_delta_a``,
    ``occlusion_delta_b``, and ``mis_delta``, the network's margin |Δ_correct| − |Δ_other|).

    Planted truth: logit P(correct) = logit(accuracy[reference_type]) + a_participant + c_unit, with
    a ~ N(0, sd_participant), c ~ N(0, sd_unit); ``accuracy`` defaults to :data:`OCCLUSION_ACCURACY`, the
    published values."""
    accuracy = dict(OCCLUSION_ACCURACY if accuracy is None else accuracy)
    kinds = list(accuracy)
    rng = np.random.default_rng(seed)
    a = rng.normal(0, sd_participant, n_participants)
    c = rng.normal(0, sd_unit, n_units)
    kind_of = np.arange(n_participants) % len(kinds)
    P, U = np.meshgrid(np.arange(n_participants), np.arange(n_units), indexing="ij")
    P, U = P.ravel(), U.ravel()
    base = np.log(np.array([accuracy[k] for k in kinds]) / (1 - np.array([accuracy[k] for k in kinds])))
    correct = (rng.random(len(P)) < expit(base[kind_of[P]] + a[P] + c[U])).astype(int)
    kind = np.full(len(P), "main", dtype=object)
    if catch_per_participant:
        cP = np.repeat(np.arange(n_participants), catch_per_participant)
        P, U = np.concatenate([P, cP]), np.concatenate([U, rng.integers(0, n_units, len(cP))])
        correct = np.concatenate([correct, (rng.random(len(cP)) < 0.97).astype(int)])
        kind = np.concatenate([kind, np.full(len(cP), "catch", dtype=object)])
    # each trial's changes: the correct side's |Δ| larger by a margin, the sign of each change free
    weak = rng.uniform(0.0, 0.3, len(P))
    strong = weak + rng.uniform(0.05, 0.6, len(P))
    sign_strong, sign_weak = rng.choice([-1.0, 1.0], len(P)), rng.choice([-1.0, 1.0], len(P))
    correct_query = np.where(rng.random(len(P)) < 0.5, "a", "b")
    delta_a = np.where(correct_query == "a", sign_strong * strong, sign_weak * weak)
    delta_b = np.where(correct_query == "a", sign_weak * weak, sign_strong * strong)
    reference_type = np.asarray(kinds, dtype=object)[kind_of[P]]
    basis_column = np.full(len(P), basis, dtype=object)
    other = np.where(correct_query == "a", "b", "a")
    return pd.DataFrame(
        {
            **_identity_columns(P, U, basis_column),
            "condition": np.char.add("occlusion-", reference_type.astype(str)),
            "reference_type": reference_type,
            "paradigm": "occlusion_2afc",
            "trial_kind": kind,
            "correct_query": correct_query,
            "choice": np.where(correct == 1, correct_query, other),
            "correct": correct,
            "confidence": rng.integers(1, 4, len(P)),
            "rt_ms": np.exp(rng.normal(7.9, 0.4, len(P))),
            "instructions_ms": 30000.0,
            "occlusion_delta_a": delta_a,
            "occlusion_delta_b": delta_b,
            "mis_delta": np.where(kind == "catch", np.nan, strong - weak),
        }
    )
