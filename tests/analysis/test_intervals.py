"""Profile-likelihood and parametric-bootstrap intervals (analysis.intervals) against lme4 and mixedlm.

References:
- lme4's help page ``?confint.merMod`` (lme4 1.1-35), whose example asserts to 5e-6
  ``confint(lmer(Reaction ~ Days + (Days || Subject), sleepstudy), maxpts = 8)``::

      .sig01   15.25847  37.78184      .sigma        22.88062  28.78768
      .sig02    3.964157  8.768238     (Intercept)  237.5732  265.2383
                                       Days           7.33431  13.60057

  (computed from an 8-point spline, hence the 2e-3 relative tolerance here).
- ``confint(lmer(Reaction ~ Days + (Days | Subject), sleepstudy))`` as lme4 prints it (its
  ``inst/testdata/confint_ex.rda`` and ``misc/`` master values; reprinted in concurve's vignette)::

      .sig01   14.3813850  37.7158318   .sigma       22.8982669  28.8579965
      .sig02   -0.4815008   0.6849863   (Intercept) 237.6806955 265.1295147
      .sig03    3.8011641   8.7533825   Days          7.3586533  13.5759188

- mixedlm 1.3.0 (an lme4 port; test-only reference) ``GlmerResult.confint(method="profile")``, the
  fixed effects of cbpp and of a crossed GLMM on Borowski et al.'s Experiment I, computed in the test.
"""

import json
import math
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import scipy.optimize as opt
from scipy import stats

from analysis import intervals
from analysis.__main__ import main
from analysis.glmm import BinomialGLMM
from analysis.intervals import bootstrap_intervals, confint, profile_intervals
from analysis.lmm import LinearMixedModel
from analysis.load import model_trials, normalise, read_table

DATA = Path(__file__).resolve().parents[1] / "data"
LME4 = DATA / "lme4"
BOROWSKI = DATA / "borowski2021" / "experiment_I_trials.csv"
Z = stats.norm.isf(0.025)


def rel(a, b):
    return abs(a - b) / abs(b)


def ends(ci):
    return ci.table.set_index("parameter")[["lower", "upper"]]


@pytest.fixture(scope="module")
def sleepstudy():
    return pd.read_csv(LME4 / "sleepstudy.csv")


@pytest.fixture(scope="module")
def cbpp():
    d = pd.read_csv(LME4 / "cbpp.csv")
    d["period"] = d["period"].astype(int).astype(str)
    return d


@pytest.fixture(scope="module")
def borowski():
    df, _, _ = model_trials(normalise(read_table(BOROWSKI, "borowski")))
    df = df[["correct", "condition", "participant", "unit"]].dropna().reset_index(drop=True)
    df["correct"] = df["correct"].astype(float)
    return df


def test_sleepstudy_uncorrelated_profile_matches_lme4_help_page(sleepstudy):
    fit = LinearMixedModel.from_formula("Reaction ~ Days + (Days || Subject)", sleepstudy).fit()
    ci = ends(profile_intervals(fit))
    ref = {
        "sd_(Intercept)|Subject": (15.25847, 37.78184),
        "sd_Days|Subject": (3.964157, 8.768238),
        "sigma": (22.88062, 28.78768),
        "(Intercept)": (237.5732, 265.2383),
        "Days": (7.33431, 13.60057),
    }
    for name, (lo, hi) in ref.items():
        assert rel(ci.loc[name, "lower"], lo) < 2e-3, name
        assert rel(ci.loc[name, "upper"], hi) < 2e-3, name


def test_sleepstudy_correlated_profile_matches_lme4(sleepstudy):
    fit = LinearMixedModel.from_formula("Reaction ~ Days + (Days | Subject)", sleepstudy).fit()
    res = profile_intervals(fit)
    ci = ends(res)
    ref = {
        "sd_(Intercept)|Subject": (14.3813850, 37.7158318),
        "cor_Days.(Intercept)|Subject": (-0.4815008, 0.6849863),
        "sd_Days|Subject": (3.8011641, 8.7533825),
        "sigma": (22.8982669, 28.8579965),
        "(Intercept)": (237.6806955, 265.1295147),
        "Days": (7.3586533, 13.5759188),
    }
    assert list(ci.index) == list(ref)
    for name, (lo, hi) in ref.items():
        assert abs(ci.loc[name, "lower"] - lo) < 2e-3 * max(1, abs(lo)), name
        assert abs(ci.loc[name, "upper"] - hi) < 2e-3 * max(1, abs(hi)), name
    assert res.method == "profile" and any("ML" in n for n in res.notes)


def _mixedlm_profile(formula, data, **kw):
    mixedlm = pytest.importorskip("mixedlm")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        m = mixedlm.glmer(formula, data, family=mixedlm.families.Binomial(), **kw)
        return list(m.confint(method="profile").values())


