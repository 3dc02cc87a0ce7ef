"""The simulation-based residual check (analysis.residuals, as R's DHARMa): the randomised PIT, the
outlier expectation, and the tests on a model that fits its data and on one that does not."""

import json
from importlib import resources
from pathlib import Path

import jsonschema
import numpy as np
import pandas as pd
import pytest

from analysis.__main__ import main
from analysis.glmm import BinomialGLMM
from analysis.lmm import LinearMixedModel
from analysis.residuals import (
    _outside_share,
    pit_residuals,
    plot_qq,
    simulate_residuals,
)
from analysis.simulate import simulate_groups

LOGITS = {"a": 0.5, "b": 1.0}


def test_pit_is_the_simulations_ecdf_randomised_over_ties():
    sims = np.array([[0, 0, 1, 1, 1], [1, 2, 3, 4, 5], [0, 0, 0, 0, 0]], float)
    obs = np.array([1, 3.5, 0])
    r = pit_residuals(obs, sims, np.random.default_rng(0), integer=True)
    assert 0.4 <= r[0] <= 1.0  # 2 of 5 below, 5 of 5 at or below
    assert r[1] == pytest.approx(0.6)  # no tie: the ECDF
    assert 0 <= r[2] <= 1
    many = pit_residuals(
        np.zeros(20000), np.tile([0, 0, 1, 1, 1.0], (20000, 1)), np.random.default_rng(1), integer=True
    )
    assert many.min() >= 0 and many.max() <= 0.4 and many.mean() == pytest.approx(0.2, abs=0.01)


def test_outlier_expectation():
    rng = np.random.default_rng(0)
    sims = rng.normal(size=(50, 99))
    assert _outside_share(rng.normal(size=50), sims) == pytest.approx(2 / 100)
    # binary draws: a row's maximum is almost never attained once
    assert _outside_share(np.ones(50), np.ones((50, 99))) == 0.0


@pytest.fixture(scope="module")
def good_fit():
    d = simulate_groups(
        [list(LOGITS)],
        LOGITS,
        participants_per_group=30,
        units=30,
        trials_per_condition=20,
        sd_participant=0.5,
        sd_unit=0.8,
        seed=2,
    )
    return BinomialGLMM.from_formula("correct ~ condition + (1 | participant) + (1 | unit)", d).fit()


def test_a_model_that_generated_the_data_passes(good_fit):
    check = simulate_residuals(good_fit, n_sim=200, seed=0)
    assert len(check.residuals) == 1200
    assert check.uniformity["p"] > 0.05 and check.dispersion["p"] > 0.05
    assert 0.8 < check.dispersion["ratio"] < 1.2
    assert check.outliers["count"] == 0
    assert any("binary responses" in n for n in check.notes)


def test_overdispersed_counts_fail_uniformity_and_dispersion():
    """Counts of 20 trials whose probability varies row by row (Beta(1, 1)), far beyond a
    binomial's spread around a group intercept."""
    rng = np.random.default_rng(1)
    rows = [(f"g{i % 20}", "x" if i % 2 else "y", rng.binomial(20, rng.beta(1, 1)), 20) for i in range(200)]
    agg = pd.DataFrame(rows, columns=["g", "cond", "k", "n"])
    fit = BinomialGLMM.from_formula("k ~ cond + (1 | g)", agg, trials="n").fit()
    check = simulate_residuals(fit, n_sim=200, seed=0)
    assert check.uniformity["p"] < 1e-3
    assert check.dispersion["ratio"] > 2 and check.dispersion["p"] < 0.01
    assert check.outliers["count"] > 10 and check.outliers["p"] < 1e-6


def test_lmm_residuals_are_uniform_for_its_own_model():
    d = pd.read_csv(Path(__file__).resolve().parents[1] / "data" / "lme4" / "sleepstudy.csv")
    fit = LinearMixedModel.from_formula("Reaction ~ Days + (Days | Subject)", d).fit()
    check = simulate_residuals(fit, n_sim=100, seed=0)
    assert len(check.residuals) == 180 and np.all((check.residuals >= 0) & (check.residuals <= 1))
    assert check.outliers["expected_share"] == pytest.approx(2 / 101)


def test_qq_plot_files(good_fit, tmp_path):
    check = simulate_residuals(good_fit, n_sim=50, seed=0)
    paths = plot_qq(check, tmp_path / "qq")
    assert [p.suffix for p in paths] == [".png", ".svg"] and all(p.stat().st_size > 0 for p in paths)


def test_cli_residual_check_json(tmp_path, capsys):
    schema = json.loads((resources.files("analysis") / "schema" / "results-v1.json").read_text())
    cbpp = Path(__file__).resolve().parents[1] / "data" / "lme4" / "cbpp.csv"
    assert (
        main(
            [
                "residual-check",
                str(cbpp),
                "--all-trials",
                "--formula",
                "cbind(incidence, size - incidence) ~ factor(period) + (1 | herd)",
                "--n-sim",
                "100",
                "--plot",
                str(tmp_path / "qq"),
                "--json",
            ]
        )
        == 0
    )
    doc = json.loads(capsys.readouterr().out)
    jsonschema.validate(doc, schema)
    assert doc["command"] == "residual-check" and doc["nobs"] == 56 and len(doc["files"]) == 2
