"""Machine observer vs people (analysis.machine) against planted truth and reference values: the
simulated answers follow P(correct) = σ(α₀·Δ) with a known α₀, or ignore Δ altogether."""

import json
import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from analysis.__main__ import main
from analysis.machine import MachineObserver, correlation, fit_alpha, has_machine_deltas, wilson_interval
from analysis.report import run_report
from analysis.simulate import simulate_machine_responses, simulate_responses

ALPHA0 = 8.0


@pytest.fixture(scope="module")
def planted():
    return simulate_machine_responses(n_participants=60, n_units=36, alpha=ALPHA0, seed=11)


def test_wilson_interval_reproduces_newcombe_1998():
    # Newcombe (1998), Statistics in Medicine 17:857, Table I, method 3 (score interval without
    # continuity correction)
    published = {(81, 263): (0.2553, 0.3662), (15, 148): (0.0624, 0.1605), (0, 20): (0.0, 0.1611),
                 (1, 29): (0.0061, 0.1718), (29, 29): (0.8830, 1.0)}
    for (k, n), (lo, hi) in published.items():
        got = wilson_interval(k, n)
        assert (round(float(got[0]), 4), round(float(got[1]), 4)) == (lo, hi), (k, n)


@pytest.mark.parametrize("n", [7, 10, 23, 28])
def test_wilson_interval_contains_the_proportion_at_zero_and_all_correct(n):
    # statsmodels' own Wilson upper bound is 0.9999999999999999 at 7/7, 23/23 and 28/28
    lo, hi = wilson_interval(n, n)
    assert lo < 1.0 and hi == 1.0
    lo, hi = wilson_interval(0, n)
    assert lo == 0.0 and hi > 0.0
    lo, hi = wilson_interval(np.array([0, n, 3]), np.array([n, n, n]))
    assert np.all(lo <= np.array([0, n, 3]) / n) and np.all(hi >= np.array([0, n, 3]) / n)
    assert np.isnan(wilson_interval(0, 0)[0])


@pytest.mark.parametrize("planted", [0.7, 3.0, 12.0])
def test_fit_alpha_recovers_a_planted_slope(planted):
    rng = np.random.default_rng(4)
    deltas = rng.normal(0.1, 0.5, size=20_000)
    p = 1 / (1 + np.exp(-planted * deltas))
    correct = rng.random(deltas.size) < p
    estimate = fit_alpha(deltas, correct)
    se = 1 / np.sqrt(np.sum(p * (1 - p) * deltas**2))
    assert abs(estimate - planted) < 4 * se


def test_fit_alpha_from_proportions_equals_the_fit_from_single_answers():
    rng = np.random.default_rng(5)
    deltas = rng.normal(0, 0.4, size=300)
    n = rng.integers(5, 30, size=300)
    k = rng.binomial(n, 1 / (1 + np.exp(-2.5 * deltas)))
    from_props = fit_alpha(deltas, k / n, weights=n)
    singles_d = np.repeat(deltas, n)
    singles_y = np.concatenate([np.r_[np.ones(ki), np.zeros(ni - ki)] for ki, ni in zip(k, n)])
    assert from_props == pytest.approx(fit_alpha(singles_d, singles_y), rel=1e-6)


def test_fit_alpha_refuses_separated_or_empty_data():
    with pytest.raises(ValueError, match="separated"):
        fit_alpha([0.5, 0.2, -0.3], [1, 1, 0])
    with pytest.raises(ValueError):
        fit_alpha([], [])
    with pytest.raises(ValueError):
        fit_alpha([0.0, 0.0], [1, 0])


def test_alpha_and_its_standard_error_match_a_logistic_regression_through_the_origin(planted):
    sm = pytest.importorskip("statsmodels.api")
    res = MachineObserver(planted).fit()
    main = planted[(planted["trial_kind"] == "main")]
    logit = sm.Logit(main["correct"].to_numpy(float), main[["mis_delta"]].to_numpy(float)).fit(disp=0)
    assert res.alpha == pytest.approx(logit.params[0], rel=1e-6)
    assert res.alpha_se == pytest.approx(logit.bse[0], rel=1e-6)
    assert res.loglik == pytest.approx(logit.llf, rel=1e-9)
    assert res.n_trials == len(main)  # catch trials carry no Δ and are not used


