"""The occlusion 2AFC in the analysis: simulated participants with a planted accuracy per reference type,
recovered by ``python -m analysis glmm``; descriptives and the report grouped by paradigm."""

import json
import re

import numpy as np
import pandas as pd
import pytest

from analysis.__main__ import main
from analysis.descriptives import accuracy_by_paradigm
from analysis.simulate import OCCLUSION_ACCURACY, simulate_machine_responses, simulate_occlusion_responses

# planted apart enough that a swapped level could not pass (the published values are closer: 68 / 66.5 / 60 %)
PLANTED = {"synthetic": 0.78, "natural": 0.70, "none": 0.58}


def logit(p):
    return float(np.log(p / (1 - p)))


@pytest.fixture(scope="module")
def export(tmp_path_factory):
    path = tmp_path_factory.mktemp("occlusion") / "export.csv"
    simulate_occlusion_responses(n_participants=300, n_units=40, accuracy=PLANTED, seed=7).to_csv(path, index=False)
    return path


def test_glmm_recovers_the_planted_accuracy_of_each_reference_type(export, capsys):
    assert (
        main(["glmm", str(export), "--json", "--formula", "correct ~ reference_type + (1 | participant) + (1 | unit)"])
        == 0
    )
    fit = json.loads(capsys.readouterr().out)
    fixed = {row["term"]: row for row in fit["fixed"]}
    # treatment coding, levels sorted: natural is the baseline
    truth = {
        "(Intercept)": logit(PLANTED["natural"]),
        "reference_typenone": logit(PLANTED["none"]) - logit(PLANTED["natural"]),
        "reference_typesynthetic": logit(PLANTED["synthetic"]) - logit(PLANTED["natural"]),
    }
    assert set(truth) == set(fixed)
    for term, value in truth.items():
        assert abs(fixed[term]["estimate"] - value) < 3 * fixed[term]["std_error"], (term, fixed[term], value)
    # and each level's accuracy for a typical participant and unit, back on the probability scale
    b = {t: fixed[t]["estimate"] for t in truth}
    recovered = {
        "natural": b["(Intercept)"],
        "none": b["(Intercept)"] + b["reference_typenone"],
        "synthetic": b["(Intercept)"] + b["reference_typesynthetic"],
    }
    for kind, eta in recovered.items():
        assert abs(1 / (1 + np.exp(-eta)) - PLANTED[kind]) < 0.04, kind


def test_the_default_plants_the_published_values_and_the_export_columns():
    df = simulate_occlusion_responses(n_participants=30, n_units=10, seed=1)
    assert OCCLUSION_ACCURACY == {"synthetic": 0.68, "natural": 0.665, "none": 0.60}
    assert set(df["reference_type"]) == set(OCCLUSION_ACCURACY) and set(df["paradigm"]) == {"occlusion_2afc"}
    main_rows = df[df["trial_kind"] == "main"]
    right = np.where(main_rows["correct_query"] == "a", main_rows["occlusion_delta_a"], main_rows["occlusion_delta_b"])
    wrong = np.where(main_rows["correct_query"] == "a", main_rows["occlusion_delta_b"], main_rows["occlusion_delta_a"])
    assert np.allclose(main_rows["mis_delta"], np.abs(right) - np.abs(wrong)) and (main_rows["mis_delta"] > 0).all()


def test_descriptives_and_the_report_group_accuracy_by_paradigm(tmp_path, capsys):
    occlusion = simulate_occlusion_responses(n_participants=60, n_units=12, accuracy=PLANTED, seed=2)
    reference = simulate_machine_responses(n_participants=20, n_units=12, seed=2)
    reference["condition"] = "reference-" + reference["condition"]
    reference["participant"] = "r" + reference["participant"]
    both = pd.concat([occlusion, reference], ignore_index=True)
    table = accuracy_by_paradigm(both, n_boot=200)
    assert list(table["paradigm"].unique()) == ["occlusion_2afc", "reference_2afc"]
    occ = table[table["paradigm"] == "occlusion_2afc"].set_index("reference_type")
    assert set(occ.index) == set(PLANTED)
    assert occ.loc["synthetic", "accuracy"] > occ.loc["natural", "accuracy"] > occ.loc["none", "accuracy"]
    path = tmp_path / "both.csv"
    both.to_csv(path, index=False)
    assert (
        main(
            [
                "report",
                str(path),
                "--exclusions",
                "none",
                "--no-model",
                "--n-boot",
                "200",
                "--out",
                str(tmp_path / "report"),
            ]
        )
        == 0
    )
    text = capsys.readouterr().out
    assert "Accuracy per paradigm and reference type" in text
    results = json.loads((tmp_path / "report" / "results.json").read_text())
    assert {row["paradigm"] for row in results["descriptives"]["paradigms"]} == {"occlusion_2afc", "reference_2afc"}
    html = (tmp_path / "report" / "report.html").read_text()
    # the table's cells offer line breaks after underscores (<wbr>)
    assert "occlusion_2afc" in re.sub(r"<[^>]+>", "", html)


def test_describe_prints_accuracy_per_paradigm_and_reference_type(export, capsys):
    assert main(["describe", str(export), "--n-boot", "100"]) == 0
    out = capsys.readouterr().out
    section = out.split("Accuracy per paradigm and reference type", 1)[1]
    assert all(kind in section.split("\n\n")[0] for kind in PLANTED)
