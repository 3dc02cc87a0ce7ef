"""Estimated marginal means, contrasts, Kenward–Roger df, model comparison, random-effect correlations
and the post-fit API, against published lme4 / lmerTest / pbkrtest values where they exist and against
mixedlm 1.3.0 (a test-only reference, an lme4 port: requirements-test.txt) for the shapes this platform
fits: crossed intercepts (Borowski et al.'s Experiment I), random slopes with correlation
(sleepstudy; Experiment I with reference-type slopes) and a factorial within-participant design with
both (simulated with planted values, seed fixed).

Tolerances: mixedlm's binomial fit reaches the same −2LL as ours to 1e-8; its vcov() is the R_X-based
one, so SEs are compared with our ``se="rx"`` fit (to 1e-4 relative); estimates to 1e-4 relative
(optimiser tolerance); EMMs and contrasts inherit both.
"""

import json
from pathlib import Path

import jsonschema
import numpy as np
import pandas as pd
import pytest
from scipy import stats

from analysis.__main__ import main
from analysis.compare import NotNestedError, anova, check_nested
from analysis.emmeans import parse_at, parse_specs, reference_grid
from analysis.glmm import BinomialGLMM
from analysis.lmm import LinearMixedModel
from analysis.load import model_trials, normalise, read_responses
from analysis.summary import corr_at_boundary

mixedlm = pytest.importorskip("mixedlm")

ROOT = Path(__file__).resolve().parents[1] / "data"
BOROWSKI = ROOT / "borowski2021" / "experiment_I_trials.csv"
SLEEP = ROOT / "lme4" / "sleepstudy.csv"
CROSSED = "correct ~ condition + (1 | participant) + (1 | unit)"


def rel(a, b):
    a, b = np.asarray(a, float), np.asarray(b, float)
    return float(np.max(np.abs(a - b) / np.maximum(np.abs(b), 1e-12)))


@pytest.fixture(scope="module")
def borowski():
    df, _, _ = model_trials(normalise(read_responses(BOROWSKI, "borowski")))
    d = df[["correct", "condition", "reference_type", "participant", "unit"]].copy()
    d["correct"] = d["correct"].astype(float)
    return d.reset_index(drop=True)


@pytest.fixture(scope="module")
def crossed(borowski):
    ours = BinomialGLMM.from_formula(CROSSED, borowski).fit(se="rx")
    ref = mixedlm.glmer(CROSSED, borowski, family=mixedlm.families.Binomial())
    return ours, ref


@pytest.fixture(scope="module")
def sleep():
    return pd.read_csv(SLEEP)


# -- crossed intercepts: Borowski et al. 2021, Experiment I -------------------------------------------
def test_crossed_glmm_equals_mixedlm(crossed):
    ours, ref = crossed
    assert abs(ours.deviance - ref.deviance) < 1e-5
    assert rel(ours.params.to_numpy(), ref.beta) < 1e-4
    assert rel(ours.bse.to_numpy(), np.sqrt(np.diag(ref.vcov()))) < 1e-4
    var = ours.random.set_index("group")["variance"]
    assert abs(var["unit"] - 0.223117) < 5e-4 and abs(var["participant"] - 0.013096) < 5e-4


