"""Mixed models against the results lme4 prints for its own datasets.

Reference values: lme4's tests/testthat/test-glmer.R and its rendered help pages (glmer,
lmer, sleepstudy, Penicillin, Pastes, VerbAgg examples), as collected in the lme4 reference
README of this project.
"""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from analysis.glmm import BinomialGLMM
from analysis.lmm import LinearMixedModel, lrt

DATA = Path(__file__).resolve().parents[1] / "data" / "lme4"
REL = 1e-3


def rel(a, b):
    return abs(a - b) / abs(b)


def fixed(res):
    return res.fixed.set_index("term")


def var(res, group, term="(Intercept)"):
    r = res.random
    return float(r[(r.group == group) & (r.term == term)].variance.iloc[0])


@pytest.fixture(scope="module")
def cbpp():
    d = pd.read_csv(DATA / "cbpp.csv")
    d["period"] = d["period"].astype(int).astype(str)
    return d


CBPP_BETA = {"(Intercept)": -1.39854982537216, "period2": -0.992335519118859,
             "period3": -1.12867532780426, "period4": -1.58030423764517}
CBPP_SE = {"(Intercept)": 0.2312, "period2": 0.3032, "period3": 0.3228, "period4": 0.4220}
CBPP_VAR = 0.41245527438386


@pytest.fixture(scope="module")
def cbpp_fit(cbpp):
    return BinomialGLMM.from_formula("incidence ~ period + (1 | herd)", cbpp, trials="size").fit()


def test_cbpp_aggregated(cbpp_fit):
    f = fixed(cbpp_fit)
    for term, b in CBPP_BETA.items():
        assert rel(f.loc[term, "estimate"], b) < REL
        assert rel(f.loc[term, "std_error"], CBPP_SE[term]) < 0.03
    assert rel(var(cbpp_fit, "herd"), CBPP_VAR) < REL
    assert abs(-2 * cbpp_fit.loglik - 184.05267459802) < 1e-2
    assert abs(cbpp_fit.aic - 194.0527) < 1e-2
    assert cbpp_fit.nobs == 56 and cbpp_fit.converged


def test_cbpp_binary_expansion_same_fit(cbpp, cbpp_fit):
    rows = []
    for r in cbpp.itertuples():
        rows += [(r.herd, r.period, 1)] * int(r.incidence)
        rows += [(r.herd, r.period, 0)] * int(r.size - r.incidence)
    binary = pd.DataFrame(rows, columns=["herd", "period", "y"])
    assert len(binary) == 842
    res = BinomialGLMM.from_formula("y ~ period + (1 | herd)", binary).fit()
    f = fixed(res)
    for term, b in CBPP_BETA.items():
        assert rel(f.loc[term, "estimate"], b) < REL
    assert rel(var(res, "herd"), CBPP_VAR) < REL
    from scipy.special import gammaln

    const = float(np.sum(gammaln(cbpp["size"] + 1) - gammaln(cbpp.incidence + 1)
                         - gammaln(cbpp["size"] - cbpp.incidence + 1)))
    assert abs(res.loglik + const - cbpp_fit.loglik) < 1e-4


def test_cbpp_first_stage_is_not_the_answer(cbpp_fit):
    # lme4's nAGQ = 0 numbers: the two-stage optimisation must move on from there
    stage1 = cbpp_fit.extra["beta_stage1"]
    assert np.allclose(stage1, [-1.3605, -0.9762, -1.1111, -1.5597], atol=2e-3)
    assert abs(fixed(cbpp_fit).loc["(Intercept)", "estimate"] - stage1[0]) > 0.03


def test_verbagg():
    d = pd.read_csv(DATA / "VerbAgg.csv")
    res = BinomialGLMM.from_formula("r2 ~ Anger + Gender + btype + (1 | id)", d).fit()
    ref = {
        "(Intercept)": (-0.2812479245019587, 0.3189151875587483),
        "Anger": (0.05210785216736973, 0.01525498441352507),
        "GenderM": (0.2929658737182645, 0.1739382935257511),
        "btypescold": (-0.9787776340822552, 0.0661472241094001),
        "btypeshout": (-1.894675023976959, 0.07077510481564073),
    }
    f = fixed(res)
    assert list(f.index) == list(ref)
    for term, (b, se) in ref.items():
        assert rel(f.loc[term, "estimate"], b) < REL
        assert rel(f.loc[term, "std_error"], se) < 0.03
    assert rel(var(res, "id"), 1.455712561295374) < REL
    assert abs(res.loglik - -4345.0) < 0.05  # lme4 prints one decimal
    assert abs(res.aic - 8702.0) < 0.1
    assert res.nobs == 7584 and res.converged


