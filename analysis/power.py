"""Power of a 2AFC study by simulation, for the three designs a study can have:

- ``between``: each participant is assigned one condition and answers ``trials`` trials about units of
  that condition; every condition has its own ``units`` units; ``participants`` per condition.
- ``within``: every participant answers ``trials`` trials in every condition; the ``units`` units are
  shared by the conditions (crossed with them); ``participants`` in all.
- ``mixed``: ``groups`` of conditions vary between participants, the conditions of a group within
  them (a participant answers ``trials`` trials in each condition of their group); ``participants``
  per group, units shared.

Within and mixed studies are simulated by ``analysis.simulate.simulate_groups``. Responses follow

    logit P(correct) = logit(accuracy[condition]) + a_participant + c_unit,
    a ~ N(0, participant_sd²),  c ~ N(0, unit_sd²),

so ``accuracy`` is the accuracy of a typical participant on a typical unit (random effects at
zero); the average accuracy is pulled towards 0.5 by the random effects. Each simulated study is
fitted with ``correct ~ condition + (1 | participant) + (1 | unit)`` (Laplace GLMM) and tested by
Wald z of each condition against the first one and by the likelihood-ratio test against
``correct ~ 1 + ...``. Power is the rejection rate at ``alpha`` over the fits that converged,
with its Monte-Carlo standard error sqrt(p (1 − p) / n).
"""

from __future__ import annotations

import math
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy.special import expit, logit

from .glmm import BinomialGLMM
from .lmm import lrt
from .simulate import simulate_groups

__all__ = ["DESIGNS", "PowerResult", "design_groups", "power_analysis", "simulate_once", "simulate_study"]

DESIGNS = ("between", "within", "mixed")

FORMULA = "correct ~ condition + (1 | participant) + (1 | unit)"
NULL_FORMULA = "correct ~ 1 + (1 | participant) + (1 | unit)"


def _level(i: int) -> str:
    # treatment coding sorts levels: zero-padded codes keep the first condition the reference
    return f"c{i:03d}"


def simulate_study(accuracies, participants: int, units: int, trials: int,
                   participant_sd: float, unit_sd: float, rng) -> pd.DataFrame:
    """One simulated study: ``participants`` and ``units`` per condition; each participant sees
    ``trials`` units of their condition, all distinct while trials ≤ units."""
    rng = np.random.default_rng(rng)
    acc = np.asarray(list(accuracies), dtype=float)
    k = len(acc)
    P = k * participants
    cond_of_p = np.repeat(np.arange(k), participants)
    a = rng.normal(0.0, participant_sd, P)
    c = rng.normal(0.0, unit_sd, k * units)
    reps = math.ceil(trials / units)
    local = np.stack([np.concatenate([rng.permutation(units) for _ in range(reps)])[:trials]
                      for _ in range(P)])
    unit = (cond_of_p[:, None] * units + local).ravel()
    part = np.repeat(np.arange(P), trials)
    cond = cond_of_p[part]
    eta = logit(acc)[cond] + a[part] + c[unit]
    correct = (rng.random(len(eta)) < expit(eta)).astype(int)
    return pd.DataFrame({
        "participant": np.char.add("p", part.astype(str)),
        "unit": np.char.add("u", unit.astype(str)),
        "condition": np.array([_level(i) for i in range(k)])[cond],
        "correct": correct,
    })


def design_groups(names, design: str = "between", groups=None) -> list[list[int]] | None:
    """The conditions (indices into ``names``) each between-participant group answers: None for the
    between design (``simulate_study``), one group of all for within, ``groups`` (lists of names,
    every condition in exactly one) for mixed."""
    if design not in DESIGNS:
        raise ValueError(f"unknown design {design!r}; expected one of {', '.join(DESIGNS)}")
    if design == "between":
        if groups:
            raise ValueError("groups are for the mixed design")
        return None
    if design == "within":
        if groups:
            raise ValueError("groups are for the mixed design; a within design has one group")
        return [list(range(len(names)))]
    if not groups or len(groups) < 2:
        raise ValueError("a mixed design needs at least two groups of conditions, e.g. a,b;c,d")
    flat = [c for g in groups for c in g]
    unknown = sorted(set(flat) - set(names))
    if unknown:
        raise ValueError(f"groups name unknown condition(s) {', '.join(unknown)}; the conditions are "
                         f"{', '.join(names)}")
    if len(flat) != len(set(flat)) or set(flat) != set(names):
        raise ValueError("in a mixed design every condition belongs to exactly one group")
    return [[names.index(c) for c in g] for g in groups]


def simulate_once(args) -> dict:
    """Simulate and fit one study; returns {"ok", "p_wald": [...], "p_lrt", "error"}."""
    accuracies, participants, units, trials, participant_sd, unit_sd, seed, *rest = args
    groups = rest[0] if rest else None
    if groups is None:
        df = simulate_study(accuracies, participants, units, trials, participant_sd, unit_sd, seed)
    else:
        logits = {_level(i): float(logit(a)) for i, a in enumerate(accuracies)}
        df = simulate_groups([[_level(i) for i in g] for g in groups], logits,
                             participants_per_group=participants, units=units,
                             trials_per_condition=trials, sd_participant=participant_sd,
                             sd_unit=unit_sd, seed=seed)
    k = len(accuracies)
    try:
        big = BinomialGLMM.from_formula(FORMULA, df).fit()
        small = BinomialGLMM.from_formula(NULL_FORMULA, df).fit(se="rx")
    except Exception as exc:  # a failed fit is counted, not fatal
        return {"ok": False, "p_wald": [math.nan] * (k - 1), "p_lrt": math.nan, "error": str(exc)}
    f = big.fixed.set_index("term")
    p_wald = [float(f.loc[f"condition{_level(i)}", "p"]) for i in range(1, k)]
    ok = bool(big.converged and small.converged and np.all(np.isfinite(p_wald)))
    return {"ok": ok, "p_wald": p_wald, "p_lrt": lrt(small, big)["p"],
            "error": None if ok else "not converged"}