def test_emmeans_response_scale_and_pairs_equal_mixedlm(crossed):
    ours, ref = crossed
    em = ours.emmeans("condition", pairs=True, adjust="tukey")
    r = mixedlm.emmeans(ref, "condition", type="response")
    res = r.result
    assert list(em.means["condition"]) == [str(v) for v in res.grid["condition"]]
    assert rel(em.means["estimate"], res.emmean) < 1e-4
    assert rel(em.means["std_error"], res.se) < 1e-4
    assert rel(em.means["ci_low"], res.lower) < 1e-4 and rel(em.means["ci_high"], res.upper) < 1e-4
    # the delta method: SE(p) = p(1 − p) SE(logit p), the interval's ends through the inverse link
    p = em.means["estimate"].to_numpy()
    assert np.allclose(em.means["std_error"], p * (1 - p) * em.means["link_std_error"])
    pairs = r.pairs(adjust="tukey")
    assert list(em.contrasts["contrast"]) == list(pairs.contrast)
    assert rel(em.contrasts["estimate"], pairs.estimate) < 1e-4
    assert rel(em.contrasts["std_error"], pairs.se) < 1e-4
    assert np.allclose(em.contrasts["p"], pairs.p_value, atol=2e-4)
    # natural − optimized on the log-odds scale, its odds ratio and Tukey's p over 4 means
    row = em.contrasts.set_index("contrast").loc["natural - optimized"]
    assert abs(row["estimate"] - 0.980614) < 1e-4
    assert abs(row["odds_ratio"] - np.exp(row["estimate"])) < 1e-12
    assert abs(row["p"] - stats.studentized_range.sf(np.sqrt(2) * abs(row["statistic"]), 4, np.inf)) < 1e-9


def test_adjustments_and_link_scale(crossed):
    ours, _ = crossed
    none = ours.emmeans("condition", type="link", pairs=True, adjust="none").contrasts
    holm = ours.emmeans("condition", type="link", pairs=True, adjust="holm").contrasts
    bonf = ours.emmeans("condition", type="link", pairs=True, adjust="bonferroni").contrasts
    raw = none["p"].to_numpy()
    assert np.allclose(raw, 2 * stats.norm.sf(np.abs(none["statistic"])))
    assert np.allclose(bonf["p"], np.minimum(raw * 6, 1))
    order = np.argsort(raw)
    holm_expected = np.maximum.accumulate(np.minimum(raw[order] * (6 - np.arange(6)), 1))
    assert np.allclose(holm["p"].to_numpy()[order], holm_expected)
    link = ours.emmeans("condition", type="link")
    assert np.allclose(link.means["estimate"][0], ours.params["(Intercept)"])


def test_emmeans_by_groups_average_equally_over_the_rest():
    rng = np.random.default_rng(7)
    d = pd.DataFrame(
        {
            "a": rng.choice(["x", "y"], 400),
            "b": rng.choice(["u", "v", "w"], 400),
            "z": rng.normal(size=400),
            "g": rng.integers(0, 20, 400).astype(str),
        }
    )
    d["y"] = 1.0 + (d.a == "y") * 0.5 + (d.b == "w") * 0.3 + 0.2 * d.z + rng.normal(size=400)
    fit = LinearMixedModel.from_formula("y ~ a * b + z + (1 | g)", d).fit()
    grid = reference_grid(fit.model.design)
    assert len(grid) == 6 and np.allclose(grid["z"], d["z"].mean())
    em = fit.emmeans("a | b", pairs=True)
    assert list(em.by) == ["b"] and len(em.means) == 6 and len(em.contrasts) == 3
    em_a = fit.emmeans("a")
    assert em_a.averaged_over == ["b"]
    # equal weights: the mean over b of the cell means, not weighted by the cells' counts
    cells = em.means.groupby("a")["estimate"].mean()
    assert np.allclose(em_a.means.set_index("a")["estimate"], cells)
    only_u = fit.emmeans("a", at={"b": ["u"]}).means.set_index("a")["estimate"]
    assert np.allclose(only_u, em.means[em.means.b == "u"].set_index("a")["estimate"])
    with pytest.raises(ValueError, match="not a level"):
        fit.emmeans("a", at={"b": ["nosuch"]})
    at = fit.emmeans("a", at={"z": [1.0]})
    assert np.allclose(at.means["estimate"] - em_a.means["estimate"], fit.params["z"] * (1.0 - d["z"].mean()))


