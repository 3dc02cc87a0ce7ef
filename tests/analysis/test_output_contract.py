"""The analysis output contract (docs/contracts.md §4): every command's ``--json`` and the report's
``results.json`` validate against ``analysis/schema/results-v1.json``; the summary reads like lme4's
``summary(merMod)``; the report tests the formula's terms by likelihood ratio.

lme4's printout compared against (lme4 1.1, ``summary(lmer(Reaction ~ Days + (Days | Subject),
sleepstudy))``, as in lme4's help page and Bates et al. 2015)::

    REML criterion at convergence: 1743.6
    Scaled residuals:
        Min      1Q  Median      3Q     Max
    -3.9536 -0.4634  0.0231  0.4634  5.1793
    Random effects:
     Groups   Name        Variance Std.Dev. Corr
     Subject  (Intercept) 612.10   24.741
              Days         35.07    5.922   0.07
     Residual             654.94   25.592
    Number of obs: 180, groups:  Subject, 18
    Correlation of Fixed Effects:
         (Intr)
    Days -0.138

and ``summary(glmer(cbind(incidence, size - incidence) ~ period + (1 | herd), cbpp, binomial))``::

         AIC      BIC   logLik deviance df.resid
       194.1    204.2    -92.0    184.1       51
    Scaled residuals:
        Min      1Q  Median      3Q     Max
    -2.3816 -0.7889 -0.2026  0.5142  2.8791
"""

import json
import re
from importlib import resources
from pathlib import Path

import jsonschema
import pandas as pd
import pytest

from analysis.__main__ import main
from analysis.glmm import BinomialGLMM
from analysis.lmm import LinearMixedModel
from analysis.simulate import simulate_machine_responses

DATA = Path(__file__).resolve().parents[1] / "data"
LME4 = DATA / "lme4"
BOROWSKI = DATA / "borowski2021" / "experiment_I_trials.csv"