@dataclass
class PowerResult:
    """Power per sample size and test: ``table`` has participants (per condition), units
    (per condition), trials (per participant), test, power, mc_se, n_fits, n_failed."""

    table: pd.DataFrame
    settings: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        rows = []
        for r in self.table.to_dict(orient="records"):
            rows.append({k: (None if isinstance(v, float) and not math.isfinite(v) else
                             (int(v) if isinstance(v, np.integer) else v)) for k, v in r.items()})
        return {"settings": self.settings, "power": rows}

    def summary(self) -> str:
        s = self.settings
        acc = ", ".join(f"{k} {v:g}" for k, v in s["accuracy"].items())
        design = s.get("design", "between")
        layout = {
            "between": (f"{s['units']} units per condition, {s['trials']} trials per participant; "
                        "participants per condition, one condition each"),
            "within": (f"{s['units']} units shared by the conditions, {s['trials']} trials per "
                       "participant in each condition; participants in all, every condition each"),
            "mixed": (f"{s['units']} units shared by the conditions, {s['trials']} trials per "
                      "participant in each condition of their group; participants per group, groups "
                      + " | ".join(", ".join(g) for g in s.get("groups") or [])),
        }[design]
        lines = [
            f"Power by simulation ({s['sims']} studies per sample size, seed {s['seed']}, "
            f"alpha {s['alpha']:g})",
            f"accuracy of a typical participant on a typical unit: {acc}",
            f"{design} design; SD participant {s['participant_sd']:g}, SD unit {s['unit_sd']:g} "
            f"(logit); {layout}",
            "",
            f"{'participants':>12}  {'test':<34}{'power':>7}{'MC s.e.':>9}{'fits':>6}{'failed':>8}",
        ]
        for r in self.table.itertuples():
            lines.append(f"{r.participants:>12}  {r.test:<34}{r.power:7.3f}{r.mc_se:9.3f}"
                         f"{r.n_fits:6d}{r.n_failed:8d}")
        return "\n".join(lines)


def power_analysis(accuracy: dict, participants=(30, 60, 90), units: int = 20, trials: int = 18,
                   participant_sd: float = 0.5, unit_sd: float = 0.8, sims: int = 100,
                   seed: int = 0, alpha: float = 0.05, jobs: int = 1, design: str = "between",
                   groups=None) -> PowerResult:
    """Simulated power for each number of participants (per condition for the between design, in all
    for within, per group for mixed; see the module's docstring for ``units`` and ``trials``).

    ``accuracy``: ordered {condition: accuracy}; the first condition is the reference of the
    Wald contrasts. Study j at sample size n uses the seed sequence (seed, n, j), so the numbers
    do not depend on ``jobs``.
    """
    names = list(accuracy)
    acc = [float(accuracy[n]) for n in names]
    if len(names) < 2:
        raise ValueError("need at least two conditions")
    if not all(0 < a < 1 for a in acc):
        raise ValueError("accuracies must lie strictly between 0 and 1")
    if min(units, trials, sims) < 1 or min(participants) < 2:
        raise ValueError("need units, trials, sims ≥ 1 and at least 2 participants per condition")
    layout = design_groups(names, design, groups)
    tasks = [(acc, int(n), units, trials, participant_sd, unit_sd,
              np.random.SeedSequence([seed, int(n), j]), layout)
             for n in participants for j in range(sims)]
    if jobs > 1:
        with ProcessPoolExecutor(max_workers=jobs) as ex:
            results = list(ex.map(simulate_once, tasks, chunksize=max(1, len(tasks) // (4 * jobs))))
    else:
        results = [simulate_once(t) for t in tasks]
    rows = []
    for i, n in enumerate(participants):
        res = results[i * sims:(i + 1) * sims]
        good = [r for r in res if r["ok"]]
        tests = [(f"{names[c + 1]} vs {names[0]} (Wald z)", [r["p_wald"][c] for r in good])
                 for c in range(len(names) - 1)]
        tests.append((f"condition (LRT, chi2 df {len(names) - 1})", [r["p_lrt"] for r in good]))
        for label, ps in tests:
            m = len(ps)
            power = float(np.mean(np.asarray(ps) < alpha)) if m else math.nan
            rows.append({"participants": int(n), "units": units, "trials": trials, "test": label,
                         "power": power,
                         "mc_se": math.sqrt(power * (1 - power) / m) if m else math.nan,
                         "n_fits": m, "n_failed": len(res) - m})
    settings = {"accuracy": dict(zip(names, acc)), "participants": [int(n) for n in participants],
                "units": units, "trials": trials, "participant_sd": participant_sd,
                "unit_sd": unit_sd, "sims": sims, "seed": seed, "alpha": alpha,
                "formula": FORMULA, "design": design,
                "groups": None if layout is None else [[names[i] for i in g] for g in layout],
                "scale": "logit; accuracy for random effects at zero"}
    return PowerResult(pd.DataFrame(rows), settings)