def test_emmeans_add_the_mean_offset_as_emmeans_does():
    rng = np.random.default_rng(2)
    d = pd.DataFrame(
        {"a": rng.choice(["x", "y"], 300), "g": rng.integers(0, 15, 300).astype(str), "size": rng.uniform(1, 5, 300)}
    )
    d["y"] = 2.0 + (d.a == "y") + np.log(d["size"]) + rng.normal(size=300)
    fit = LinearMixedModel.from_formula("y ~ a + offset(log(size)) + (1 | g)", d).fit()
    em = fit.emmeans("a", type="link").means.set_index("a")["estimate"]
    assert np.isclose(em["x"], fit.params["(Intercept)"] + np.log(d["size"]).mean())
    assert np.isclose(em["y"] - em["x"], fit.params["ay"])


def test_grid_levels_follow_relevel_and_factor_of_a_number():
    d = pd.read_csv(ROOT / "lme4" / "cbpp.csv")
    d["stage"] = d["period"].astype(int).astype(str)
    fit = BinomialGLMM.from_formula(
        'cbind(incidence, size - incidence) ~ relevel(stage, ref = "3") + (1 | herd)', d
    ).fit()
    em = fit.emmeans("stage", pairs=True, adjust="none")
    # the reference level first, as R's levels(relevel(...)) order them; the means do not depend on it
    assert [str(v) for v in em.means["stage"]] == ["3", "1", "2", "4"]
    plain = BinomialGLMM.from_formula("cbind(incidence, size - incidence) ~ factor(period) + (1 | herd)", d).fit()
    pm = plain.emmeans("period").means
    assert np.allclose(
        em.means.set_index(em.means["stage"].astype(str))["estimate"].sort_index(),
        pm.set_index(pm["period"].astype(str))["estimate"].sort_index(),
        rtol=1e-4,
    )


def test_specs_and_at_parsing():
    assert parse_specs("ref | cond") == (["ref"], ["cond"])
    assert parse_specs("~ ref * stim | cond") == (["ref", "stim"], ["cond"])
    assert parse_at(["Days=3", "ref=natural,synthetic"]) == {"Days": ["3"], "ref": ["natural", "synthetic"]}
    with pytest.raises(ValueError):
        parse_specs(" | cond")


# -- random slopes with correlation -------------------------------------------------------------------
def test_sleepstudy_slopes_emmeans_equal_mixedlm(sleep):
    ours = LinearMixedModel.from_formula("Reaction ~ Days + (Days | Subject)", sleep).fit()
    ref = mixedlm.lmer("Reaction ~ Days + (Days | Subject)", sleep)
    assert abs(ours.deviance - 1743.628) < 1e-2  # lme4's printed REML criterion
    assert rel(ours.bse.to_numpy(), np.sqrt(np.diag(ref.vcov()))) < 1e-4
    corr = ours.correlations["corr"].iloc[0]
    assert abs(corr - 0.07) < 0.005  # lme4 prints 0.07
    em = ours.emmeans("Days", at={"Days": [0, 5, 9]}, pairs=True)
    r = mixedlm.emmeans(ref, "Days", at={"Days": [0, 5, 9]}).result
    assert rel(em.means["estimate"], r.emmean) < 1e-5 and rel(em.means["std_error"], r.se) < 1e-4
    # Satterthwaite's df of every mean and contrast on this balanced design: 17 (lmerTest)
    assert np.allclose(em.means["df"], 17, atol=1e-3) and np.allclose(em.contrasts["df"], 17, atol=1e-3)
    cv = ours.ranef_condvar()
    rcv = ref.ranef(condVar=True).condVar["Subject"]
    first = cv[cv.level == cv.level.iloc[0]].set_index("term")["condvar"]
    assert rel(first["(Intercept)"], rcv["(Intercept)"][0]) < 1e-3 and rel(first["Days"], rcv["Days"][0]) < 1e-3