@pytest.fixture(scope="module")
def sleepstudy():
    d = pd.read_csv(DATA / "sleepstudy.csv")
    d["Subject"] = d["Subject"].astype(str)
    return d


def test_sleepstudy_correlated_slope(sleepstudy):
    res = LinearMixedModel.from_formula("Reaction ~ Days + (Days | Subject)", sleepstudy).fit()
    f = fixed(res)
    assert rel(f.loc["(Intercept)", "estimate"], 251.40510484848497) < 1e-6
    assert rel(f.loc["Days", "estimate"], 10.467285959595987) < 1e-6
    assert rel(f.loc["(Intercept)", "std_error"], 6.824596694954906) < REL
    assert rel(f.loc["Days", "std_error"], 1.545789643905981) < REL
    assert rel(var(res, "Subject"), 612.1001580247688) < REL
    assert rel(var(res, "Subject", "Days"), 35.071714450938849) < REL
    assert rel(var(res, "Residual", ""), 654.94000825996079) < REL
    c = res.correlations.iloc[0]
    assert rel(c.covariance, 9.604408951157756) < 1e-2  # a small covariance: relative to itself
    assert abs(c["corr"] - 0.0655512) < 1e-3
    assert abs(res.deviance - 1743.628) < 1e-2


def test_sleepstudy_satterthwaite_df_and_p_match_lmertest(sleepstudy):
    # lmerTest 3.1: summary(lmer(Reaction ~ Days + (Days | Subject), sleepstudy))
    #   (Intercept) 251.405 6.825 17.000 36.838 1.17e-17;  Days 10.467 1.546 16.99998 6.771 3.263824e-06
    res = LinearMixedModel.from_formula("Reaction ~ Days + (Days | Subject)", sleepstudy).fit()
    f = fixed(res)
    assert res.ddf == "Satterthwaite"
    assert abs(f.loc["Days", "df"] - 16.99998) < 1e-4
    assert rel(f.loc["Days", "p"], 3.263824e-06) < 3e-5
    assert abs(f.loc["Days", "t"] - 6.771) < 1e-3
    assert abs(f.loc["(Intercept)", "df"] - 17.0) < 1e-3
    assert abs(f.loc["(Intercept)", "t"] - 36.838) < 1e-3
    assert rel(f.loc["(Intercept)", "p"], 1.17e-17) < 5e-3
    d = res.to_dict()
    assert set(d["fixed"][1]) == {"term", "estimate", "std_error", "statistic", "statistic_kind", "df", "p"}
    assert d["fixed"][1]["statistic_kind"] == "t"
    assert "Satterthwaite" in res.summary() and "Pr(>|t|)" in res.summary()


def test_satterthwaite_gives_the_balanced_anova_df(sleepstudy):
    # random intercept, balanced within-subject slope: the exact F test's error df, 180 − 18 − 1 = 161
    # (lmerTest: Days df 161.0000, (Intercept) df 22.8102)
    res = LinearMixedModel.from_formula("Reaction ~ Days + (1 | Subject)", sleepstudy).fit()
    f = fixed(res)
    assert abs(f.loc["Days", "df"] - 161) < 1e-3
    assert abs(f.loc["(Intercept)", "df"] - 22.8102) < 1e-3


def test_ddf_normal_keeps_the_normal_approximation(sleepstudy):
    res = LinearMixedModel.from_formula("Reaction ~ Days + (Days | Subject)", sleepstudy).fit(ddf="normal")
    f = fixed(res)
    assert "df" not in f.columns
    assert rel(f.loc["Days", "p"], 2 * stats.norm.sf(f.loc["Days", "z"])) < 1e-12
    row = res.to_dict()["fixed"][0]
    assert set(row) == {"term", "estimate", "std_error", "statistic", "statistic_kind", "df", "p"}
    assert row["statistic_kind"] == "z" and row["df"] is None
    with pytest.raises(ValueError, match="ddf"):
        LinearMixedModel.from_formula("Reaction ~ Days + (1 | Subject)", sleepstudy).fit(ddf="kenward")


