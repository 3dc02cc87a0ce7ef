"""The sparse (blocked) factorization of the mixed models against the dense one, and a crossed
model too large for the dense path."""

import numpy as np
import pandas as pd
import pytest

from analysis._mixed import MAX_DENSE_Q, RandomStructure
from analysis.formula import build_design
from analysis.glmm import BinomialGLMM
from analysis.lmm import LinearMixedModel
from analysis.simulate import simulate_responses


def _with_covariates(df, seed=0):
    rng = np.random.default_rng(seed)
    return df.assign(x=rng.normal(size=len(df)),
                     site=np.char.add("s", rng.integers(0, 6, len(df)).astype(str)))


@pytest.fixture(scope="module")
def crossed():
    return _with_covariates(simulate_responses(150, 60, seed=5, units_per_participant=16))


@pytest.mark.parametrize("formula", [
    "correct ~ basis + (1 | participant) + (1 | unit)",
    "correct ~ basis + x + (1 + x | participant) + (1 | unit) + (1 | site)",
])
def test_factor_pieces_match_dense(crossed, formula):
    """Solves, log-determinant and the entries of A⁻¹ on A's pattern, against LAPACK."""
    design = build_design(formula, crossed)
    dense, sparse = RandomStructure(design, "dense"), RandomStructure(design, "sparse")
    rng = np.random.default_rng(1)
    theta = dense.theta0() + rng.uniform(0.1, 0.5, dense.n_theta)
    zl, w = dense.zl(theta), rng.uniform(0.05, 0.25, design.n)
    Fd, Fs = dense.factor(zl, w), sparse.factor(zl, w)
    assert Fs.logdet() == pytest.approx(Fd.logdet(), rel=1e-12)
    b = rng.normal(size=(dense.q, 3))
    assert np.allclose(Fs.solve_t(Fs.solve(b)), Fd.solve_t(Fd.solve(b)), rtol=1e-10, atol=1e-12)
    assert np.allclose(Fs.solve(b).T @ Fs.solve(b), Fd.solve(b).T @ Fd.solve(b), rtol=1e-10)
    assert np.allclose(Fs.row_inverse(sparse), Fd.row_inverse(dense), rtol=1e-9, atol=1e-13)


def _compare(a, b, tol):
    assert a.extra["method"] == "dense" and b.extra["method"] == "sparse"
    assert b.converged and a.converged
    assert b.deviance == pytest.approx(a.deviance, abs=1e-6)
    fa, fb = a.fixed.set_index("term"), b.fixed.set_index("term")
    assert np.allclose(fb.estimate, fa.estimate, atol=tol)
    assert np.allclose(fb.std_error, fa.std_error, rtol=1e-3)
    assert np.allclose(b.random.variance, a.random.variance, atol=tol)
    for key in a.ranef:
        assert np.allclose(b.ranef[key].to_numpy(), a.ranef[key].to_numpy(), atol=10 * tol)


@pytest.mark.parametrize("formula", [
    "correct ~ basis + (1 | participant) + (1 | unit)",
    "correct ~ basis + x + (1 + x | participant) + (1 | unit)",
])
def test_glmm_dense_and_sparse_same_estimates(crossed, formula):
    a = BinomialGLMM.from_formula(formula, crossed, method="dense").fit()
    b = BinomialGLMM.from_formula(formula, crossed, method="sparse").fit()
    _compare(a, b, 1e-5)


def test_lmm_dense_and_sparse_same_estimates(crossed):
    rng = np.random.default_rng(2)
    slope = dict(zip(crossed.participant.unique(), rng.normal(0, 0.3, crossed.participant.nunique())))
    df = crossed.assign(y=crossed.log_rt + crossed.x * (0.2 + crossed.participant.map(slope)))
    formula = "y ~ basis + x + (1 + x | participant) + (1 | unit) + (1 | site)"
    for reml in (True, False):
        a = LinearMixedModel.from_formula(formula, df, method="dense").fit(reml=reml)
        b = LinearMixedModel.from_formula(formula, df, method="sparse").fit(reml=reml)
        _compare(a, b, 1e-4)


def test_auto_dense_for_small_q_and_unknown_method_refused(crossed):
    small = BinomialGLMM.from_formula("correct ~ basis + (1 | participant) + (1 | unit)", crossed)
    assert small.rs.method == "dense"
    with pytest.raises(ValueError, match="method"):
        BinomialGLMM.from_formula("correct ~ basis + (1 | unit)", crossed, method="cholmod")