def test_kenward_roger_and_satterthwaite_match_pbkrtest_lmertest_on_sleepstudy(sleep):
    # lmerTest 3.1-3, ?anova.lmerModLmerTest, and pbkrtest's SATmodcomp example:
    # anova(m, ddf = "Kenward-Roger") and anova(m): Days NumDF 1, DenDF 17, F 45.853, p 3.264e-06
    for ddf in ("kenward-roger", "satterthwaite"):
        fit = LinearMixedModel.from_formula("Reaction ~ Days + (Days | Subject)", sleep).fit(ddf=ddf)
        f = fit.fixed.set_index("term")
        assert abs(f.loc["Days", "df"] - 17) < 1e-3
        assert abs(f.loc["Days", "t"] ** 2 - 45.853) < 2e-3
        assert abs(f.loc["Days", "p"] - 3.264e-06) < 1e-9
        row = fit.anova().set_index("term").loc["Days"]
        assert abs(row["den_df"] - 17) < 1e-3 and abs(row["statistic"] - 45.853) < 2e-3
    assert fit.ddf == "Satterthwaite"
    kr = LinearMixedModel.from_formula("Reaction ~ Days + (Days | Subject)", sleep).fit(ddf="kenward-roger")
    assert kr.ddf == "Kenward-Roger" and "Kenward-Roger's method" in kr.summary()
    with pytest.raises(ValueError, match="REML"):
        LinearMixedModel.from_formula("Reaction ~ Days + (Days | Subject)", sleep).fit(reml=False, ddf="kenward-roger")


def test_kenward_roger_gives_the_exact_split_plot_df():
    # Kenward & Roger (1997): in a balanced split-plot design their F test is the exact one, so the
    # between-participant effect has (participants − groups) df and the within effect the residual's
    rng = np.random.default_rng(3)
    rows = []
    for p in range(12):
        grp, a = p % 2, rng.normal(0, 1.0)
        for w in range(3):
            for _ in range(2):
                rows.append(
                    {
                        "participant": f"p{p}",
                        "group": f"g{grp}",
                        "within": f"w{w}",
                        "y": 0.5 * grp + 0.3 * w + a + rng.normal(0, 0.7),
                    }
                )
    d = pd.DataFrame(rows)
    fit = LinearMixedModel.from_formula("y ~ group + within + (1 | participant)", d).fit(ddf="kenward-roger")
    df = fit.fixed.set_index("term")["df"]
    assert abs(df["groupg1"] - 10) < 1e-3
    assert abs(df["withinw1"] - (72 - 12 - 2)) < 1e-2


def test_random_slope_correlations_in_json_with_the_boundary_flagged(borowski):
    d = borowski[borowski.reference_type != "none"]
    formula = "correct ~ reference_type + (1 + reference_type | participant) + (1 + reference_type | unit)"
    fit = BinomialGLMM.from_formula(formula, d).fit()
    ref = mixedlm.glmer(formula, d.reset_index(drop=True), family=mixedlm.families.Binomial())
    assert abs(fit.deviance - ref.deviance) < 1e-3
    corr = {c["group"]: c for c in valid({**fit.to_dict(), "command": "glmm"})["random_corr"]}
    assert set(corr) == {"participant", "unit"}
    assert abs(corr["unit"]["corr"] - (-0.92)) < 0.01 and not corr["unit"]["singular"]
    # the participant correlation sits at −1, as lme4 prints it, and is flagged singular
    assert corr["participant"]["corr"] < -0.999 and corr["participant"]["singular"]
    assert "participant" in fit.singular_groups
    assert corr_at_boundary(float("nan"), True) and not corr_at_boundary(0.5, True)


# -- a factorial within-participant design with crossed random effects and a random slope -----------
@pytest.fixture(scope="module")
def factorial():
    rng = np.random.default_rng(11)
    n_p, n_u = 24, 16
    a_p = rng.normal(0, 0.6, n_p)
    s_p = rng.normal(0, 0.4, n_p)
    c_u = rng.normal(0, 0.5, n_u)
    rows = []
    for p in range(n_p):
        for u in range(n_u):
            for ref in ("natural", "synthetic"):
                for stim in ("neuron", "pca"):
                    mu = (
                        5.0
                        + 0.8 * (ref == "synthetic")
                        + 0.3 * (stim == "pca")
                        - 0.4 * (ref == "synthetic") * (stim == "pca")
                        + a_p[p]
                        + s_p[p] * (ref == "synthetic")
                        + c_u[u]
                    )
                    rows.append(
                        {
                            "participant": f"p{p}",
                            "unit": f"u{u}",
                            "ref": ref,
                            "stim": stim,
                            "y": mu + rng.normal(0, 1.0),
                        }
                    )
    return pd.DataFrame(rows)