def test_sleepstudy_intercept_only(sleepstudy):
    res = LinearMixedModel.from_formula("Reaction ~ Days + (1 | Subject)", sleepstudy).fit()
    f = fixed(res)
    assert rel(f.loc["(Intercept)", "std_error"], 9.7467163) < REL
    assert rel(f.loc["Days", "std_error"], 0.8042214) < REL
    assert rel(var(res, "Subject"), 1378.1785138) < REL
    assert rel(var(res, "Residual", ""), 960.4565786) < REL
    assert abs(res.deviance - 1786.5) < 0.05


def test_sleepstudy_lrt_refits_by_ml(sleepstudy):
    small = LinearMixedModel.from_formula("Reaction ~ Days + (1 | Subject)", sleepstudy).fit()
    big = LinearMixedModel.from_formula("Reaction ~ Days + (Days | Subject)", sleepstudy).fit()
    out = lrt(small, big)
    # lme4: anova(fm2, fm1) gives Chisq 42.139 on 2 df
    assert out["df"] == 2
    assert abs(out["chisq"] - 42.139) < 0.01
    assert out["p"] < 1e-8


def test_penicillin_crossed():
    d = pd.read_csv(DATA / "Penicillin.csv")
    res = LinearMixedModel.from_formula("diameter ~ 1 + (1 | plate) + (1 | sample)", d).fit()
    sd = res.random.set_index("group").sd
    assert rel(sd["plate"], 0.8467) < REL
    assert rel(sd["sample"], 1.9316) < REL
    assert rel(sd["Residual"], 0.5499) < REL
    assert rel(fixed(res).loc["(Intercept)", "estimate"], 22.97) < REL
    assert abs(res.deviance - 330.8606) < 1e-2


def test_pastes_nested():
    d = pd.read_csv(DATA / "Pastes.csv")
    res = LinearMixedModel.from_formula("strength ~ 1 + (1 | batch) + (1 | batch:cask)", d).fit()
    assert list(res.random.group) == ["batch:cask", "batch", "Residual"]
    sd = res.random.set_index("group").sd
    assert rel(sd["batch:cask"], 2.9041) < REL
    assert rel(sd["batch"], 1.2874) < REL
    assert rel(sd["Residual"], 0.8234) < REL
    f = fixed(res)
    assert rel(f.loc["(Intercept)", "estimate"], 60.0533) < 1e-4
    assert rel(f.loc["(Intercept)", "std_error"], 0.6769) < REL
    assert abs(res.deviance - 246.9907) < 1e-2
    # the nested shorthand gives the same fit
    res2 = LinearMixedModel.from_formula("strength ~ 1 + (1 | batch/cask)", d).fit()
    assert abs(res2.deviance - res.deviance) < 1e-6


def test_to_dict_shape(cbpp_fit):
    d = cbpp_fit.to_dict()
    assert {"schema_version", "fixed", "random", "random_corr", "groups", "loglik", "aic", "bic", "deviance",
            "nobs", "converged", "convergence", "criterion", "ddf", "singular", "warnings", "notes"} <= set(d)
    assert d["ddf"] == "normal" and d["singular"] is False
    assert set(d["fixed"][0]) == {"term", "estimate", "std_error", "statistic", "statistic_kind", "df", "p"}
    assert set(d["random"][0]) == {"group", "term", "variance", "sd"}
    assert "period2" in cbpp_fit.summary()


def test_cli_lmm_defaults_to_reml_as_lmer(capsys):
    # `analysis lmm` without options must print what lmer + lmerTest print for the same formula.
    from analysis.__main__ import main

    args = ["lmm", str(DATA / "sleepstudy.csv"), "--all-trials", "--formula", "Reaction ~ Days + (Days | Subject)",
            "--json"]
    assert main(args) == 0
    out = json.loads(capsys.readouterr().out)
    days = next(row for row in out["fixed"] if row["term"] == "Days")
    assert out["criterion"] == "REML"
    assert abs(days["df"] - 16.99998) < 1e-4
    assert rel(days["p"], 3.263824e-06) < 3e-5
    assert main(args + ["--ml"]) == 0
    assert json.loads(capsys.readouterr().out)["criterion"] == "ML"
