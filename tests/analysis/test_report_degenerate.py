"""The report renders on degenerate exports — a unit at 0 % or 100 % (at sizes where statsmodels'
Wilson bound falls below 1), a condition with one participant, constant columns, every answer
correct, a singular fit — and says what it could not compute."""

import json

import numpy as np
import pandas as pd
import pytest

from analysis.__main__ import main
from analysis.report import run_report
from analysis.simulate import simulate_machine_responses


def _export(n_participants=23, seed=3):
    return simulate_machine_responses(n_participants=n_participants, n_units=12, seed=seed)


def _main(df):
    return df["trial_kind"] == "main"


def unit_at_bounds(n_participants):
    df = _export(n_participants)
    units = sorted(df["unit"].unique())
    df.loc[_main(df) & (df["unit"] == units[0]), "correct"] = 1
    df.loc[_main(df) & (df["unit"] == units[1]), "correct"] = 0
    return df, units[0], units[1]


def _report(df, tmp_path, name):
    res = run_report(df, tmp_path / name, n_boot=100)
    assert (tmp_path / name / "report.html").stat().st_size > 1000
    assert json.loads((tmp_path / name / "results.json").read_text())["exclusions"]
    assert res["text"]
    return res


@pytest.mark.parametrize("n", [7, 23, 28])
def test_a_unit_at_100_and_one_at_0_percent(tmp_path, n):
    df, full, empty = unit_at_bounds(n)
    res = _report(df, tmp_path, f"n{n}")
    units = {u["unit"]: u for u in res["machine"]["units"]}
    assert units[full]["human_accuracy"] == 1.0 and units[full]["human_ci_high"] == 1.0
    assert units[full]["human_ci_low"] < 1.0
    assert units[empty]["human_accuracy"] == 0.0 and units[empty]["human_ci_low"] == 0.0
    assert any(f.endswith("machine_vs_human.png") for f in res["files"])
    assert any("0 % or 100 %" in n for n in res["notes"])
    assert res["model"] is not None  # the GLMM still fits


def test_cli_report_on_an_all_correct_unit(tmp_path, capsys):
    # the pilot case: one unit answered correctly by all 10 participants
    df, full, _ = unit_at_bounds(10)
    path = tmp_path / "export.csv"
    df.to_csv(path, index=False)
    assert main(["report", str(path), "--out", str(tmp_path / "out"), "--n-boot", "100"]) == 0
    out = capsys.readouterr().out
    assert "Machine observer vs people" in out and (tmp_path / "out" / "machine_vs_human.png").exists()


def test_a_condition_with_one_participant(tmp_path):
    df = _export()
    solo = df[df["participant"] == "p0"].copy()
    solo["participant"] = "solo"
    solo["condition"] = solo["basis"] = "sae"
    solo["unit"] = solo["unit"].str.replace(r":(neuron|pca|nmf):", ":sae:", regex=True)
    res = _report(pd.concat([df, solo], ignore_index=True), tmp_path, "solo")
    assert any("condition sae has 1 participant" in n for n in res["notes"])
    rows = {r["condition"]: r for r in res["descriptives"]["conditions"]}
    assert rows["sae"]["ci_low"] is None and rows["neuron"]["ci_low"] is not None
    assert any(f.endswith("accuracy.png") for f in res["files"])
    assert res["model"] is not None


def test_constant_columns(tmp_path):
    df = _export()
    df["confidence"] = 2
    df["rt_ms"] = 1500.0
    df["mis_delta"] = np.where(_main(df), 0.1, np.nan)
    res = _report(df, tmp_path, "constant")
    assert res["lmm"] == {}
    for response in ("log_rt", "confidence"):
        assert any(n.startswith(f"{response} LMM not fitted") and "same" in n for n in res["notes"])
    assert any("same for every unit" in n for n in res["machine"]["notes"])
    assert res["model"] is not None


def test_every_answer_correct(tmp_path):
    df = _export(7)
    df["correct"] = 1
    res = _report(df, tmp_path, "all_correct")
    assert res["model"] is None
    assert any(n.startswith("GLMM not fitted") for n in res["notes"])
    assert all(r["accuracy"] == 1.0 and r["ci_high"] == 1.0 for r in res["descriptives"]["conditions"])
    assert "log_rt" in res["lmm"]  # the rest still renders


def test_a_singular_fit_is_reported(tmp_path):
    # every participant and every unit answers 3 of 4 correctly: both variances on the boundary
    df = _export(28)
    m = _main(df)
    p = df.loc[m, "participant"].str[1:].astype(int).to_numpy()
    u = df.loc[m, "unit"].str.rsplit(":", n=1).str[1].astype(int).to_numpy()
    df.loc[m, "correct"] = ((p + u) % 4 != 0).astype(int)
    res = _report(df, tmp_path, "singular")
    assert res["model"]["fit"]["singular"] is True
    assert any("boundary (singular) fit" in w for w in res["model"]["fit"]["warnings"])
    assert any(n.startswith("GLMM: boundary (singular) fit") for n in res["notes"])
    assert "boundary (singular) fit" in (tmp_path / "singular" / "report.html").read_text()