def test_cbpp_fixed_effects_match_mixedlm(cbpp):
    fit = BinomialGLMM.from_formula("incidence ~ period + (1 | herd)", cbpp, trials="size").fit()
    ci = ends(profile_intervals(fit))
    d = cbpp.assign(prop=cbpp.incidence / cbpp["size"])
    ref = _mixedlm_profile("prop ~ period + (1 | herd)", d, weights=d["size"].to_numpy(float))
    for name, (lo, hi) in zip(fit.params.index, ref):
        assert abs(ci.loc[name, "lower"] - lo) < 2e-3, name
        assert abs(ci.loc[name, "upper"] - hi) < 2e-3, name


def test_crossed_glmm_fixed_effects_match_mixedlm(borowski):
    formula = "correct ~ condition + (1 | participant) + (1 | unit)"
    fit = BinomialGLMM.from_formula(formula, borowski).fit()
    ci = ends(profile_intervals(fit))
    ref = _mixedlm_profile(formula, borowski)
    assert len(ref) == len(fit.params) == 4
    for name, (lo, hi) in zip(fit.params.index, ref):
        assert abs(ci.loc[name, "lower"] - lo) < 2e-3, name
        assert abs(ci.loc[name, "upper"] - hi) < 2e-3, name


def _profiled_deviance_at_sd(model, k, sd, nth, beta0):
    """An independent profile point: the Laplace deviance with θ_k = sd, minimised over the rest by
    Nelder–Mead (no gradients, no warm starts)."""

    def f(z):
        theta = np.insert(np.abs(z[: nth - 1]), k, sd)
        return model.deviance(theta, z[nth - 1 :])

    x0 = np.concatenate([np.full(nth - 1, 0.5), beta0])
    res = opt.minimize(
        f, x0, method="Nelder-Mead", options={"xatol": 1e-8, "fatol": 1e-9, "maxfev": 40000, "adaptive": True}
    )
    return res.fun


@pytest.mark.parametrize("case", ["cbpp", "borowski"])
def test_glmm_sd_ends_sit_where_the_deviance_rises_by_z_squared(case, cbpp, borowski):
    if case == "cbpp":
        fit = BinomialGLMM.from_formula("incidence ~ period + (1 | herd)", cbpp, trials="size").fit()
    else:
        fit = BinomialGLMM.from_formula("correct ~ condition + (1 | participant) + (1 | unit)", borowski).fit()
    res = profile_intervals(fit)
    ci = ends(res)
    nth = fit.model.rs.n_theta
    beta0 = fit.params.to_numpy()
    dev_hat = fit.deviance
    for k, name in enumerate(intervals.parameter_names(fit)[:nth]):
        for side in ("lower", "upper"):
            v = ci.loc[name, side]
            dev = _profiled_deviance_at_sd(fit.model, k, v, nth, beta0)
            if v == 0:  # the profile never reaches -z: at zero the deviance has risen less than z²
                assert dev - dev_hat < Z**2
            else:
                assert abs(math.sqrt(max(dev - dev_hat, 0)) - Z) < 2e-3, (name, side)
    if case == "borowski":  # the participant SD's profile stays below z down to zero
        assert ci.loc["sd_(Intercept)|participant", "lower"] == 0


def test_wald_intervals_have_fixed_effects_only(cbpp):
    fit = BinomialGLMM.from_formula("incidence ~ period + (1 | herd)", cbpp, trials="size").fit()
    t = confint(fit, "wald").table.set_index("parameter")
    assert np.isnan(t.loc["sd_(Intercept)|herd", "lower"])
    se = fit.bse["period2"]
    assert t.loc["period2", "upper"] - t.loc["period2", "lower"] == pytest.approx(2 * Z * se)


def test_bootstrap_percentiles_cover_the_profile_and_repeat_with_the_seed(cbpp):
    fit = BinomialGLMM.from_formula("incidence ~ period + (1 | herd)", cbpp, trials="size").fit()
    a = bootstrap_intervals(fit, n_boot=60, seed=3, progress=False)
    b = bootstrap_intervals(fit, n_boot=60, seed=3, progress=False)
    pd.testing.assert_frame_equal(a.table, b.table)
    assert a.extra["n_failed"] == 0 and a.extra["n_boot"] == 60
    prof = ends(profile_intervals(fit))
    boot = ends(a)
    # the two methods estimate the same interval: ends within a third of its width
    for name in fit.params.index:
        width = prof.loc[name, "upper"] - prof.loc[name, "lower"]
        assert abs(boot.loc[name, "lower"] - prof.loc[name, "lower"]) < width / 3, name
        assert abs(boot.loc[name, "upper"] - prof.loc[name, "upper"]) < width / 3, name