@pytest.fixture(scope="module")
def validator():
    schema = json.loads((resources.files("analysis") / "schema" / "results-v1.json").read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def valid(validator, doc):
    errors = sorted(validator.iter_errors(doc), key=lambda e: list(e.path))
    assert not errors, "\n".join(f"{list(e.path)}: {e.message}" for e in errors[:5])


@pytest.fixture(scope="module")
def sleepstudy():
    d = pd.read_csv(LME4 / "sleepstudy.csv")
    d["Subject"] = d["Subject"].astype(str)
    return d


@pytest.fixture(scope="module")
def sleep_fit(sleepstudy):
    return LinearMixedModel.from_formula("Reaction ~ Days + (Days | Subject)", sleepstudy).fit()


@pytest.fixture(scope="module")
def cbpp_fit():
    d = pd.read_csv(LME4 / "cbpp.csv").astype({"herd": str, "period": str})
    return BinomialGLMM.from_formula("incidence ~ period + (1 | herd)", d, trials="size").fit()


def cli_json(capsys, *argv) -> dict:
    assert main(list(argv)) == 0
    return json.loads(capsys.readouterr().out)


# -- 7: the JSON contract -------------------------------------------------------------------------------
def test_glmm_and_lmm_json_have_one_shape_and_carry_the_summary(validator, capsys, tmp_path):
    cbpp = tmp_path / "cbpp.csv"
    # period as categories, as R's cbpp has it (a numeric column would be one slope)
    pd.read_csv(LME4 / "cbpp.csv").assign(period=lambda d: "p" + d["period"].astype(str)).to_csv(cbpp, index=False)
    lmm = cli_json(capsys, "lmm", str(LME4 / "sleepstudy.csv"), "--all-trials", "--formula",
                   "Reaction ~ Days + (Days | Subject)", "--json")
    glmm = cli_json(capsys, "glmm", str(cbpp), "--all-trials", "--formula",
                    "incidence ~ period + (1 | herd)", "--trials", "size", "--json")
    for doc in (lmm, glmm):
        valid(validator, doc)
    assert set(lmm) == set(glmm)
    assert lmm["schema_version"] == "1" and lmm["command"] == "lmm" and glmm["command"] == "glmm"
    # what the sleepstudy summary shows is in the JSON (lme4: Corr 0.066, Subject 18, σ 25.592, 1743.6)
    assert lmm["formula"] == "Reaction ~ Days + (Days | Subject)" and lmm["response"] == "Reaction"
    assert lmm["data"] == "sleepstudy.csv"
    assert lmm["groups"] == [{"group": "Subject", "levels": 18}]
    (corr,) = lmm["random_corr"]
    assert corr["group"] == "Subject" and corr["corr"] == pytest.approx(0.0655, abs=1e-3)
    assert lmm["sigma"] == pytest.approx(25.592, abs=1e-2)
    assert lmm["reml_criterion"] == pytest.approx(1743.6, abs=0.05) and lmm["deviance"] is None
    assert lmm["scaled_residuals"]["min"] == pytest.approx(-3.9536, abs=1e-3)
    assert {r["statistic_kind"] for r in lmm["fixed"]} == {"t"} and all(r["df"] > 16 for r in lmm["fixed"])
    assert {r["statistic_kind"] for r in glmm["fixed"]} == {"z"} and all(r["df"] is None for r in glmm["fixed"])
    assert glmm["deviance"] == pytest.approx(184.1, abs=0.05) and glmm["df_resid"] == 51
    assert glmm["convergence"]["converged"] is True and glmm["notes"] == [] and glmm["aliased"] == []


def test_the_schema_rejects_the_old_shapes(validator, cbpp_fit):
    doc = {"command": "glmm", **cbpp_fit.to_dict()}
    valid(validator, doc)
    old = json.loads(json.dumps(doc))
    row = old["fixed"][0]
    row["z"] = row.pop("statistic")  # the statistic's key switching between z and t
    assert not validator.is_valid(old)
    no_version = {k: v for k, v in doc.items() if k != "schema_version"}
    assert not validator.is_valid(no_version)
    t_without_df = json.loads(json.dumps(doc))
    t_without_df["fixed"][0]["statistic_kind"] = "t"
    assert not validator.is_valid(t_without_df)


def test_describe_machine_and_power_json_validate(validator, capsys, tmp_path):
    valid(validator, cli_json(capsys, "describe", str(BOROWSKI), "--map", "borowski", "--json", "--n-boot", "50"))
    export = tmp_path / "e.csv"
    simulate_machine_responses(n_participants=8, n_units=6, seed=2).to_csv(export, index=False)
    valid(validator, cli_json(capsys, "machine", str(export), "--json"))
    valid(validator, cli_json(capsys, "power", "--accuracy", "neuron=0.7,pca=0.8", "--participants", "6",
                              "--units", "4", "--trials", "6", "--sims", "2", "--seed", "0", "--json"))


# -- 1: the report tests what the formula says ------------------------------------------------------------
@pytest.fixture(scope="module")
def borowski_report(tmp_path_factory):
    out = tmp_path_factory.mktemp("borowski")
    assert main(["report", str(BOROWSKI), "--map", "borowski", "--out", str(out), "--n-boot", "50"]) == 0
    return out, json.loads((out / "results.json").read_text())


def test_borowski_report_tests_condition_by_likelihood_ratio(borowski_report, validator):
    out, saved = borowski_report
    valid(validator, saved)
    assert saved["formula"] == "correct ~ condition + (1 | participant) + (1 | unit)"
    assert saved["tests"] == ["condition"]
    (row,) = saved["model"]["lrt"]
    # four conditions: 3 df; natural vs none at 92 % vs 43 % correct is no subtle effect
    assert row["term"] == "condition" and row["df"] == 3 and row["chisq"] > 100 and row["p"] < 1e-20
    assert row["formula_small"] == "correct ~ 1 + (1 | participant) + (1 | unit)"
    # the GLMM and the LMMs nest alike; the GLMM adds its estimated marginal means (analysis.emmeans)
    # and its intervals (profile, within the budget); the LMMs do not
    assert set(saved["model"]) == {"formula", "fit", "lrt", "emmeans", "intervals"}
    assert set(saved["lmm"]["log_rt"]) == {"formula", "fit", "lrt"}
    assert saved["model"]["intervals"]["method"] == "profile"
    assert saved["lmm"]["log_rt"]["lrt"][0]["refitted_ml"] is True
    html = (out / "report.html").read_text()
    assert re.search(r"<th>term</th><th>χ²</th><th>df</th><th>p</th>.*<td>condition</td><td>[0-9.]+</td><td>3</td>",
                     html, re.S)
    assert not any("not a column" in n for n in saved["notes"])


def test_report_test_option_and_dropped_terms(tmp_path, capsys, validator):
    # a term the data lack is an error, one line, unless --allow-drop
    args = ["report", str(BOROWSKI), "--map", "borowski", "--n-boot", "20",
            "--formula", "correct ~ basis + condition + (1 | participant) + (1 | unit)"]
    assert main(args + ["--out", str(tmp_path / "a")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "'basis'" in err and "--allow-drop" in err and err.count("\n") == 1
    printed = cli_json(capsys, *args, "--out", str(tmp_path / "b"), "--allow-drop", "--test", "condition", "--json")
    valid(validator, printed)
    assert printed["command"] == "report" and any(f.endswith("accuracy.svg") for f in printed["files"])
    saved = json.loads((tmp_path / "b" / "results.json").read_text())
    assert saved["formula"].startswith("correct ~ condition")
    assert [r["term"] for r in saved["model"]["lrt"]] == ["condition"]
    assert any("'basis' is not a column" in n for n in saved["notes"])


def test_default_formula_keeps_conditions_that_share_a_basis_apart(tmp_path):
    from analysis.report import default_formula

    df = simulate_machine_responses(n_participants=6, n_units=6, seed=1)
    assert default_formula(df)[0].startswith("correct ~ basis ")
    # issue 25's pilot: two neuron conditions (conv1 natural, conv2 max-only) pooled under basis
    two = df.copy()
    two.loc[two["condition"] == "pca", "basis"] = "neuron"
    formula, notes = default_formula(two)
    assert formula.startswith("correct ~ condition ")
    assert notes and "share the basis neuron" in notes[0]


# -- 8: the summary reads like lme4's ---------------------------------------------------------------------
def test_sleepstudy_summary_is_laid_out_as_lme4s(sleep_fit):
    text = sleep_fit.summary(data="sleepstudy", correlation=True)
    assert text.splitlines()[1:3] == ["Formula: Reaction ~ Days + (Days | Subject)", "   Data: sleepstudy"]
    assert "REML criterion at convergence: 1743.6" in text
    assert "-3.9536 -0.4634  0.0231  0.4634  5.1793" in text
    block = text.split("Random effects:\n", 1)[1].split("Number of obs")[0].splitlines()
    assert block[0].split() == ["Groups", "Name", "Variance", "Std.Dev.", "Corr"]
    assert block[1].split()[:2] == ["Subject", "(Intercept)"]
    assert block[2].split()[0] == "Days" and block[2].split()[-1] == "0.07"  # the group printed once
    assert block[3].split()[0] == "Residual"
    assert "Number of obs: 180, groups:  Subject, 18" in text
    assert "Correlation of Fixed Effects:\n     (Intr)\nDays -0.138" in text
    assert "Corr(" not in text


def test_cbpp_summary_has_the_glmm_criteria_and_pearson_residuals(cbpp_fit):
    text = cbpp_fit.summary()
    lines = text.splitlines()
    i = lines.index("     AIC      BIC   logLik deviance df.resid")
    assert lines[i + 1].split() == ["194.1", "204.2", "-92.0", "184.1", "51"]
    q = lines[lines.index("Scaled residuals: ") + 2].split()
    assert [float(v) for v in q] == pytest.approx([-2.3816, -0.7889, -0.2026, 0.5142, 2.8791], abs=1e-3)
    assert "Correlation of Fixed Effects" not in text  # only when asked for


def test_ddf_normal_labels_agree_and_long_names_stay_aligned(sleepstudy):
    d = sleepstudy.rename(columns={"Days": "days_of_sleep_deprivation_in_the_laboratory"})
    fit = LinearMixedModel.from_formula(
        "Reaction ~ days_of_sleep_deprivation_in_the_laboratory + (1 | Subject)", d).fit(ddf="normal")
    text = fit.summary()
    fixed = text.split("Fixed effects:\n", 1)[1].splitlines()
    assert "z value" in fixed[0] and "Pr(>|z|)" in fixed[0] and "t value" not in text
    ends = {line.index("Estimate") + len("Estimate") for line in fixed[:1]}
    ends |= {len(line.split()[0]) + line[len(line.split()[0]):].index(line.split()[1]) + len(line.split()[1])
             for line in fixed[1:3]}
    assert len(ends) == 1  # the Estimate column ends at one position whatever the names' length


def test_singular_and_unconverged_fits_say_so_in_lme4s_words(sleep_fit):
    import copy

    bad = copy.copy(sleep_fit)
    bad.converged = False
    bad.singular_groups = ["Subject"]
    text = bad.summary()
    assert "boundary (singular) fit: see help('isSingular')" in text
    assert "convergence: the optimiser did not report convergence" in text
    d = bad.to_dict()
    assert d["convergence"]["converged"] is False and d["convergence"]["messages"]
    assert d["singular"] is True and d["singular_groups"] == ["Subject"]


def test_fitting_side_fields_reach_the_summary_and_the_json(sleep_fit):
    import copy

    r = copy.copy(sleep_fit)
    r.notes = ["period has 4 distinct values: did you mean factor(period)?"]
    r.aliased = ["I(2 * Days)"]
    r.n_dropped = {"non-finite Reaction": 3}
    r.gradient_max = 2.5e-4
    text = r.summary()
    assert "note: period has 4 distinct values" in text and "dropping 1 column / coefficient: I(2 * Days)" in text
    d = r.to_dict()
    assert d["notes"] == r.notes and d["aliased"] == ["I(2 * Days)"]
    assert d["n_dropped"] == {"non-finite Reaction": 3} and d["convergence"]["gradient_max"] == 2.5e-4


def test_cli_prints_one_line_errors_and_documents_the_formula_syntax(capsys):
    assert main(["lmm", str(LME4 / "sleepstudy.csv"), "--all-trials", "--formula",
                 "Reaction ~ Days + (1 | Subjectz)"]) == 2
    err = capsys.readouterr().err
    assert err == ("error: 'Subjectz' (grouping factor) is not a column of the data; "
                   "did you mean 'Subject'?\n")
    with pytest.raises(SystemExit):
        main(["glmm", "--help"])
    helptext = capsys.readouterr().out
    for idiom in ("factor(", "relevel(", "I(", "offset(", "cbind(", "log("):
        assert idiom in helptext
    with pytest.raises(SystemExit):
        main(["report", "--help"])
    assert "(1 | participant)" in capsys.readouterr().out


# -- issue 25: the report's header and its true reasons ---------------------------------------------------
def all_excluded_export() -> pd.DataFrame:
    """21 simulated participants whom the study's own rules all exclude (catch accuracy for every one,
    instructions time for 21 as well), with the columns a platform export carries."""
    df = simulate_machine_responses(n_participants=21, n_units=6, seed=4)
    df["study"] = "demo"
    df["study_version"] = 2
    df["participant_status"] = "completed"
    df.loc[df["participant"] == "p3", "participant_status"] = "returned"
    df["participant_started"] = "2026-03-02T09:00:00Z"
    df["server_time"] = "2026-03-04T17:30:00Z"
    df["excluded"] = True
    df["excl_catch_accuracy"] = True
    df["excl_instructions_time"] = True
    df["excl_one_side"] = False
    return df


def test_all_excluded_report_says_why_and_has_its_header(tmp_path, validator):
    from analysis.report import run_report

    res = run_report(all_excluded_export(), tmp_path, n_boot=20)
    saved = json.loads((tmp_path / "results.json").read_text())
    valid(validator, saved)
    reason = ("all 21 participants are excluded by the study's rules: catch accuracy below the study's minimum "
              "21, instructions read faster than the study's minimum 21; rerun with `--exclusions none` to see "
              "the data")
    assert saved["blocked"] == reason
    h = saved["header"]
    assert (h["study"], h["version"]) == ("demo", "2")
    assert (h["participants_started"], h["participants_completed"], h["participants_excluded"]) == (21, 20, 21)
    assert h["dates"] == "2026-03-02 09:00 – 2026-03-04 17:30 UTC"
    assert h["rules"].startswith("the study's own rules")
    page = (tmp_path / "report.html").read_text()
    text = res["text"]
    for out in (page, text):
        assert "rerun with `--exclusions none` to see the data" in out
        # the misleading reasons of before: the export has all three
        for wrong in ("has no mis_delta", "No RT or confidence columns", "Fewer than two conditions",
                      "no main trials"):
            assert wrong not in out
    assert "Study: demo, version 2" in text and "21 started, 20 completed, 21 excluded, 0 analysed" in text
    assert "<dt>Dates</dt><dd>2026-03-02 09:00 – 2026-03-04 17:30 UTC</dd>" in page
    # each section points to the reason at the top of the page
    assert page.count("Not computed: all 21 participants are excluded by the study&#x27;s rules (see above).") >= 5
    assert saved["model"] is None and saved["machine_note"] == reason
    # with the study's rules off, the same export is analysed
    none = run_report(all_excluded_export(), tmp_path / "none", n_boot=20, exclusions="none", fit_model=False)
    assert none["blocked"] is None and none["machine"] is not None


def test_a_section_catches_data_errors_only(tmp_path, monkeypatch):
    import analysis.report as report

    df = simulate_machine_responses(n_participants=6, n_units=6, seed=1)

    def data_error(*a, **k):
        raise ValueError("two conditions needed")

    monkeypatch.setattr(report, "unit_accuracy", data_error)
    res = report.run_report(df, tmp_path / "a", n_boot=20, fit_model=False)
    assert any(n == "per-unit accuracy not computed: ValueError: two conditions needed" for n in res["notes"])

    def bug(*a, **k):
        raise TypeError("unit_accuracy() got an unexpected keyword argument 'by'")

    monkeypatch.setattr(report, "unit_accuracy", bug)
    with pytest.raises(TypeError):  # a bug is not a "not computed" note
        report.run_report(df, tmp_path / "b", n_boot=20, fit_model=False)


def test_strict_is_passed_only_when_asked_for():
    from analysis.report import from_formula

    class Model:
        @classmethod
        def from_formula(cls, formula, data):
            return (formula, data)

    assert from_formula(Model, "y ~ x", "data", strict=False) == ("y ~ x", "data")
    with pytest.raises(ValueError, match="--strict"):
        from_formula(Model, "y ~ x", "data", strict=True)

    class Strict(Model):
        @classmethod
        def from_formula(cls, formula, data, strict=False):
            return strict

    assert from_formula(Strict, "y ~ x", "data", strict=True) is True


def test_figures_are_300_dpi_png_and_svg_with_the_legend_outside_the_data(tmp_path, monkeypatch):
    from PIL import Image

    import analysis.plots as plots
    from analysis.descriptives import accuracy_by_condition

    df = simulate_machine_responses(n_participants=6, n_units=6, seed=1)
    df["reference_type"] = df["condition"].map({"neuron": "natural", "pca": "synthetic"}).fillna("natural")
    table = accuracy_by_condition(df, n_boot=20, seed=0).assign(
        reference_type=lambda t: t["condition"].map({"neuron": "natural", "pca": "synthetic"}).fillna("natural"))
    seen = {}
    save = plots._save

    def spy(fig, out_stem):
        fig.canvas.draw()
        ax = fig.axes[0]
        seen["overlap"] = ax.get_legend().get_window_extent().overlaps(ax.get_window_extent())
        return save(fig, out_stem)

    monkeypatch.setattr(plots, "_save", spy)
    paths = plots.plot_accuracy(table, tmp_path / "accuracy")
    assert not seen["overlap"]
    # long condition names wrap under their bars without running into one another
    long = table.assign(condition=["layer4.2.conv3_neurons_with_natural_references",
                                   "layer4.2.conv3_principal_components_with_feature_visualizations",
                                   "layer4.2.conv3_nmf_codes"][:len(table)])

    def labels(fig, out_stem):
        fig.canvas.draw()
        boxes = [t.get_window_extent() for t in fig.axes[0].get_xticklabels() if t.get_text()]
        seen["labels"] = [a.overlaps(b) for i, a in enumerate(boxes) for b in boxes[i + 1:]]
        return save(fig, out_stem)

    monkeypatch.setattr(plots, "_save", labels)
    plots.plot_accuracy(long, tmp_path / "long")
    assert seen["labels"] and not any(seen["labels"])
    assert sorted(p.suffix for p in paths) == [".png", ".svg"]
    dpi = Image.open(tmp_path / "accuracy.png").info["dpi"]
    assert dpi == pytest.approx((300, 300), abs=0.5)


def test_rt_whiskers_follow_the_log_axis(tmp_path, monkeypatch):
    """Borowski et al.'s data hold answers at −69 ms and 4 ms: neither may set a whisker, as a whisker at
    1.5 IQR of linear RT did (its lower fence is negative for a right-skewed RT)."""
    import analysis.plots as plots
    from analysis.load import main_trials, read_responses

    main = main_trials(read_responses(BOROWSKI, "borowski"))
    seen = {}
    save = plots._save

    def spy(fig, out_stem):
        ys = [y for line in fig.axes[0].lines for y in line.get_ydata()]
        seen["low"] = min(ys)
        return save(fig, out_stem)

    monkeypatch.setattr(plots, "_save", spy)
    plots.plot_rt(main, tmp_path / "rt")
    assert seen["low"] > 0.1  # seconds: no whisker down to the 4 ms answer
