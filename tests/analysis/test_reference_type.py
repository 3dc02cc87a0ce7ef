"""Reference types (natural, synthetic, …) in the report: Borowski et al.'s "optimized" feature
visualizations read as ``synthetic``, their condition names kept; tables and the accuracy figure
grouped by reference type."""

from pathlib import Path

import pandas as pd

from analysis.load import read_responses
from analysis.report import by_reference_type, run_report

BOROWSKI = Path(__file__).resolve().parents[1] / "data" / "borowski2021" / "experiment_I_trials.csv"


def test_borowski_instr_type_maps_to_reference_type_and_keeps_condition_names():
    df = read_responses(BOROWSKI, "borowski")
    pairs = set(zip(df["condition"], df["reference_type"]))
    assert pairs == {("natural", "natural"), ("optimized", "synthetic"), ("none_pre", "none"),
                     ("none_post", "none")}


def test_a_mapped_column_that_is_not_instr_type():
    raw = pd.read_csv(BOROWSKI)
    raw["refs"] = raw["instr_type"].map({"optimized": "Optimized", "natural": "natural"}).fillna("none")
    path = Path(__file__).parent / "_refs.csv"
    try:
        raw.to_csv(path, index=False)
        df = read_responses(path, "participant=subject_id,unit=unit_name,condition=instr_type,reference_type=refs,"
                                  "trial_kind=trial_type,catch=catch_trial")
    finally:
        path.unlink()
    assert set(df.loc[df["condition"] == "optimized", "reference_type"]) == {"synthetic"}


def test_report_groups_conditions_by_reference_type(tmp_path):
    df = read_responses(BOROWSKI, "borowski")
    res = run_report(df, tmp_path, n_boot=50, fit_model=False)
    # the text opens with the report's header; the accuracy table is the paragraph after it
    table = next(p for p in res["text"].split("\n\n") if p.startswith("Accuracy per condition"))
    assert "reference_type" in table and "synthetic" in table
    order = [line.split()[0] for line in table.splitlines() if line.split() and line.split()[0] in
             ("natural", "optimized", "none_pre", "none_post")]
    # grouped by reference type: natural, none (none_post, none_pre), synthetic (optimized)
    assert order == ["natural", "none_post", "none_pre", "optimized"]
    assert (tmp_path / "accuracy.png").is_file()


def test_without_reference_types_the_table_is_unchanged():
    table = pd.DataFrame({"condition": ["b", "a"], "accuracy": [0.6, 0.7]})
    assert by_reference_type(table, pd.DataFrame({"condition": ["a", "b"]})).equals(table)
