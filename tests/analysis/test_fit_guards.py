"""Fits that never mislead (issue 26, cases 2–5): model comparisons on different rows, rank-
deficient designs, separation and non-convergence, and the data checks before any fit.

Data: lme4's sleepstudy and cbpp (tests/data/lme4) and Borowski et al.'s Experiment I trials
(tests/data/borowski2021), each with its README naming the source."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from analysis import checks
from analysis._mixed import GRAD_TOL
from analysis.glmm import BinomialGLMM
from analysis.lmm import LinearMixedModel, lrt

DATA = Path(__file__).resolve().parents[1] / "data"


@pytest.fixture(scope="module")
def sleepstudy():
    d = pd.read_csv(DATA / "lme4" / "sleepstudy.csv")
    d["Subject"] = d["Subject"].astype(str)
    d["slow"] = (d["Reaction"] > 300).astype(int)
    return d


@pytest.fixture(scope="module")
def borowski():
    """Main, non-catch trials of Experiment I, under the export's column names."""
    d = pd.read_csv(DATA / "borowski2021" / "experiment_I_trials.csv")
    d = d[(d.trial_type == "main") & ~d.catch_trial]
    return d.rename(columns={"instr_type": "condition", "subject_id": "participant", "RT": "rt"})


# -- case 2: comparisons refuse different rows or responses ------------------------------------
def test_lrt_refuses_models_fitted_to_different_rows(sleepstudy):
    d = sleepstudy.copy()
    d["covariate"] = np.where(np.arange(len(d)) % 18 == 0, np.nan, np.arange(len(d)) % 7)
    small = LinearMixedModel.from_formula("Reaction ~ Days + (1 | Subject)", d).fit(reml=False)
    big = LinearMixedModel.from_formula("Reaction ~ Days + covariate + (1 | Subject)", d).fit(reml=False)
    assert (small.nobs, big.nobs) == (180, 170)
    with pytest.raises(ValueError, match="different rows: 180 vs 170 observations; refit both"):
        lrt(small, big)


def test_lrt_refuses_same_count_of_different_rows_and_other_responses(sleepstudy):
    a = LinearMixedModel.from_formula("Reaction ~ 1 + (1 | Subject)", sleepstudy.iloc[10:]).fit(reml=False)
    b = LinearMixedModel.from_formula("Reaction ~ Days + (1 | Subject)", sleepstudy.iloc[:-10]).fit(reml=False)
    with pytest.raises(ValueError, match="not the same ones"):
        lrt(a, b)
    c = LinearMixedModel.from_formula("log(Reaction) ~ Days + (1 | Subject)", sleepstudy).fit(reml=False)
    d = LinearMixedModel.from_formula("Reaction ~ 1 + (1 | Subject)", sleepstudy).fit(reml=False)
    with pytest.raises(ValueError, match=r"different responses: Reaction vs log\(Reaction\)"):
        lrt(d, c)
    # the same rows, labelled as in the caller's frame, still compare
    e = LinearMixedModel.from_formula("Reaction ~ Days + (1 | Subject)", sleepstudy).fit(reml=False)
    assert list(e.row_labels) == list(sleepstudy.index)
    assert lrt(d, e)["df"] == 1


# -- case 3: rank deficiency ----------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["lmm", "glmm"])
def test_aliased_column_dropped_and_named_sleepstudy(sleepstudy, kind):
    cls, y = (LinearMixedModel, "Reaction") if kind == "lmm" else (BinomialGLMM, "slow")
    res = cls.from_formula(f"{y} ~ Days + I(2*Days) + (1 | Subject)", sleepstudy).fit()
    ref = cls.from_formula(f"{y} ~ Days + (1 | Subject)", sleepstudy).fit()
    assert res.aliased == ["I(2*Days)"]
    assert ("fixed-effect model matrix is rank deficient so dropping 1 column / coefficient: "
            "I(2*Days)") in res.notes
    assert list(res.params.index) == ["(Intercept)", "Days"]
    assert np.allclose(res.params, ref.params, rtol=1e-5)
    assert np.allclose(res.bse, ref.bse, rtol=1e-3)
    assert res.converged


@pytest.mark.parametrize("kind", ["lmm", "glmm"])
def test_condition_confounded_with_block_borowski(borowski, kind):
    # each block shows one or two conditions only: 40 columns of condition × block, 16 cells
    cls, y = (LinearMixedModel, "log(rt)") if kind == "lmm" else (BinomialGLMM, "correct")
    res = cls.from_formula(f"{y} ~ condition * C(block_nr) + (1 | participant)", borowski).fit()
    assert len(res.aliased) == 24 and len(res.params) == 16
    assert res.notes[-1].startswith("fixed-effect model matrix is rank deficient so dropping 24 "
                                    "columns / coefficients: C(block_nr)10, C(block_nr)12, ")
    # the first of each collinear set stays, as in R's qr(): the conditions' own columns
    assert {"conditionnone_post", "conditionnone_pre", "conditionoptimized"} <= set(res.params.index)
    assert np.all(np.isfinite(res.bse)) and res.bse.max() < 5
    assert res.converged


# -- case 4: separation and non-convergence ------------------------------------------------------
def _separated():
    rows = [(f"p{p}", c, int(c == "b")) for p in range(20) for c in "ab" for _ in range(10)]
    return pd.DataFrame(rows, columns=["participant", "condition", "correct"])


