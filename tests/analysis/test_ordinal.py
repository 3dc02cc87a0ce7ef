"""The cumulative-logit mixed model (analysis.ordinal, as ordinal::clmm): planted values, and
statsmodels' OrderedModel (logit) where the random effects are zero."""

import json

import numpy as np
import pandas as pd
import pytest

from analysis.__main__ import main
from analysis.ordinal import CumulativeLogitMixedModel
from analysis.simulate import simulate_groups

LOGITS = {"a": 0.0, "b": 0.8, "c": -0.5}
THRESHOLDS = [-0.5, 1.0]
FORMULA = "confidence ~ condition + (1 | participant) + (1 | unit)"


@pytest.fixture(scope="module")
def planted():
    d = simulate_groups(
        [list(LOGITS)],
        LOGITS,
        participants_per_group=40,
        units=30,
        trials_per_condition=15,
        sd_participant=0.8,
        sd_unit=0.6,
        thresholds=THRESHOLDS,
        seed=3,
    )
    return d, CumulativeLogitMixedModel.from_formula(FORMULA, d).fit()


def test_recovers_planted_thresholds_effects_and_sds(planted):
    d, fit = planted
    assert fit.converged and fit.nobs == len(d) == 1800
    f = fit.fixed.set_index("term")
    for term, truth in (("conditionb", 0.8), ("conditionc", -0.5)):
        assert abs(f.loc[term, "estimate"] - truth) < 3 * f.loc[term, "std_error"], term
    t = fit.thresholds.set_index("threshold")
    assert list(t.index) == ["1|2", "2|3"]
    for name, truth in zip(t.index, THRESHOLDS):
        assert abs(t.loc[name, "estimate"] - truth) < 3 * t.loc[name, "std_error"], name
    sd = fit.random.set_index("group")["sd"]
    assert 0.55 < sd["participant"] < 1.1 and 0.35 < sd["unit"] < 0.9


def balanced_without_group_variance():
    """Every participant and every unit gives the same ratings in each condition (a cyclic Latin
    square), so the data hold no variance between participants or units and the random-effect SDs'
    estimates are zero: the model is then the fixed-effects cumulative logit."""
    patterns = {
        "a": [1, 1, 2, 2, 3, 1, 2, 3, 1, 2, 1, 3],
        "b": [2, 3, 3, 2, 3, 1, 3, 2, 3, 2, 3, 3],
        "c": [1, 1, 1, 2, 1, 3, 1, 2, 1, 1, 2, 1],
    }
    rows = []
    for p in range(12):
        for u in range(12):
            for cond, pat in patterns.items():
                rows.append((f"p{p}", f"u{u}", cond, pat[(p + u) % 12]))
    return pd.DataFrame(rows, columns=["participant", "unit", "condition", "confidence"])


def test_equals_statsmodels_ordered_model_when_random_effects_are_zero():
    from statsmodels.miscmodels.ordinal_model import OrderedModel

    d = balanced_without_group_variance()
    fit = CumulativeLogitMixedModel.from_formula(FORMULA, d).fit()
    assert np.all(fit.random["sd"].to_numpy() < 1e-3)
    X = pd.get_dummies(d["condition"], drop_first=True).astype(float)
    om = OrderedModel(d["confidence"].to_numpy(), X, distr="logit").fit(
        method="newton", disp=False, maxiter=200, tol=1e-12
    )
    assert om.mle_retvals["converged"]
    cut = np.cumsum(np.r_[om.params.iloc[2], np.exp(om.params.iloc[3])])
    assert fit.loglik == pytest.approx(om.llf, abs=1e-5)
    np.testing.assert_allclose(fit.params.to_numpy(), om.params.iloc[:2].to_numpy(), atol=1e-3)
    np.testing.assert_allclose(fit.thresholds["estimate"].to_numpy(), cut, atol=1e-3)
    # β's standard errors as OrderedModel's (the Hessian of the same likelihood)
    np.testing.assert_allclose(fit.bse.to_numpy(), om.bse.iloc[:2].to_numpy(), rtol=2e-2)


def test_deviance_at_zero_sds_is_ordered_models_likelihood(planted):
    from statsmodels.miscmodels.ordinal_model import OrderedModel

    d, fit = planted
    X = pd.get_dummies(d["condition"], drop_first=True).astype(float)
    om = OrderedModel(d["confidence"].to_numpy(), X, distr="logit")
    alpha = np.array([-0.3, 1.2])
    beta = np.array([0.7, -0.4])
    params = np.r_[beta, alpha[0], np.log(alpha[1] - alpha[0])]
    assert fit.model.deviance(alpha, beta, np.zeros(2)) == pytest.approx(-2 * om.loglike(params), rel=1e-10)


def test_random_slopes_are_refused():
    d = balanced_without_group_variance()
    with pytest.raises(ValueError, match="random intercepts only"):
        CumulativeLogitMixedModel.from_formula("confidence ~ condition + (condition | participant)", d)


def test_cli_clmm_json(tmp_path, capsys, planted):
    d, _ = planted
    path = tmp_path / "ratings.csv"
    d.to_csv(path, index=False)
    assert main(["clmm", str(path), "--formula", FORMULA, "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["command"] == "clmm" and doc["kind"] == "clmm"
    assert [t["threshold"] for t in doc["thresholds"]] == ["1|2", "2|3"]
    assert main(["clmm", str(path), "--formula", FORMULA]) == 0
    out = capsys.readouterr().out
    assert "Cumulative Link Mixed Model fitted with the Laplace approximation" in out
    assert "Threshold coefficients:" in out


def test_cli_clmm_json_follows_the_output_contract(tmp_path, capsys):
    from importlib import resources

    import jsonschema

    schema = json.loads((resources.files("analysis") / "schema" / "results-v1.json").read_text())
    path = tmp_path / "ratings.csv"
    balanced_without_group_variance().to_csv(path, index=False)
    assert main(["clmm", str(path), "--formula", FORMULA, "--json"]) == 0
    jsonschema.validate(json.loads(capsys.readouterr().out), schema)