def test_planted_alpha_is_recovered_and_machine_and_people_agree_per_unit(planted):
    res = MachineObserver(planted).fit()
    assert res.alpha_ci[0] <= ALPHA0 <= res.alpha_ci[1]
    assert res.alpha_ci[1] - res.alpha_ci[0] < 0.5 * ALPHA0
    pearson = res.correlations["machine_accuracy"]["pearson"]
    spearman = res.correlations["machine_accuracy"]["spearman"]
    assert pearson["n"] == 36 and pearson["r"] > 0.85 and pearson["ci_low"] > 0.7
    assert spearman["r"] > 0.75 and spearman["ci_low"] > 0.5
    # the machine's predicted accuracy is calibrated: per condition it sits within people's interval
    for row in res.conditions.itertuples():
        assert row.human_ci_low <= row.machine_accuracy <= row.human_ci_high, row
    # per unit, the prediction is σ(α̂·Δ) averaged over the very trials people answered
    unit = res.units.iloc[0]
    rows = planted[(planted["unit"] == unit["unit"]) & (planted["trial_kind"] == "main")]
    assert unit["machine_accuracy"] == pytest.approx(
        float(np.mean(1 / (1 + np.exp(-res.alpha * rows["mis_delta"])))))
    assert unit["trials"] == len(rows) and unit["human_accuracy"] == pytest.approx(rows["correct"].mean())
    assert unit["stored_mis"] == pytest.approx(rows["unit_mis"].iloc[0])


def test_the_alpha_interval_covers_the_planted_alpha_at_its_level():
    hits = []
    for seed in range(150):
        res = MachineObserver(simulate_machine_responses(n_participants=15, n_units=24, alpha=ALPHA0,
                                                         catch_per_participant=0, seed=seed)).fit()
        hits.append(res.alpha_ci[0] <= ALPHA0 <= res.alpha_ci[1])
    # 95 % nominal; a standard error off by a factor of 1.5 would give about 80 % or 99.7 %
    assert 0.89 <= np.mean(hits) <= 0.99


def test_people_who_ignore_the_machine_evidence_give_no_correlation():
    data = simulate_machine_responses(n_participants=60, n_units=60, related=False, seed=4)
    res = MachineObserver(data).fit()
    for method in ("pearson", "spearman"):
        c = res.correlations["machine_accuracy"][method]
        assert abs(c["r"]) < 0.3 and c["ci_low"] < 0 < c["ci_high"], (method, c)
    # people still vary between units (planted), the machine just does not explain it
    assert res.units["human_accuracy"].std() > 0.1


def test_correlation_intervals_pearson_as_scipy_and_spearman_covers_planted_rho():
    rng = np.random.default_rng(0)
    x = rng.normal(size=40)
    y = 0.5 * x + rng.normal(size=40)
    ours = correlation(x, y, "pearson")
    ref = stats.pearsonr(x, y)
    lo, hi = ref.confidence_interval(0.95)
    assert (ours["r"], ours["ci_low"], ours["ci_high"], ours["p"]) == pytest.approx(
        (ref.statistic, lo, hi, ref.pvalue))
    # bivariate normal with ρ = 0.6: Spearman's population value is (6/π)·asin(ρ/2)
    rho = 0.6
    rho_s = 6 / math.pi * math.asin(rho / 2)
    cov = [[1, rho], [rho, 1]]
    hits = []
    for _ in range(400):
        xy = rng.multivariate_normal([0, 0], cov, size=30)
        c = correlation(xy[:, 0], xy[:, 1], "spearman")
        hits.append(c["ci_low"] <= rho_s <= c["ci_high"])
    assert 0.92 <= np.mean(hits) <= 0.985
    assert math.isnan(correlation([1, 2], [2, 3])["r"])
    assert math.isnan(correlation([1, 1, 1, 1], [1, 2, 3, 4])["r"])


def test_other_reference_types_and_trials_without_delta_are_left_out(planted):
    baseline = planted.assign(reference_type="none", condition="baseline-" + planted["basis"],
                              participant="b" + planted["participant"])
    both = pd.concat([planted, baseline], ignore_index=True)
    res = MachineObserver(both).fit()
    assert res.n_trials == int((planted["trial_kind"] == "main").sum())
    assert any("reference type" in n and "baseline-neuron" in n for n in res.notes)
    assert MachineObserver(both, reference_types=None).fit().n_trials == 2 * res.n_trials
    without = planted.copy()
    without.loc[without["unit"] == without["unit"].iloc[0], "mis_delta"] = np.nan
    r2 = MachineObserver(without).fit()
    assert len(r2.units) == 35 and any("without a mis_delta" in n for n in r2.notes)


