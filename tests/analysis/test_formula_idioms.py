"""R's formula idioms (issue 26, case 6): factor(), relevel(), I() with R's ^, offset(),
cbind(successes, failures), transformed responses, one-line errors for bad columns and the
factor() hint, checked against lme4's published cbpp values and against planted equivalences.

cbpp reference values: lme4's tests/testthat/test-glmer.R (as in test_lme4_reference.py)."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from analysis.formula import FormulaError, build_design
from analysis.glmm import BinomialGLMM
from analysis.lmm import LinearMixedModel

DATA = Path(__file__).resolve().parents[1] / "data" / "lme4"
CBPP_BETA = [-1.39854982537216, -0.992335519118859, -1.12867532780426, -1.58030423764517]
CBPP_VAR = 0.41245527438386


@pytest.fixture(scope="module")
def cbpp():
    return pd.read_csv(DATA / "cbpp.csv")  # period as stored: the numbers 1–4


@pytest.fixture(scope="module")
def sleepstudy():
    d = pd.read_csv(DATA / "sleepstudy.csv")
    d["Subject"] = d["Subject"].astype(str)
    return d


def test_cbind_factor_matches_lme4(cbpp):
    res = BinomialGLMM.from_formula(
        "cbind(incidence, size - incidence) ~ factor(period) + (1 | herd)", cbpp).fit()
    assert list(res.params.index) == ["(Intercept)", "factor(period)2", "factor(period)3",
                                      "factor(period)4"]
    assert np.allclose(res.params.to_numpy(), CBPP_BETA, rtol=1e-3)
    assert res.random.variance.iloc[0] == pytest.approx(CBPP_VAR, rel=1e-3)
    assert -2 * res.loglik == pytest.approx(184.05267459802, abs=1e-2)
    assert res.response == "cbind(incidence, size - incidence)" and res.nobs == 56
    assert not any("factor(" in n for n in res.notes)


def test_numeric_period_fits_a_slope_with_a_factor_hint(cbpp):
    res = BinomialGLMM.from_formula("cbind(incidence, size - incidence) ~ period + (1 | herd)", cbpp).fit()
    assert list(res.params.index) == ["(Intercept)", "period"]
    assert ("'period' is numeric with 4 distinct values and enters the model as one slope; "
            "write factor(period) to fit one effect per value, as R does for a factor") in res.notes


def test_cbind_equals_trials_argument(cbpp):
    a = BinomialGLMM.from_formula("cbind(incidence, size - incidence) ~ factor(period) + (1 | herd)",
                                  cbpp).fit()
    b = BinomialGLMM.from_formula("incidence ~ factor(period) + (1 | herd)", cbpp, trials="size").fit()
    assert np.allclose(a.params, b.params, rtol=1e-8) and a.loglik == pytest.approx(b.loglik)
    with pytest.raises(FormulaError, match="not both"):
        BinomialGLMM.from_formula("cbind(incidence, size - incidence) ~ 1 + (1 | herd)", cbpp,
                                  trials="size")


def test_relevel_changes_the_reference(cbpp):
    base = BinomialGLMM.from_formula("cbind(incidence, size - incidence) ~ factor(period) + (1 | herd)",
                                     cbpp).fit().params
    res = BinomialGLMM.from_formula(
        'cbind(incidence, size - incidence) ~ relevel(period, ref = "3") + (1 | herd)', cbpp).fit().params
    assert list(res.index) == ["(Intercept)", 'relevel(period, ref = "3")1',
                               'relevel(period, ref = "3")2', 'relevel(period, ref = "3")4']
    assert res.iloc[0] == pytest.approx(base.iloc[0] + base.iloc[2], abs=1e-4)
    assert res.iloc[1] == pytest.approx(-base.iloc[2], abs=1e-4)
    with pytest.raises(FormulaError, match=r"relevel: '7' is not a level of 'period' \(levels: 1, 2, 3, 4\)"):
        build_design('incidence ~ relevel(period, "7") + (1 | herd)', cbpp)


def test_power_inside_I_is_R_power(sleepstudy):
    d = sleepstudy.assign(Days2=sleepstudy.Days ** 2)
    res = LinearMixedModel.from_formula("Reaction ~ Days + I(Days^2) + (Days | Subject)", d).fit()
    ref = LinearMixedModel.from_formula("Reaction ~ Days + Days2 + (Days | Subject)", d).fit()
    assert list(res.params.index) == ["(Intercept)", "Days", "I(Days^2)"]
    assert np.allclose(res.params, ref.params, rtol=1e-6)


def test_transformed_response(sleepstudy):
    d = sleepstudy.assign(log_reaction=np.log(sleepstudy.Reaction))
    res = LinearMixedModel.from_formula("log(Reaction) ~ Days + (Days | Subject)", d).fit()
    ref = LinearMixedModel.from_formula("log_reaction ~ Days + (Days | Subject)", d).fit()
    assert np.allclose(res.params, ref.params, rtol=1e-6) and res.loglik == pytest.approx(ref.loglik)
    assert res.response == "log(Reaction)"


def test_offset_has_coefficient_one(sleepstudy):
    # offset(Days) moves the Days coefficient by exactly one and nothing else
    base = LinearMixedModel.from_formula("Reaction ~ Days + (Days | Subject)", sleepstudy).fit()
    off = LinearMixedModel.from_formula("Reaction ~ Days + offset(Days) + (Days | Subject)", sleepstudy).fit()
    assert off.params["Days"] == pytest.approx(base.params["Days"] - 1, abs=1e-4)
    assert off.params["(Intercept)"] == pytest.approx(base.params["(Intercept)"], abs=1e-3)
    assert off.offset == "Days"
    d = sleepstudy.assign(slow=(sleepstudy.Reaction > 300).astype(int))
    gb = BinomialGLMM.from_formula("slow ~ Days + (1 | Subject)", d).fit().params
    go = BinomialGLMM.from_formula("slow ~ Days + offset(0.5 * Days) + (1 | Subject)", d).fit().params
    assert go["Days"] == pytest.approx(gb["Days"] - 0.5, abs=1e-4)


def test_offset_log_size(cbpp):
    res = BinomialGLMM.from_formula("cbind(incidence, size - incidence) ~ offset(log(size)) + "
                                    "factor(period) + (1 | herd)", cbpp).fit()
    assert res.offset == "log(size)" and np.all(np.isfinite(res.bse))


@pytest.mark.parametrize("formula, message", [
    ("Reaction ~ Dayz + (1 | Subject)", "'Dayz' (fixed effects) is not a column of the data; did you mean 'Days'?"),
    ("Reactoin ~ Days + (1 | Subject)", "'Reactoin' (response) is not a column of the data; did you mean 'Reaction'?"),
    ("Reaction ~ Days + (1 | Subjet)", "'Subjet' (grouping factor) is not a column of the data; did you mean 'Subject'?"),
    ("log(Reaction) ~ factor(Dys) + (1 | Subject)", "'Dys' (fixed effects) is not a column of the data; did you mean 'Days'?"),
    ("Reaction ~ `Day s` + (1 | Subject)", "'Day s' (fixed effects) is not a column of the data; did you mean 'Days'?"),
])
def test_bad_column_is_one_line_with_the_closest_names(sleepstudy, formula, message):
    with pytest.raises(FormulaError) as e:
        LinearMixedModel.from_formula(formula, sleepstudy)
    assert str(e.value) == message and "\n" not in str(e.value)
    assert isinstance(e.value, ValueError)


def test_factor_spellings_of_a_grouping_factor_and_as_factor(cbpp):
    a = BinomialGLMM.from_formula("cbind(incidence, size - incidence) ~ factor(period) + (1 | herd)",
                                  cbpp).fit(se="rx")
    b = BinomialGLMM.from_formula("cbind(incidence, size - incidence) ~ as.factor(period) + "
                                  "(1 | factor(herd))", cbpp).fit(se="rx")
    assert list(b.params.index)[1] == "as.factor(period)2"
    assert np.allclose(a.params.to_numpy(), b.params.to_numpy()) and b.ngroups == {"factor(herd)": 15}