def test_factorial_within_design_equals_mixedlm_and_recovers_the_planted_effects(factorial):
    formula = "y ~ ref * stim + (1 + ref | participant) + (1 | unit)"
    ours = LinearMixedModel.from_formula(formula, factorial).fit()
    ref = mixedlm.lmer(formula, factorial)
    assert abs(ours.deviance - ref.REMLcrit()) < 1e-4
    assert rel(ours.params.to_numpy(), ref.beta) < 1e-6
    assert rel(ours.bse.to_numpy(), np.sqrt(np.diag(ref.vcov()))) < 1e-4
    assert abs(ours.params["refsynthetic:stimpca"] - (-0.4)) < 3 * ours.bse["refsynthetic:stimpca"]
    em = ours.emmeans("ref | stim", pairs=True)
    r = mixedlm.emmeans(ref, "ref", by="stim").result
    mine = em.means.set_index(["ref", "stim"])["estimate"]
    theirs = pd.Series(np.asarray(r.emmean), index=pd.MultiIndex.from_frame(r.grid[["ref", "stim"]]))
    assert rel(mine.sort_index().to_numpy(), theirs.sort_index().to_numpy()) < 1e-6
    c = em.contrasts.set_index("stim")
    # natural − synthetic within each stimulus type: −0.8 at neuron, −0.4 at pca (planted)
    assert abs(c.loc["neuron", "estimate"] + 0.8) < 3 * c.loc["neuron", "std_error"]
    assert abs(c.loc["pca", "estimate"] + 0.4) < 3 * c.loc["pca", "std_error"]
    # the contrast crosses the participants' slope: its df are near the participants', not the rows'
    assert 15 < c.loc["neuron", "df"] < 40


# -- model comparison ---------------------------------------------------------------------------------
def test_compare_is_lme4_anova_and_refuses_other_rows_and_non_nested(borowski, crossed):
    big, _ = crossed
    small = BinomialGLMM.from_formula("correct ~ 1 + (1 | participant) + (1 | unit)", borowski).fit(se="rx")
    table = anova(big, small).rows
    assert list(table["npar"]) == [3, 6]
    # README: Borowski Exp I tests condition with χ²(3) ≈ 313
    assert abs(table["chisq"].iloc[1] - 313.2856) < 1e-3 and table["df"].iloc[1] == 3
    assert abs(table["aic"].iloc[1] - big.aic) < 1e-9
    other = BinomialGLMM.from_formula("correct ~ reference_type + (1 | participant)", borowski).fit(se="rx")
    # reference_type pools condition's levels: nested in the fixed part, but without (1 | unit)
    check_nested(other, big)
    with pytest.raises(NotNestedError, match="random effects"):
        check_nested(small, other)
    fewer = BinomialGLMM.from_formula(CROSSED, borowski.iloc[:-5]).fit(se="rx")
    with pytest.raises(ValueError, match="different rows"):
        anova(fewer, small)


def test_compare_refits_reml_by_ml(sleep):
    m1 = LinearMixedModel.from_formula("Reaction ~ Days + (1 | Subject)", sleep).fit()
    m2 = LinearMixedModel.from_formula("Reaction ~ Days + (Days | Subject)", sleep).fit()
    t = anova(m1, m2)
    assert t.refitted_ml
    ml2 = LinearMixedModel.from_formula("Reaction ~ Days + (Days | Subject)", sleep).fit(reml=False)
    # lme4: logLik(refitML(fm1)) = −875.97 for (Days | Subject)
    assert abs(t.rows["loglik"].iloc[1] - ml2.loglik) < 1e-6 and abs(ml2.loglik + 875.97) < 0.01
    # lme4's anova(fm2, fm1) as its help pages print it: AIC 1802.1 / 1763.9, BIC 1814.8 / 1783.1,
    # logLik −897.04 / −875.97, Chisq 42.139 on 2 df (the χ² as tests/analysis/test_lme4_reference.py)
    r = t.rows
    assert np.allclose(r["aic"], [1802.1, 1763.9], atol=0.05) and np.allclose(r["bic"], [1814.8, 1783.1], atol=0.05)
    assert np.allclose(r["loglik"], [-897.04, -875.97], atol=0.005)
    assert abs(r["chisq"].iloc[1] - 42.139) < 1e-3 and r["df"].iloc[1] == 2
    assert "refitting model(s) with ML" in t.summary()


