"""Simulated power: the simulator plants what it is told, power grows with the sample, and with
equal accuracies the rejection rate stays near alpha."""

import json
import math

import numpy as np
import pytest

from analysis.__main__ import main
from analysis.power import power_analysis, simulate_study


def test_simulate_study_design_and_planted_accuracy():
    df = simulate_study([0.6, 0.9], participants=400, units=10, trials=12, participant_sd=0.0,
                        unit_sd=0.0, rng=0)
    assert len(df) == 2 * 400 * 12
    # one condition per participant; units belong to one condition
    assert (df.groupby("participant")["condition"].nunique() == 1).all()
    assert (df.groupby("unit")["condition"].nunique() == 1).all()
    assert df.groupby("condition")["unit"].nunique().tolist() == [10, 10]
    # 12 trials over 10 units: every unit once, two of them twice
    per = df.groupby(["participant", "unit"]).size().groupby("participant").max()
    assert per.max() == 2
    acc = df.groupby("condition")["correct"].mean().to_numpy()
    se = np.sqrt(np.array([0.6 * 0.4, 0.9 * 0.1]) / 4800)
    assert np.all(np.abs(acc - [0.6, 0.9]) < 4 * se)
    short = simulate_study([0.7, 0.7], 3, units=20, trials=18, participant_sd=0.5, unit_sd=0.8, rng=1)
    assert (short.groupby(["participant", "unit"]).size() == 1).all()


def test_power_rises_with_participants():
    res = power_analysis({"neuron": 0.65, "pca": 0.85}, participants=(4, 24), units=10,
                         trials=10, participant_sd=0.3, unit_sd=0.3, sims=25, seed=3)
    t = res.table
    assert set(t["test"]) == {"pca vs neuron (Wald z)", "condition (LRT, chi2 df 1)"}
    for test, d in t.groupby("test"):
        small, big = d.sort_values("participants")["power"].to_numpy()
        assert big > small + 0.2, test
        assert big > 0.8
    r = t.iloc[0]
    assert r.mc_se == pytest.approx(math.sqrt(r.power * (1 - r.power) / r.n_fits))
    assert (t["n_failed"] == 0).all()


def test_type_one_error_near_alpha():
    # equal accuracies; 120 studies: a rate above alpha + 3 Monte-Carlo SE (≈ 0.110) would mean
    # an anticonservative test, none at all a broken one (P(0 of 120) = 0.95^120 ≈ 2e-3)
    res = power_analysis({"a": 0.75, "b": 0.75}, participants=(15,), units=15, trials=10,
                         participant_sd=0.4, unit_sd=0.4, sims=120, seed=11)
    bound = 0.05 + 3 * math.sqrt(0.05 * 0.95 / 120)
    for r in res.table.itertuples():
        assert r.n_fits >= 115
        assert 0 < r.power < bound, (r.test, r.power)


def test_cli_power_json(capsys):
    assert main(["power", "--accuracy", "neuron=0.7,pca=0.8,nmf=0.85", "--participants", "5",
                 "--units", "6", "--trials", "6", "--sims", "3", "--seed", "0", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert [r["test"] for r in out["power"]] == [
        "pca vs neuron (Wald z)", "nmf vs neuron (Wald z)", "condition (LRT, chi2 df 2)"]
    assert out["settings"]["accuracy"] == {"neuron": 0.7, "pca": 0.8, "nmf": 0.85}
    assert main(["power", "--accuracy", "neuron=0.7"]) == 2
    assert main(["power", "--accuracy", "neuron"]) == 2


def test_grouped_designs_assign_conditions_as_the_study_design_says():
    from analysis.power import design_groups
    from analysis.simulate import simulate_groups

    names = ["a", "b", "c", "d"]
    assert design_groups(names, "between") is None
    assert design_groups(names, "within") == [[0, 1, 2, 3]]
    assert design_groups(names, "mixed", [["a", "b"], ["c", "d"]]) == [[0, 1], [2, 3]]
    for bad in ([["a", "b"]], [["a", "b"], ["b", "c", "d"]], [["a", "b"], ["c", "x"]]):
        with pytest.raises(ValueError):
            design_groups(names, "mixed", bad)
    df = simulate_groups([["a", "b"], ["c", "d"]], dict.fromkeys(names, 0.0), participants_per_group=5,
                         units=8, trials_per_condition=6, seed=0)
    per = df.groupby("participant")["condition"].agg(lambda s: tuple(sorted(set(s))))
    assert set(per) == {("a", "b"), ("c", "d")} and (per == ("a", "b")).sum() == 5
    assert (df.groupby(["participant", "condition"]).size() == 6).all()
    # each participant sees distinct units within a condition; units are shared by all conditions
    assert (df.groupby(["participant", "condition"])["unit"].nunique() == 6).all()
    assert df.groupby("unit")["condition"].nunique().max() == 4


def test_within_design_has_more_power_than_between_with_the_same_answers():
    """400 answers either way; differences between participants cancel in a within-participant
    contrast, so it has the power a between design lacks."""
    kw = {"units": 20, "participant_sd": 1.0, "unit_sd": 0.3, "sims": 30, "seed": 5}
    acc = {"a": 0.7, "b": 0.8}
    between = power_analysis(acc, participants=(10,), trials=20, **kw).table
    within = power_analysis(acc, participants=(20,), trials=10, design="within", **kw).table
    pb, pw = (t.set_index("test").loc["b vs a (Wald z)", "power"] for t in (between, within))
    assert pw > pb + 0.2
    assert (within["n_failed"] == 0).all()


def test_cli_power_mixed_design(capsys):
    assert main(["power", "--accuracy", "a=0.7,b=0.8,c=0.7,d=0.85", "--design", "mixed", "--groups",
                 "a,b;c,d", "--participants", "6", "--units", "8", "--trials", "4", "--sims", "2",
                 "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["settings"]["design"] == "mixed" and out["settings"]["groups"] == [["a", "b"], ["c", "d"]]
    assert main(["power", "--accuracy", "a=0.7,b=0.8", "--design", "mixed", "--groups", "a,b",
                 "--sims", "1"]) == 2
