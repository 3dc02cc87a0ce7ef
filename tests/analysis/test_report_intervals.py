"""The report's intervals and confidence model: profile intervals within the time budget, Wald ones
(said so) beyond it; confidence by the cumulative-logit mixed model, the Gaussian LMM where that
fails (said so)."""

import json

import pytest

from analysis.intervals import report_intervals
from analysis.report import run_report
from analysis.simulate import simulate_responses


@pytest.fixture(scope="module")
def sim():
    return simulate_responses(n_participants=24, n_units=18, seed=7).drop(columns="log_rt")


def test_wald_intervals_when_the_profile_exceeds_its_budget(sim):
    from analysis.glmm import BinomialGLMM

    fit = BinomialGLMM.from_formula("correct ~ basis + (1 | participant) + (1 | unit)", sim).fit()
    quick = report_intervals(fit, budget_s=1e-9)
    assert quick.method == "wald"
    assert quick.notes[0].startswith("profile intervals did not finish within the 1e-09 s budget")
    off = report_intervals(fit, budget_s=0)
    assert off.method == "wald" and "not asked for" in off.notes[0]
    # the model is left as the fit left it: a profile afterwards gives the full answer
    assert report_intervals(fit, budget_s=60).method == "profile"


def test_report_budget_zero_gives_wald_and_says_so(sim, tmp_path):
    res = run_report(sim, tmp_path, n_boot=20, profile_budget_s=0)
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["model"]["intervals"]["method"] == "wald"
    assert "Wald intervals instead" in res["text"]


def test_confidence_falls_back_to_the_lmm_where_the_ordinal_model_fails(sim, tmp_path):
    # a random slope: the cumulative-logit model takes random intercepts only
    res = run_report(
        sim, tmp_path, n_boot=20, profile_budget_s=0, formula="correct ~ basis + (1 | participant) + (1 + basis | unit)"
    )
    saved = json.loads((tmp_path / "results.json").read_text())
    assert "ordinal" not in saved and "confidence" in saved["lmm"]
    assert any(
        "cumulative-logit mixed model failed" in n and "Gaussian LMM is shown instead" in n for n in res["notes"]
    )