def test_bootstrap_counts_failed_refits_and_leaves_them_out(sleepstudy, monkeypatch):
    fit = LinearMixedModel.from_formula("Reaction ~ Days + (1 | Subject)", sleepstudy).fit()
    real = intervals.refit_to
    calls = {"n": 0}

    def flaky(result, y):
        calls["n"] += 1
        if calls["n"] % 4 == 0:
            raise np.linalg.LinAlgError("matrix is not positive definite")
        return real(result, y)

    monkeypatch.setattr(intervals, "refit_to", flaky)
    res = bootstrap_intervals(fit, n_boot=20, seed=1, progress=False)
    assert res.extra["n_failed"] == 5
    assert any("5 of 20 refits failed" in n for n in res.notes)
    assert "5 refits failed" in res.summary()
    t = ends(res)
    assert t.loc["Days", "lower"] < fit.params["Days"] < t.loc["Days", "upper"]


def test_cli_ci_json_carries_the_method(capsys):
    from importlib import resources

    import jsonschema

    schema = json.loads((resources.files("analysis") / "schema" / "results-v1.json").read_text())
    rc = main(
        [
            "glmm",
            str(LME4 / "cbpp.csv"),
            "--all-trials",
            "--formula",
            "cbind(incidence, size - incidence) ~ factor(period) + (1 | herd)",
            "--ci",
            "profile",
            "--json",
        ]
    )
    assert rc == 0
    doc = json.loads(capsys.readouterr().out)
    jsonschema.validate(doc, schema)
    assert doc["intervals"]["method"] == "profile"
    names = [p["parameter"] for p in doc["intervals"]["parameters"]]
    assert names[0] == "sd_(Intercept)|herd" and "factor(period)4" in names
    rc = main(
        [
            "lmm",
            str(LME4 / "sleepstudy.csv"),
            "--all-trials",
            "--formula",
            "Reaction ~ Days + (1 | Subject)",
            "--ci",
            "boot",
            "--boot-n",
            "5",
            "--seed",
            "2",
        ]
    )
    assert rc == 0
    out = capsys.readouterr().out
    assert "Parametric bootstrap (percentile) 95% confidence intervals" in out
    assert "5 simulations (seed 2)" in out


def test_random_slope_glmm_at_a_boundary_correlation_profiles_every_parameter():
    """A correlation estimated at +1 (a singular fit, common with random slopes): the profile walks
    the boundary instead of failing, and the ends stay inside the parameters' ranges."""
    from analysis.simulate import simulate_groups

    d = simulate_groups(
        [["a", "b"]],
        {"a": 0.5, "b": 1.0},
        participants_per_group=30,
        units=20,
        trials_per_condition=10,
        sd_participant=0.5,
        sd_unit=0.6,
        seed=5,
    )
    fit = BinomialGLMM.from_formula("correct ~ condition + (1 + condition | participant) + (1 | unit)", d).fit()
    assert fit.singular
    res = profile_intervals(fit)
    t = ends(res)
    cor = "cor_conditionb.(Intercept)|participant"
    assert -1 <= t.loc[cor, "lower"] <= t.loc[cor, "upper"] <= 1
    assert t.loc["sd_conditionb|participant", "lower"] == 0
    assert not t.isna().any().any() and not res.notes
    wald = ends(confint(fit, "wald"))
    # the fixed effects' profile and Wald intervals agree to a fraction of their width
    for name in fit.params.index:
        width = wald.loc[name, "upper"] - wald.loc[name, "lower"]
        assert abs(t.loc[name, "lower"] - wald.loc[name, "lower"]) < 0.15 * width


@pytest.mark.slow
def test_experiment_ii_profile_through_the_cli_matches_mixedlm(capsys):
    """The issue's model on Borowski et al.'s Experiment II (3,680 main trials): `glmm --ci profile
    --json` gives the fixed effects' profile ends of mixedlm 1.3.0 (an lme4 port whose profile intervals
    agree with R's confint(method = "profile") to about 3e-4) within 2e-3, and both random-effect SDs
    an interval around their estimates."""
    exp2 = DATA / "borowski2021" / "experiment_II_trials.csv"
    formula = "correct ~ reference_type * condition_name + (1 | participant) + (1 | unit)"
    assert main(["glmm", str(exp2), "--map", "borowski", "--formula", formula, "--ci", "profile", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["intervals"]["method"] == "profile"
    ours = {p["parameter"]: p for p in out["intervals"]["parameters"]}
    df, _, _ = model_trials(normalise(read_table(exp2, "borowski")))
    d = df[["correct", "reference_type", "condition_name", "participant", "unit"]].reset_index(drop=True)
    d["correct"] = d["correct"].astype(float)
    assert len(d) == 3680
    ref = _mixedlm_profile(formula, d)
    names = list(BinomialGLMM.from_formula(formula, d).fit().params.index)
    assert len(names) == len(ref) == 8
    for name, (lo, hi) in zip(names, ref):
        assert abs(ours[name]["lower"] - lo) < 2e-3, name
        assert abs(ours[name]["upper"] - hi) < 2e-3, name
    sds = [p for p in ours.values() if p["parameter"] not in names]
    assert len(sds) == 2
    assert all(p["lower"] < p["estimate"] < p["upper"] for p in sds)