# -- after the fit ------------------------------------------------------------------------------------
def test_predict_fitted_and_residuals(sleep, crossed, borowski):
    fit = LinearMixedModel.from_formula("Reaction ~ Days + (Days | Subject)", sleep).fit()
    ref = mixedlm.lmer("Reaction ~ Days + (Days | Subject)", sleep)
    assert np.allclose(fit.predict(sleep.head(20)), ref.predict(sleep.head(20)), rtol=1e-5)
    assert np.allclose(fit.fittedvalues, fit.predict(sleep), rtol=1e-12)
    assert np.allclose(fit.resid, sleep["Reaction"] - fit.fittedvalues)
    pop = fit.predict(sleep.head(3), re_form="population")
    assert np.allclose(pop, fit.params["(Intercept)"] + fit.params["Days"] * sleep["Days"].head(3))
    new = sleep.head(2).assign(Subject=999)
    with pytest.raises(ValueError, match="new levels"):
        fit.predict(new)
    assert np.allclose(fit.predict(new, allow_new_levels=True), fit.predict(new, re_form="population"))
    g, _ = crossed
    mu = g.fittedvalues
    y = borowski["correct"].to_numpy()
    assert np.allclose(g.residuals("pearson"), (y - mu) / np.sqrt(mu * (1 - mu)))
    dev = g.residuals("deviance")
    assert np.allclose(np.sign(dev), np.sign(y - mu))
    # the deviance residuals' squares sum to the conditional deviance −2 log p(y | b̂)
    assert np.isclose(np.sum(dev**2), -2 * np.sum(y * np.log(mu) + (1 - y) * np.log(1 - mu)))
    assert np.allclose(g.predict(borowski.head(5), type="link"), np.log(mu[:5] / (1 - mu[:5])))


def test_odds_ratios_and_condvar_of_a_glmm(crossed):
    g, ref = crossed
    orat = g.odds_ratios().set_index("term")
    ci = g.conf_int()
    assert np.allclose(orat["odds_ratio"], np.exp(g.params))
    assert np.allclose(orat["ci_low"], np.exp(ci[0])) and np.allclose(orat["ci_high"], np.exp(ci[1]))
    cv = g.ranef_condvar()
    assert set(cv["group"]) == {"participant", "unit"}
    assert (cv["condvar"] > 0).all()
    # a level's conditional variance is below the prior variance of its group
    var = g.random.set_index("group")["variance"]
    assert (cv.groupby("group")["condvar"].max() < var.reindex(["participant", "unit"]).to_numpy()).all()
    theirs = ref.ranef(condVar=True).condVar["unit"]["(Intercept)"]
    mine = cv[cv.group == "unit"]["condvar"].to_numpy()
    assert rel(np.sort(mine), np.sort(np.asarray(theirs))) < 1e-3
    with pytest.raises(ValueError, match="binomial"):
        from analysis.postfit import odds_ratios

        odds_ratios(type("R", (), {"kind": "lmm"})())


# -- the command line ---------------------------------------------------------------------------------
SCHEMA = Path(__file__).resolve().parents[2] / "analysis" / "schema" / "results-v1.json"


def valid(doc):
    jsonschema.Draft202012Validator(json.loads(SCHEMA.read_text())).validate(doc)
    return doc