def test_perfect_separation_is_not_converged():
    res = BinomialGLMM.from_formula("correct ~ condition + (1 | participant)", _separated()).fit()
    assert not res.converged
    assert any("separation" in w and "'conditionb'" in w for w in res.warnings)
    assert any("participant random-effect SD of (Intercept) stayed at its starting value" in w
               for w in res.warnings)


def test_good_fits_pass_the_gradient_check(sleepstudy):
    cb = pd.read_csv(DATA / "lme4" / "cbpp.csv")
    g = BinomialGLMM.from_formula("cbind(incidence, size - incidence) ~ factor(period) + (1 | herd)",
                                  cb).fit()
    m = LinearMixedModel.from_formula("Reaction ~ Days + (Days | Subject)", sleepstudy).fit()
    for res in (g, m):
        assert res.converged and res.gradient_max is not None and res.gradient_max < GRAD_TOL
        assert not [w for w in res.warnings if "converge" in w or "separation" in w]


def test_gradient_check_names_the_component():
    from analysis._mixed import gradient_check

    gmax, w = gradient_check(np.array([1e-6, 0.5]), np.diag([4.0, 1.0]), ["theta[g: (Intercept)]", "x"])
    assert gmax == pytest.approx(0.5)
    assert w == ["Model failed to converge with max|grad| = 0.5 (tol = 0.002, component 2: x)"]
    gmax, w = gradient_check(np.array([1e-6, 1e-5]), np.array([[1.0, 2.0], [2.0, 1.0]]), ["a", "b"])
    assert w == ["Model failed to converge: degenerate Hessian with 1 negative eigenvalue"]


# -- case 5: data checks before any fit ------------------------------------------------------------
def test_nan_response_is_a_note_naming_column_and_count(borowski):
    d = borowski.copy()
    d["correct"] = d["correct"].astype(float)
    d.loc[d.index[:37], "correct"] = np.nan
    res = BinomialGLMM.from_formula("correct ~ condition + (1 | participant)", d).fit()
    assert "NaN or infinite values in 'correct': 37 rows dropped" in res.notes
    assert res.n_dropped == {"NaN in correct": 37} and res.nobs == len(d) - 37
    assert not d.index[:37].isin(res.row_labels).any()


def test_nonpositive_rt_under_log_dropped_or_refused(borowski):
    formula = "log(rt) ~ condition + (1 | participant)"
    res = LinearMixedModel.from_formula(formula, borowski).fit()
    assert res.notes[0] == "'rt' ≤ 0 in 1 row (-0.0686522), impossible under log(rt): dropped"
    assert res.n_dropped == {"rt ≤ 0 under log": 1} and res.nobs == len(borowski) - 1
    with pytest.raises(checks.DataError, match=r"'rt' ≤ 0 in 1 row .* impossible under log\(rt\)"):
        LinearMixedModel.from_formula(formula, borowski, strict=True)
    with pytest.raises(checks.DataError):
        BinomialGLMM.from_formula("correct ~ log(rt) + (1 | participant)", borowski, strict=True)


def test_fractional_binomial_response_warns(sleepstudy):
    d = sleepstudy.copy()
    d["share"] = (d["Reaction"] - d["Reaction"].min()) / np.ptp(d["Reaction"])
    res = BinomialGLMM.from_formula("share ~ Days + (1 | Subject)", d).fit()
    assert any(w.startswith("non-integer #successes in a binomial glm!") for w in res.warnings)
    whole = BinomialGLMM.from_formula("slow ~ Days + (1 | Subject)", sleepstudy).fit()
    assert not any("non-integer" in w for w in whole.warnings)


def test_rows_left_out_by_trial_kind():
    d = pd.read_csv(DATA / "borowski2021" / "experiment_I_trials.csv")
    d = d.rename(columns={"trial_type": "trial_kind", "catch_trial": "catch"})
    kept = d[(d.trial_kind == "main") & ~d["catch"]]
    note, counts = checks.rows_left_out(checks.trial_kinds(d), kept.index)
    assert note == ("510 of 1,860 rows left out by trial kind (catch 180, repeated 180, practice 150); "
                    "1,350 rows kept")
    assert counts == {"trial kind catch": 180, "trial kind repeated": 180, "trial kind practice": 150}
    assert checks.rows_left_out(checks.trial_kinds(kept), kept.index) == (None, {})


def test_drop_nonfinite_counts_each_row_once():
    d = pd.DataFrame({"a": [1.0, np.nan, np.inf, 4.0], "b": ["x", None, None, "y"]})
    kept, notes, dropped = checks.drop_nonfinite(d, ["a", "b"])
    assert list(kept.index) == [0, 3]
    assert notes == ["NaN or infinite values in 'a': 2 rows dropped"] and dropped == {"NaN in a": 2}


def test_missing_trials_are_a_note_too():
    cb = pd.read_csv(DATA / "lme4" / "cbpp.csv")
    cb.loc[[3, 8], "size"] = np.nan
    res = BinomialGLMM.from_formula("incidence ~ factor(period) + (1 | herd)", cb, trials="size").fit(se="rx")
    assert res.nobs == 54 and "NaN or infinite values in 'size': 2 rows dropped" in res.notes
    assert not {3, 8} & set(res.row_labels)
