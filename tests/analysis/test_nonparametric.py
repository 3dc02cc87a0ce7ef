"""Kruskal–Wallis, Conover–Iman and Holm against hand-computed values and against a
from-first-principles computation written out here (counting mid-ranks, no scipy ranking)."""

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from analysis.descriptives import rt_confidence_by_condition, unit_accuracy, unit_accuracy_test
from analysis.nonparametric import conover_iman, friedman_wilcoxon, holm, kruskal_conover

# four groups with many ties, laid out like Conover's corn-yield example (Practical
# Nonparametric Statistics, 1999, §5.2)
CORN = {
    "1": [83, 91, 94, 89, 89, 96, 91, 92, 90],
    "2": [91, 90, 81, 83, 84, 83, 88, 91, 89, 84],
    "3": [101, 100, 91, 93, 96, 95, 94],
    "4": [78, 82, 81, 77, 79, 81, 80, 81],
}


def test_holm_worked_example():
    # the textbook four-hypothesis example: only H4 (0.005) and H1 (0.01) are rejected at 0.05
    adj = holm([0.01, 0.04, 0.03, 0.005])
    np.testing.assert_allclose(adj, [0.03, 0.06, 0.06, 0.02])
    assert list(adj < 0.05) == [True, False, False, True]


def test_holm_caps_at_one_keeps_order_and_skips_nan():
    np.testing.assert_allclose(holm([0.5, 0.6]), [1.0, 1.0])
    np.testing.assert_allclose(holm([0.02, np.nan, 0.01]), [0.02, np.nan, 0.02])
    assert holm([]).size == 0


def test_conover_hand_computed_no_ties():
    # ranks 1..9 in three groups: R̄ = 2, 5, 8; S² = N(N+1)/12 = 7.5; H = 12/90 · 3·(9+0+9) = 7.2
    # t_AB = 3 / sqrt(7.5 · (9−1−7.2)/6 · (1/3+1/3)) = 3 / sqrt(2/3)
    out = conover_iman({"A": [1, 2, 3], "B": [4, 5, 6], "C": [7, 8, 9]}).set_index(["group_a", "group_b"])
    t_ab = 3 / math.sqrt(2 / 3)
    assert out.loc[("A", "B"), "t"] == pytest.approx(t_ab)
    assert out.loc[("A", "C"), "t"] == pytest.approx(2 * t_ab)
    assert out.loc[("B", "C"), "t"] == pytest.approx(t_ab)
    assert (out["df"] == 6).all()
    assert out.loc[("A", "B"), "p"] == pytest.approx(2 * stats.t.sf(t_ab, 6))
    assert stats.kruskal([1, 2, 3], [4, 5, 6], [7, 8, 9]).statistic == pytest.approx(7.2)


def _first_principles(groups):
    """Mid-ranks by counting, S², H and t_ij exactly as Conover writes them."""
    allv = [v for g in groups.values() for v in g]
    N, k = len(allv), len(groups)

    def midrank(v):
        return sum(1 for x in allv if x < v) + (sum(1 for x in allv if x == v) + 1) / 2

    R = {g: [midrank(v) for v in vals] for g, vals in groups.items()}
    S2 = (sum(r * r for rs in R.values() for r in rs) - N * (N + 1) ** 2 / 4) / (N - 1)
    H = (sum(sum(rs) ** 2 / len(rs) for rs in R.values()) - N * (N + 1) ** 2 / 4) / S2
    out = {}
    names = list(groups)
    for i in range(k):
        for j in range(i + 1, k):
            a, b = R[names[i]], R[names[j]]
            se = math.sqrt(S2 * (N - 1 - H) / (N - k) * (1 / len(a) + 1 / len(b)))
            out[(names[i], names[j])] = abs(sum(a) / len(a) - sum(b) / len(b)) / se
    return R, H, out


def test_conover_textbook_data_with_ties():
    R, H, t = _first_principles(CORN)
    assert [sum(r) for r in R.values()] == [196.5, 153.0, 207.0, 38.5]  # by hand; total 34·35/2
    assert stats.kruskal(*CORN.values()).statistic == pytest.approx(H)
    res = kruskal_conover(pd.DataFrame([(g, v) for g, vs in CORN.items() for v in vs],
                                       columns=["method", "yield"]), "yield", "method")
    assert pytest.approx(H) == res.H and res.df == 3
    pairs = res.pairs.set_index(["group_a", "group_b"])
    for key, tij in t.items():
        assert pairs.loc[key, "t"] == pytest.approx(tij)
        assert pairs.loc[key, "p"] == pytest.approx(2 * stats.t.sf(tij, 34 - 4))
    np.testing.assert_allclose(pairs["p_holm"], holm(pairs["p"]))
    # methods 1 and 2 differ least; 3 and 4 most
    assert pairs["t"].idxmin() == ("1", "2") and pairs["t"].idxmax() == ("3", "4")
    assert res.to_dict()["pairs"][0]["group_a"] == "1"


def test_all_tied_gives_no_evidence():
    df = pd.DataFrame({"c": list("aabb"), "v": [1.0] * 4})
    res = kruskal_conover(df, "v", "c")
    assert res.H == 0 and res.p == 1 and res.pairs["p"].iloc[0] == 1