def test_cli_emmeans_and_compare_json(capsys):
    args = [
        "emmeans",
        str(BOROWSKI),
        "--map",
        "borowski",
        "--formula",
        CROSSED,
        "--specs",
        "condition",
        "--pairs",
        "--json",
    ]
    assert main(args) == 0
    out = valid(json.loads(capsys.readouterr().out))
    assert out["command"] == "emmeans" and out["scale"] == "response" and out["adjust"] == "tukey"
    assert {r["condition"] for r in out["emmeans"]} == {"natural", "optimized", "none_pre", "none_post"}
    assert all(r["df"] is None for r in out["emmeans"])  # asymptotic: Inf written as null
    assert any(r["contrast"] == "natural - optimized" for r in out["contrasts"])
    assert (
        main(["emmeans", str(BOROWSKI), "--map", "borowski", "--formula", CROSSED, "--specs", "condition", "--pairs"])
        == 0
    )
    text = capsys.readouterr().out
    assert "odds.ratio" in text and "Intervals are back-transformed from the logit scale" in text
    assert "natural / optimized" in text  # emmeans prints a ratio as one
    assert (
        main(
            [
                "compare",
                str(BOROWSKI),
                "--map",
                "borowski",
                "--formula",
                CROSSED,
                "--formula",
                "correct ~ 1 + (1 | participant) + (1 | unit)",
                "--anova",
                "--json",
            ]
        )
        == 0
    )
    out = valid(json.loads(capsys.readouterr().out))
    assert out["command"] == "compare" and out["lrt"][1]["df"] == 3
    assert out["anova"][0]["terms"][0]["term"] == "condition"
    assert (
        main(
            [
                "compare",
                str(BOROWSKI),
                "--map",
                "borowski",
                "--formula",
                "correct ~ 1 + (1 | participant) + (1 | unit)",
                "--formula",
                "correct ~ reference_type + (1 | participant)",
            ]
        )
        == 2
    )
    assert "not nested" in capsys.readouterr().err
    assert main(["emmeans", str(BOROWSKI), "--map", "borowski", "--formula", CROSSED, "--specs", "nosuch"]) == 2
    assert "not a variable of the fixed effects" in capsys.readouterr().err
    # an LMM through the same command, with Kenward–Roger's df
    assert (
        main(
            [
                "emmeans",
                str(SLEEP),
                "--formula",
                "Reaction ~ Days + (Days | Subject)",
                "--specs",
                "Days",
                "--at",
                "Days=0,9",
                "--ddf",
                "kenward-roger",
                "--pairs",
                "--json",
            ]
        )
        == 0
    )
    out = valid(json.loads(capsys.readouterr().out))
    assert out["ddf"] == "Kenward-Roger" and abs(out["contrasts"][0]["df"] - 17) < 1e-3


# -- the report and the figures -----------------------------------------------------------------------
def test_report_shows_natural_vs_synthetic_emmeans_with_a_forest_plot(tmp_path):
    from analysis.report import run_report

    df = read_responses(BOROWSKI, "borowski")
    res = run_report(
        df,
        tmp_path,
        formula="correct ~ reference_type + (1 | participant) + (1 | unit)",
        n_boot=50,
        data_name="experiment_I_trials.csv",
    )
    em = res["model"]["emmeans"]
    assert em["specs"] == ["reference_type"] and em["scale"] == "response"
    pairs = {c["contrast"]: c for c in em["contrasts"]}
    assert "natural - synthetic" in pairs and pairs["natural - synthetic"]["odds_ratio"] > 1
    assert (tmp_path / "contrasts.png").exists() and (tmp_path / "contrasts.svg").exists()
    html = (tmp_path / "report.html").read_text()
    assert "Estimated marginal means" in html and "natural - synthetic" in html
    valid(json.loads((tmp_path / "results.json").read_text()))


def test_caterpillar_plot_writes_png_and_svg(tmp_path, crossed):
    from analysis.plots import plot_caterpillar

    paths = plot_caterpillar(crossed[0].ranef_condvar(), tmp_path / "ranef")
    assert [p.suffix for p in paths] == [".png", ".svg"] and all(p.stat().st_size > 1000 for p in paths)