def test_crossed_glmm_beyond_dense_memory_recovers_planted_values():
    """12,400 random effects: the dense q × q matrix alone would be 1.15 GB."""
    P, U, k = 12_000, 400, 10
    assert (P + U) ** 2 * 8 > 2**30
    df = simulate_responses(P, U, seed=11, units_per_participant=k, intercept=0.8,
                            effects=(0.0, 0.5, -0.4), sd_participant=0.6, sd_unit=0.9)
    model = BinomialGLMM.from_formula("correct ~ basis + (1 | participant) + (1 | unit)", df)
    assert model.rs.method == "sparse" and model.rs.q == P + U > MAX_DENSE_Q
    with pytest.raises(ValueError, match="dense"):
        BinomialGLMM.from_formula("correct ~ basis + (1 | participant) + (1 | unit)", df,
                                  method="dense")
    res = model.fit(se="rx")
    assert res.converged
    f = res.fixed.set_index("term")
    # planted: intercept 0.8, pca +0.5, nmf −0.4; the unit effects (400 draws) dominate the error
    for term, truth in {"(Intercept)": 0.8, "basispca": 0.5, "basisnmf": -0.4}.items():
        assert abs(f.loc[term, "estimate"] - truth) < 3 * f.loc[term, "std_error"]
    sd = res.random.set_index("group").sd
    assert sd["participant"] == pytest.approx(0.6, abs=0.08)
    assert sd["unit"] == pytest.approx(0.9, abs=0.12)
    assert len(res.ranef["participant"]) == P and len(res.ranef["unit"]) == U
    # the conditional modes track the planted unit effects (drawn as simulate_responses does)
    rng = np.random.default_rng(11)
    rng.normal(0, 0.6, P)
    planted = rng.normal(0, 0.9, U)
    modes = res.ranef["unit"]["(Intercept)"]
    index = [int(name.rsplit(":", 1)[1]) for name in modes.index]
    assert np.corrcoef(modes.to_numpy(), planted[index])[0, 1] > 0.9
    lmm = LinearMixedModel.from_formula("log_rt ~ basis + (1 | participant) + (1 | unit)", df).fit()
    sd = lmm.random.set_index("group").sd
    assert sd["participant"] == pytest.approx(0.3, abs=0.03)
    assert sd["unit"] == pytest.approx(0.15, abs=0.03)
    assert sd["Residual"] == pytest.approx(0.4, abs=0.01)
    assert isinstance(lmm.ranef["unit"], pd.DataFrame) and lmm.extra["method"] == "sparse"


LME4 = __import__("pathlib").Path(__file__).resolve().parents[1] / "data" / "lme4"


def _rel(a, b):
    return abs(a - b) / abs(b)


def test_sparse_path_agrees_with_lme4_references():
    """The sparse factorization forced on lme4's own examples, at the reference tests' tolerances
    (values as in test_lme4_reference.py): crossed, nested, random slope and aggregated binomial."""
    d = pd.read_csv(LME4 / "Penicillin.csv")
    res = LinearMixedModel.from_formula("diameter ~ 1 + (1 | plate) + (1 | sample)", d,
                                        method="sparse").fit()
    assert res.extra["method"] == "sparse"
    sd = res.random.set_index("group").sd
    assert _rel(sd["plate"], 0.8467) < 1e-3 and _rel(sd["sample"], 1.9316) < 1e-3
    assert _rel(sd["Residual"], 0.5499) < 1e-3 and abs(res.deviance - 330.8606) < 1e-2

    d = pd.read_csv(LME4 / "Pastes.csv")
    res = LinearMixedModel.from_formula("strength ~ 1 + (1 | batch/cask)", d, method="sparse").fit()
    sd = res.random.set_index("group").sd
    assert _rel(sd["batch:cask"], 2.9041) < 1e-3 and _rel(sd["batch"], 1.2874) < 1e-3
    assert _rel(res.fixed.std_error.iloc[0], 0.6769) < 1e-3 and abs(res.deviance - 246.9907) < 1e-2

    d = pd.read_csv(LME4 / "sleepstudy.csv").astype({"Subject": str})
    res = LinearMixedModel.from_formula("Reaction ~ Days + (Days | Subject)", d, method="sparse").fit()
    f = res.fixed.set_index("term")
    assert _rel(f.loc["Days", "estimate"], 10.467285959595987) < 1e-6
    assert _rel(f.loc["Days", "std_error"], 1.545789643905981) < 1e-3
    r = res.random.set_index(["group", "term"]).variance
    assert _rel(r["Subject", "Days"], 35.071714450938849) < 1e-3
    assert abs(res.deviance - 1743.628) < 1e-2

    d = pd.read_csv(LME4 / "cbpp.csv").astype({"period": int}).astype({"period": str})
    res = BinomialGLMM.from_formula("incidence ~ period + (1 | herd)", d, trials="size",
                                    method="sparse").fit()
    f = res.fixed.set_index("term")
    assert _rel(f.loc["period4", "estimate"], -1.58030423764517) < 1e-3
    assert _rel(f.loc["period4", "std_error"], 0.4220) < 0.03
    assert _rel(res.random.variance.iloc[0], 0.41245527438386) < 1e-3
    assert abs(-2 * res.loglik - 184.05267459802) < 1e-2


def test_sparse_refuses_a_schur_complement_too_large_to_hold(monkeypatch):
    import analysis._blocked as blocked

    df = simulate_responses(40, 30, seed=1, units_per_participant=5)
    design = build_design("correct ~ basis + (1 | participant) + (1 | unit)", df)
    monkeypatch.setattr(blocked, "MAX_SCHUR_Q", 20)
    with pytest.raises(ValueError, match="Schur complement"):
        RandomStructure(design, "sparse")
