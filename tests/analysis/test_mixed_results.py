"""MixedResult speaks statsmodels: the same code reads a statsmodels MixedLM fit and ours, and both
agree on sleepstudy; singular fits say so, as lme4's "boundary (singular) fit"."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import statsmodels.formula.api as smf

from analysis.glmm import BinomialGLMM
from analysis.lmm import LinearMixedModel

DATA = Path(__file__).resolve().parents[1] / "data" / "lme4"


@pytest.fixture(scope="module")
def sleepstudy():
    d = pd.read_csv(DATA / "sleepstudy.csv")
    d["Subject"] = d["Subject"].astype(str)
    return d


def statsmodels_view(res, k: int) -> dict:
    """What a statsmodels user reads off a mixed-model result: only statsmodels' names."""
    return {
        "fe_params": np.asarray(res.fe_params)[:k],
        "params": np.asarray(res.params)[:k],
        "bse": np.asarray(res.bse)[:k],
        "tvalues": np.asarray(res.tvalues)[:k],
        "pvalues": np.asarray(res.pvalues)[:k],
        "llf": float(res.llf),
        "aic": float(res.aic),
        "bic": float(res.bic),
        "cov_params": np.asarray(res.cov_params())[:k, :k],
        "summary": str(res.summary()),
    }


def test_our_result_reads_like_statsmodels_mixedlm(sleepstudy):
    theirs = statsmodels_view(smf.mixedlm("Reaction ~ Days", sleepstudy, groups="Subject").fit(reml=False), 2)
    fit = LinearMixedModel.from_formula("Reaction ~ Days + (1 | Subject)", sleepstudy).fit(reml=False, ddf="normal")
    ours = statsmodels_view(fit, 2)
    np.testing.assert_allclose(ours["fe_params"], theirs["fe_params"], rtol=1e-8)
    np.testing.assert_allclose(ours["params"], theirs["params"], rtol=1e-8)
    # statsmodels' ML covariance of β̂ comes from its full Hessian: 1e-4 apart from lme4's
    np.testing.assert_allclose(ours["bse"], theirs["bse"], rtol=1e-3)
    np.testing.assert_allclose(ours["tvalues"], theirs["tvalues"], rtol=1e-3)
    np.testing.assert_allclose(ours["cov_params"], theirs["cov_params"], rtol=1e-3)
    assert ours["llf"] == pytest.approx(theirs["llf"], rel=1e-9)
    assert ours["aic"] == pytest.approx(theirs["aic"], rel=1e-9)
    assert ours["bic"] == pytest.approx(theirs["bic"], rel=1e-9)
    assert "Days" in ours["summary"]
    assert list(fit.cov_params().index) == ["(Intercept)", "Days"]
    # the Satterthwaite fit's p-values are t-based, on its df
    sat = LinearMixedModel.from_formula("Reaction ~ Days + (1 | Subject)", sleepstudy).fit()
    assert sat.pvalues["Days"] > fit.pvalues["Days"]
    assert sat.df_fixed["Days"] == pytest.approx(161, abs=1e-3)
    lo, hi = sat.conf_int().loc["Days"]
    assert lo < sat.params["Days"] < hi


def _no_group_effect(seed=0, groups=12, per=8):
    """Group means identical by construction: the REML/ML between-group variance is on the boundary."""
    rng = np.random.default_rng(seed)
    g = np.repeat(np.arange(groups), per)
    x = np.tile(np.arange(per, dtype=float), groups)
    e = rng.normal(size=groups * per)
    e -= pd.Series(e).groupby(g).transform("mean").to_numpy()
    return pd.DataFrame({"y": 2 + 0.5 * x + e, "x": x, "g": [f"g{i}" for i in g]})


def test_singular_lmm_says_boundary_fit():
    res = LinearMixedModel.from_formula("y ~ x + (1 | g)", _no_group_effect()).fit()
    assert res.singular
    assert res.random.set_index("group").loc["g", "variance"] == 0
    d = res.to_dict()
    assert d["singular"] is True and any("boundary (singular) fit" in w for w in d["warnings"])
    assert "boundary (singular) fit" in res.summary()
    assert np.isfinite(res.fixed["df"]).all()


def test_singular_glmm_says_boundary_fit():
    # every group answers 4 of 8 correctly: no between-group variance
    rows = [(f"g{i}", j % 2) for i in range(10) for j in range(8)]
    df = pd.DataFrame(rows, columns=["g", "correct"])
    res = BinomialGLMM.from_formula("correct ~ 1 + (1 | g)", df).fit()
    assert res.singular and res.to_dict()["singular"] is True
    assert "boundary (singular) fit" in res.summary()
    assert "z value" in res.summary()


def test_regular_fit_is_not_singular(sleepstudy):
    res = LinearMixedModel.from_formula("Reaction ~ Days + (Days | Subject)", sleepstudy).fit()
    assert not res.singular and res.warnings == []


def test_cli_lmm_prints_satterthwaite_df_and_keeps_normal_on_request(capsys):
    import json

    from analysis.__main__ import main

    path = str(DATA / "sleepstudy.csv")
    formula = "Reaction ~ Days + (Days | Subject)"
    assert main(["lmm", path, "--formula", formula, "--reml", "--json"]) == 0
    days = json.loads(capsys.readouterr().out)["fixed"][1]
    assert days["term"] == "Days" and abs(days["df"] - 16.99998) < 1e-4
    assert days["p"] == pytest.approx(3.263824e-06, rel=3e-5)
    assert main(["lmm", path, "--formula", formula, "--reml", "--ddf", "normal", "--json"]) == 0
    days = json.loads(capsys.readouterr().out)["fixed"][1]
    assert days["df"] is None and days["statistic_kind"] == "z" and days["p"] == pytest.approx(1.27e-11, rel=1e-2)
    assert main(["lmm", path, "--formula", formula, "--reml"]) == 0
    text = capsys.readouterr().out
    assert "Satterthwaite" in text and "17.00" in text


@pytest.mark.parametrize("seed", [1, 2])
def test_satterthwaite_df_of_a_between_unit_effect_is_units_minus_bases(seed):
    # units nested in bases, crossed with participants, balanced: the basis contrasts are tested
    # against the unit stratum, whose error df is 12 units − 3 bases = 9 (the exact ANOVA F test)
    from analysis.simulate import simulate_responses

    df = simulate_responses(n_participants=30, n_units=12, seed=seed)
    res = LinearMixedModel.from_formula("log_rt ~ basis + (1 | participant) + (1 | unit)", df).fit()
    np.testing.assert_allclose(res.df_fixed[["basisnmf", "basispca"]], 9.0, atol=1e-3)