def _toy():
    # condition x: unit u1 2/2 correct, u2 1/2; condition y: u3 0/2, u4 1/3
    rows = [("x", "u1", "p1", 1), ("x", "u1", "p2", 1), ("x", "u2", "p1", 1), ("x", "u2", "p2", 0),
            ("y", "u3", "p3", 0), ("y", "u3", "p4", 0), ("y", "u4", "p3", 1), ("y", "u4", "p4", 0),
            ("y", "u4", "p5", 0)]
    df = pd.DataFrame(rows, columns=["condition", "unit", "participant", "correct"])
    df["trial_kind"] = "main"
    df["rt_ms"] = [1000, 2000, 3000, 4000, 500, 1500, 2500, 3500, 4500]
    df["confidence"] = [3, 3, 2, 1, 1, 1, 2, 2, np.nan]
    return pd.concat([df, df.iloc[[0]].assign(trial_kind="catch", correct=0)], ignore_index=True)


def test_unit_accuracy_and_rt_confidence_by_hand():
    df = _toy()
    u = unit_accuracy(df).set_index("unit")
    assert u["accuracy"].to_dict() == {"u1": 1.0, "u2": 0.5, "u3": 0.0, "u4": pytest.approx(1 / 3)}
    assert u.loc["u4", "trials"] == 3 and u.loc["u4", "participants"] == 3
    s = rt_confidence_by_condition(df).set_index("condition")
    # x: RT 1,2,3,4 s → quartiles 1.75, 2.5, 3.25; y: 0.5..4.5 s → 1.5, 2.5, 3.5
    assert (s.loc["x", "rt_q1_s"], s.loc["x", "rt_median_s"], s.loc["x", "rt_q3_s"]) == pytest.approx((1.75, 2.5, 3.25))
    assert s.loc["y", "rt_iqr_s"] == pytest.approx(2.0)
    # confidence x: 1,2,3,3 → median 2.5; y: 1,1,2,2 (one unrated) → median 1.5, n 4
    assert s.loc["x", "confidence_median"] == 2.5 and s.loc["y", "confidence_median"] == 1.5
    assert s.loc["y", "confidence_n"] == 4
    test = unit_accuracy_test(df)
    assert pytest.approx(stats.kruskal([1.0, 0.5], [0.0, 1 / 3]).statistic) == test.H
    assert any("fewer than 5" in n for n in test.notes)


def test_friedman_by_hand_on_blocks_without_ties():
    # 4 units (blocks) x 3 conditions; ranks within each unit, no ties
    acc = {"u1": [0.5, 0.7, 0.9], "u2": [0.4, 0.6, 0.5], "u3": [0.2, 0.3, 0.35], "u4": [0.8, 0.85, 0.95]}
    df = pd.DataFrame([(c, u, v) for u, vs in acc.items() for c, v in zip("abc", vs)],
                      columns=["condition", "unit", "accuracy"])
    res = friedman_wilcoxon(df, "accuracy", "condition", "unit")
    # rank sums a: 1+1+1+1 = 4, b: 2+3+2+2 = 9, c: 3+2+3+3 = 11; n = 4, k = 3
    chi2 = 12 / (4 * 3 * 4) * (4**2 + 9**2 + 11**2) - 3 * 4 * 4
    assert chi2 == pytest.approx(6.5)
    assert res.test == "Friedman" and res.statistic == pytest.approx(chi2) and res.df == 2
    assert res.p == pytest.approx(math.exp(-chi2 / 2))  # χ² with 2 df: p = e^(−x/2)
    assert res.groups["mean_rank"].tolist() == [1.0, 2.25, 2.75]
    np.testing.assert_allclose(res.pairs["p_holm"], holm(res.pairs["p"]))


def test_paired_units_get_the_paired_test_which_sees_what_kruskal_wallis_misses():
    rng = np.random.default_rng(3)
    base = rng.uniform(0.3, 0.9, size=30)  # units differ a lot from each other
    units = pd.DataFrame([(c, f"u{u}", min(b + shift + rng.normal(0, 0.01), 1.0))
                          for c, shift in (("natural", 0.06), ("none", 0.0)) for u, b in enumerate(base)],
                         columns=["condition", "unit", "accuracy"])
    paired = unit_accuracy_test(None, units=units)
    assert paired.test == "Wilcoxon signed-rank" and paired.p < 1e-4
    independent = kruskal_conover(units, "accuracy", "condition")
    assert independent.p > 0.05  # the unit-to-unit spread hides the shift from an unpaired test
    assert "paired by unit" in paired.headline() and paired.to_dict()["block"] == "unit"


def test_a_partial_overlap_of_units_keeps_kruskal_wallis_with_a_note():
    units = pd.DataFrame([("a", "u1", 0.5), ("a", "u2", 0.6), ("b", "u2", 0.7), ("b", "u3", 0.8)],
                         columns=["condition", "unit", "accuracy"])
    res = unit_accuracy_test(None, units=units)
    assert hasattr(res, "H") and any("not in all" in n for n in res.notes)