# -- Borowski et al. 2021, Experiment II: the model ------------------------------------------
EXP2 = ROOT / "borowski2021" / "experiment_II_trials.csv"
EXP2_FORMULA = "correct ~ reference_type * condition_name + (1 | participant) + (1 | unit)"


@pytest.fixture(scope="module")
def exp2():
    df, _, _ = model_trials(normalise(read_responses(EXP2, "borowski")))
    d = df[["correct", "reference_type", "condition_name", "participant", "unit"]].copy()
    d["correct"] = d["correct"].astype(float)
    return d.reset_index(drop=True)


def test_exp2_emmeans_ref_by_cond_equal_mixedlm(exp2, capsys):
    assert len(exp2) == 3680
    ours = BinomialGLMM.from_formula(EXP2_FORMULA, exp2).fit(se="rx")
    assert abs(ours.deviance - 3843.577) < 1e-3  # lme4, as issue 31 reports
    ref = mixedlm.glmer(EXP2_FORMULA, exp2, family=mixedlm.families.Binomial())
    em = ours.emmeans("reference_type | condition_name", type="response", pairs=True)
    r = mixedlm.emmeans(ref, "reference_type", by="condition_name")
    key = ["reference_type", "condition_name"]
    mine = em.means.set_index(key).sort_index()
    theirs = pd.DataFrame(
        {"p": r.result.emmean, "se": r.result.se, "lo": r.result.lower, "hi": r.result.upper},
        index=pd.MultiIndex.from_frame(r.result.grid[key].replace({"optimized": "synthetic"})),
    ).sort_index()
    assert rel(mine["estimate"], theirs["p"]) < 1e-4 and rel(mine["std_error"], theirs["se"]) < 1e-4
    assert rel(mine["ci_low"], theirs["lo"]) < 1e-4 and rel(mine["ci_high"], theirs["hi"]) < 1e-4
    pairs = r.pairs()
    c = em.contrasts
    assert list(c["contrast"]) == ["natural - synthetic"] * 4
    assert rel(c["estimate"], pairs.estimate) < 1e-4 and rel(c["std_error"], pairs.se) < 1e-4
    assert np.allclose(c["p"], pairs.p_value, rtol=1e-3, atol=1e-12)
    # the command line: lme4's (Hessian) standard errors, within 1 % of the R_X ones here
    assert (
        main(
            [
                "emmeans",
                str(EXP2),
                "--map",
                "borowski",
                "--formula",
                EXP2_FORMULA,
                "--specs",
                "reference_type | condition_name",
                "--type",
                "response",
                "--pairs",
                "--json",
            ]
        )
        == 0
    )
    out = valid(json.loads(capsys.readouterr().out))
    assert len(out["emmeans"]) == 8 and len(out["contrasts"]) == 4
    for row, (_, ref_row) in zip(
        sorted(out["emmeans"], key=lambda x: (x["reference_type"], x["condition_name"])), theirs.iterrows()
    ):
        assert abs(row["estimate"] - ref_row["p"]) < 1e-5 and abs(row["std_error"] / ref_row["se"] - 1) < 0.01
    for row in out["contrasts"]:
        assert {"estimate", "std_error", "statistic", "p", "odds_ratio"} <= set(row)


def test_exp2_random_slopes_carry_both_correlations(exp2):
    formula = (
        "correct ~ reference_type * condition_name + (1 + reference_type | participant) + (1 + reference_type | unit)"
    )
    fit = BinomialGLMM.from_formula(formula, exp2).fit()
    corr = {c["group"]: c for c in valid({**fit.to_dict(), "command": "glmm"})["random_corr"]}
    # lme4's VarCorr, as issue 31 reports it: −0.52 for unit, a boundary −1.00 for participant
    assert round(corr["unit"]["corr"], 2) == -0.52 and not corr["unit"]["singular"]
    assert round(corr["participant"]["corr"], 2) == -1.00 and corr["participant"]["singular"]
    assert "participant" in fit.to_dict()["singular_groups"]
