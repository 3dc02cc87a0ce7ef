"""Accuracy per factor level of a within-participant export (analysis.descriptives.accuracy_by_factor)."""
import pandas as pd

from analysis.descriptives import accuracy_by_factor, describe


def planted():
    """natural always right, synthetic always wrong; n_references crossed with both, so pooled over the
    reference type each set of references is right half of the time."""
    rows = []
    for p in range(4):
        for reference_type, correct in (("natural", 1), ("synthetic", 0)):
            for n in (1, 9):
                for u in range(3):
                    rows.append({"participant": f"P{p}", "condition": f"{reference_type}-{n}", "unit": f"u{u}",
                                 "trial_kind": "main", "correct": correct, "reference_type": reference_type,
                                 "n_references": n, "min_references": True, "query_band": "90-100",
                                 "basis": "neuron", "layer": "conv2", "paradigm": "reference_2afc"})
    return pd.DataFrame(rows)


def test_accuracy_per_level_of_each_varying_factor():
    table = accuracy_by_factor(planted(), n_boot=50, seed=0)
    assert sorted(set(table["factor"])) == ["n_references", "reference_type"]  # the others do not vary
    got = {(r.factor, r.level): (r.accuracy, r.trials, r.participants) for r in table.itertuples()}
    assert got == {("reference_type", "natural"): (1.0, 24, 4), ("reference_type", "synthetic"): (0.0, 24, 4),
                   ("n_references", "1"): (0.5, 24, 4), ("n_references", "9"): (0.5, 24, 4)}


def test_describe_lists_the_factor_levels_and_none_for_a_single_condition():
    assert len(describe(planted(), n_boot=20)["factors"]) == 4
    one = planted().query("condition == 'natural-1'")
    assert describe(one, n_boot=20)["factors"] == []