def test_separated_answers_leave_alpha_unfitted_but_report_the_rest():
    data = simulate_machine_responses(n_participants=5, n_units=8, catch_per_participant=0, seed=2)
    data["correct"] = (data["mis_delta"] > 0).astype(int)
    res = MachineObserver(data).fit()
    assert math.isnan(res.alpha) and any("separated" in n for n in res.notes)
    assert res.to_dict()["alpha"] is None
    assert not math.isnan(res.correlations["stored_mis"]["pearson"]["r"])


def test_report_has_the_machine_section_and_skips_it_without_mis_delta(planted, tmp_path):
    res = run_report(planted, tmp_path / "with", n_boot=50, fit_model=False)
    assert res["machine"]["alpha_ci"][0] <= ALPHA0 <= res["machine"]["alpha_ci"][1]
    page = (tmp_path / "with" / "report.html").read_text()
    assert "<h2>Machine observer vs people</h2>" in page and "Wald CI" in page
    assert (tmp_path / "with" / "machine_vs_human.png").exists()
    assert page.count("data:image/png;base64,") == 5
    assert "Machine observer vs people" in res["text"] and "pearson" in res["text"]
    saved = json.loads((tmp_path / "with" / "results.json").read_text())
    assert saved["machine"]["n_units"] == 36

    plain = simulate_responses(n_participants=10, n_units=12, seed=1)
    assert not has_machine_deltas(plain)
    res = run_report(plain, tmp_path / "without", n_boot=50, fit_model=False)
    assert res["machine"] is None and "no mis_delta" in res["machine_note"]
    page = (tmp_path / "without" / "report.html").read_text()
    assert "<h2>Machine observer vs people</h2>" in page and "no mis_delta" in page
    assert not (tmp_path / "without" / "machine_vs_human.png").exists()


def test_cli_machine_json_and_text(planted, tmp_path, capsys):
    path = tmp_path / "export.csv"
    planted.to_csv(path, index=False)
    assert main(["machine", str(path), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["alpha_ci"][0] <= ALPHA0 <= out["alpha_ci"][1]
    assert out["correlations"]["machine_accuracy"]["pearson"]["r"] > 0.85
    assert {"unit", "human_accuracy", "human_ci_low", "machine_accuracy", "stored_mis"} <= set(out["units"][0])
    assert main(["machine", str(path)]) == 0
    text = capsys.readouterr().out
    assert "Correlation across units" in text and "alpha = " in text
    plain = tmp_path / "plain.csv"
    simulate_responses(n_participants=5, n_units=6).to_csv(plain, index=False)
    assert main(["machine", str(plain)]) == 2
    assert "mis_delta" in capsys.readouterr().err


def test_alpha_with_crossed_random_intercepts_recovers_the_planted_slope():
    """People and units that differ in their own right: logit P = α₀·Δ + a_participant + c_unit. The
    GLMM's slope recovers α₀; the plain regression's marginal slope is attenuated towards zero."""
    from scipy.special import expit

    d = simulate_machine_responses(n_participants=60, n_units=36, alpha=ALPHA0, catch_per_participant=0,
                                   seed=5)
    rng = np.random.default_rng(6)
    a = dict(zip(d["participant"].unique(), rng.normal(0, 0.8, d["participant"].nunique())))
    c = dict(zip(d["unit"].unique(), rng.normal(0, 0.8, d["unit"].nunique())))
    eta = ALPHA0 * d["mis_delta"] + d["participant"].map(a) + d["unit"].map(c)
    d["correct"] = (rng.random(len(d)) < expit(eta)).astype(int)
    res = MachineObserver(d).fit()
    g = res.alpha_glmm
    assert g["alpha_ci"][0] <= ALPHA0 <= g["alpha_ci"][1] and g["converged"]
    assert 0.5 < g["sd_participant"] < 1.2 and 0.4 < g["sd_unit"] < 1.3
    assert res.alpha < g["alpha"]
    assert g["alpha_se"] > res.alpha_se  # answers that share a participant or unit are not independent
    assert "with crossed random intercepts" in res.summary()
    assert res.to_dict()["alpha_glmm"]["formula"] == MachineObserver.CROSSED_FORMULA
