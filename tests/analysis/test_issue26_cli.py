"""Issue 26 end to end: each numbered case driven through ``python -m analysis …`` in a subprocess,
checking what a user sees (stdout, stderr, the exit status, ``--json``, ``results.json`` and
``report.html``). Every JSON printed or written is checked against the output contract's schema.

The fitting side's unit tests (test_fit_guards.py, test_formula_idioms.py) and the output side's
(test_output_contract.py) test the library; this module tests that their results reach the user.
A case those already cover through the CLI is named in a comment, not run twice.

Data: Borowski et al.'s Experiment I trials and lme4's sleepstudy and cbpp (tests/data, each with a
README naming its source)."""

import json
import os
import subprocess
import sys
from importlib import resources
from pathlib import Path

import jsonschema
import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "tests" / "data"
BOROWSKI = DATA / "borowski2021" / "experiment_I_trials.csv"
SLEEPSTUDY = DATA / "lme4" / "sleepstudy.csv"
CBPP = DATA / "lme4" / "cbpp.csv"
#: the rows of Experiment I (1,860) that are not main, non-catch trials (510), by kind
TRIAL_KINDS = "510 of 1,860 rows left out by trial kind (catch 180, repeated 180, practice 150); 1,350 rows kept"
#: Borowski's one negative RT, −0.069 s, as the report's log-RT model sees it (ms)
NEGATIVE_RT = "'rt_ms' ≤ 0 in 1 row (-68.6522), impossible under log(rt_ms): dropped"
MISSING_CORRECT = 5
MISSING_TRIAL_NR = 4


def cli(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "analysis", *map(str, args)], cwd=ROOT, capture_output=True,
                          text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})


def ok(run: subprocess.CompletedProcess) -> str:
    assert run.returncode == 0, run.stderr
    return run.stdout


@pytest.fixture(scope="module")
def valid():
    schema = json.loads((resources.files("analysis") / "schema" / "results-v1.json").read_text())
    validator = jsonschema.Draft202012Validator(schema)

    def check(doc: dict) -> dict:
        errors = sorted(validator.iter_errors(doc), key=lambda e: list(e.path))
        assert not errors, "\n".join(f"{list(e.path)}: {e.message}" for e in errors[:5])
        return doc

    return check


@pytest.fixture(scope="module")
def gaps(tmp_path_factory) -> Path:
    """Experiment I with empty cells where an export may have them: ``correct`` on 5 main trials (an
    answer whose outcome was not recorded) and ``trial_nr`` on 4 others; the negative RT stays."""
    d = pd.read_csv(BOROWSKI)
    main = d.index[(d["trial_type"] == "main") & ~d["catch_trial"]]
    d["correct"] = d["correct"].astype(object)
    d.loc[main[:MISSING_CORRECT], "correct"] = None
    d.loc[main[100:100 + MISSING_TRIAL_NR], "trial_nr"] = None
    path = tmp_path_factory.mktemp("gaps") / "experiment_I_gaps.csv"
    d.to_csv(path, index=False)
    return path


@pytest.fixture(scope="module")
def report(gaps, tmp_path_factory):
    """The default report of the gappy Experiment I: (stdout, results.json, report.html)."""
    out = tmp_path_factory.mktemp("report")
    text = ok(cli("report", gaps, "--map", "borowski", "--out", out, "--n-boot", "20"))
    return text, json.loads((out / "results.json").read_text()), (out / "report.html").read_text()


# -- 1: the report tests the condition effect the study is about -------------------------------------
def test_1_report_tests_condition_by_default(report, valid):
    text, saved, html = report
    valid(saved)
    assert saved["formula"] == "correct ~ condition + (1 | participant) + (1 | unit)"
    assert saved["tests"] == ["condition"] and saved["model"]["lrt"][0]["chisq"] > 100
    assert "Likelihood-ratio tests, each term dropped in turn" in text
    assert "<td>condition</td>" in html
    # --test and --allow-drop through the CLI: test_output_contract.py::test_report_test_option_and_dropped_terms


# -- 2: a likelihood-ratio test compares models fitted to the same rows -------------------------------
def test_2_report_lrt_uses_the_rows_of_the_full_model(gaps, tmp_path, valid):
    """``trial_nr`` is missing in 4 rows: the model without it must be fitted without them too, or the
    comparison is refused (lme4's anova) and the term goes untested."""
    out = tmp_path / "r"
    ok(cli("report", gaps, "--map", "borowski", "--out", out, "--n-boot", "20", "--no-one-side-rule",
           "--formula", "correct ~ condition + trial_nr + (1 | participant) + (1 | unit)", "--test", "trial_nr"))
    saved = valid(json.loads((out / "results.json").read_text()))
    for entry in (saved["model"], saved["lmm"]["log_rt"]):
        (row,) = entry["lrt"]
        assert row["term"] == "trial_nr" and row["note"] is None
        assert row["df"] == 1 and row["chisq"] >= 0 and 0 <= row["p"] <= 1
        assert f"NaN or infinite values in 'trial_nr': {MISSING_TRIAL_NR} rows dropped" in entry["fit"]["notes"]
    assert saved["model"]["fit"]["nobs"] == 1350 - MISSING_CORRECT - MISSING_TRIAL_NR
    # the refusal itself: test_fit_guards.py::test_lrt_refuses_models_fitted_to_different_rows


# -- 3: a rank-deficient design names the columns it drops --------------------------------------------
def test_3_aliased_column_is_named_in_summary_and_json(valid):
    args = ("lmm", SLEEPSTUDY, "--all-trials", "--formula", "Reaction ~ Days + I(2*Days) + (Days | Subject)")
    note = "fixed-effect model matrix is rank deficient so dropping 1 column / coefficient: I(2*Days)"
    assert f"note: {note}" in ok(cli(*args))
    doc = valid(json.loads(ok(cli(*args, "--json"))))
    assert doc["aliased"] == ["I(2*Days)"] and note in doc["notes"]
    assert [r["term"] for r in doc["fixed"]] == ["(Intercept)", "Days"]


# -- 4: perfect separation is not a converged fit ----------------------------------------------------
def test_4_separation_is_reported_not_converged(tmp_path, valid):
    rows = [(f"p{p}", c, int(c == "b")) for p in range(20) for c in "ab" for _ in range(10)]
    path = tmp_path / "separated.csv"
    pd.DataFrame(rows, columns=["participant", "condition", "correct"]).to_csv(path, index=False)
    args = ("glmm", path, "--formula", "correct ~ condition + (1 | participant)")
    doc = valid(json.loads(ok(cli(*args, "--json"))))
    assert doc["convergence"]["converged"] is False
    assert any("separation" in w and "'conditionb'" in w for w in doc["warnings"])
    text = ok(cli(*args))
    assert "separation" in text and "'conditionb'" in text


# -- 5: bad data gets a clear note, in the summary, the JSON and the report --------------------------
def test_5_missing_correct_and_trial_kinds_are_notes_of_the_cli_fit(gaps, valid):
    args = ("glmm", gaps, "--map", "borowski", "--formula", "correct ~ condition + (1 | participant) + (1 | unit)")
    missing = f"NaN or infinite values in 'correct': {MISSING_CORRECT} rows dropped"
    doc = valid(json.loads(ok(cli(*args, "--json"))))
    assert doc["notes"][:2] == [TRIAL_KINDS, missing]
    assert doc["n_dropped"] == {"trial kind catch": 180, "trial kind repeated": 180, "trial kind practice": 150,
                                "NaN in correct": MISSING_CORRECT}
    assert doc["nobs"] == 1350 - MISSING_CORRECT
    text = ok(cli(*args))
    assert f"note: {TRIAL_KINDS}\n" in text and f"note: {missing}\n" in text


def test_5_missing_correct_leaves_describe_with_a_note(gaps, valid):
    """Counted in the trials but not the successes, an answer without an outcome would read as wrong."""
    doc = valid(json.loads(ok(cli("describe", gaps, "--map", "borowski", "--json", "--n-boot", "20"))))
    assert doc["notes"] == [f"NaN or infinite values in 'correct': {MISSING_CORRECT} rows dropped from every section"]
    assert doc["main_trials"] == sum(c["trials"] for c in doc["conditions"]) == 1350 - MISSING_CORRECT
    assert ok(cli("describe", gaps, "--map", "borowski", "--n-boot", "20")).startswith(
        f"note: NaN or infinite values in 'correct': {MISSING_CORRECT} rows dropped")


def test_5_missing_correct_leaves_the_machine_observer_with_a_note(tmp_path, valid):
    from analysis.simulate import simulate_machine_responses

    d = simulate_machine_responses(n_participants=12, n_units=6, seed=1)
    main = d.index[d["trial_kind"] == "main"]
    d["correct"] = d["correct"].astype(float)
    d.loc[main[:3], "correct"] = None
    d.to_csv(tmp_path / "sim.csv", index=False)
    doc = valid(json.loads(ok(cli("machine", tmp_path / "sim.csv", "--json"))))
    assert doc["notes"][0] == "NaN or infinite values in 'correct': 3 rows dropped from every section"
    assert doc["n_trials"] == len(main) - 3


def test_5_a_correct_value_neither_missing_nor_0_1_is_one_line(tmp_path):
    """An empty cell is a missing answer (above); 0.5 is no answer at all, and truncating it to 0 would
    change the data silently."""
    d = pd.read_csv(BOROWSKI)
    d["correct"] = d["correct"].astype(float)
    d.loc[d.index[7], "correct"] = 0.5
    d.to_csv(tmp_path / "half.csv", index=False)
    run = cli("glmm", tmp_path / "half.csv", "--map", "borowski", "--formula", "correct ~ condition + (1 | unit)")
    assert (run.returncode, run.stdout, run.stderr) == (
        2, "", "error: column 'correct' has values that are not 0/1: [0.5]\n")


def test_5_missing_correct_trial_kinds_and_negative_rt_reach_the_report(report, valid):
    text, saved, html = report
    valid(saved)
    # the rows without an outcome leave first, so the trial kinds count 5 rows fewer
    kinds = TRIAL_KINDS.replace("1,860", "1,855").replace("1,350", "1,345")
    expected = [f"NaN or infinite values in 'correct': {MISSING_CORRECT} rows dropped from every section",
                f"accuracy and the fits use main trials: {kinds}", f"log_rt LMM: {NEGATIVE_RT}"]
    for note in expected:
        assert note in saved["notes"] and f"note: {note}" in text and note.replace("'", "&#x27;") in html
    # the log-RT model's own summary and JSON carry the dropped RT too
    log_rt = saved["lmm"]["log_rt"]
    assert log_rt["formula"].startswith("log(rt_ms) ~ condition") and NEGATIVE_RT in log_rt["fit"]["notes"]
    assert log_rt["fit"]["nobs"] == 1350 - MISSING_CORRECT - 1
    assert saved["model"]["fit"]["nobs"] == 1350 - MISSING_CORRECT
    # the RT figure's whiskers: test_output_contract.py::test_rt_whiskers_follow_the_log_axis


def test_5_negative_rt_is_an_error_under_strict(gaps, tmp_path):
    run = cli("report", gaps, "--map", "borowski", "--out", tmp_path / "r", "--n-boot", "20", "--strict")
    assert run.returncode == 2 and "Traceback" not in run.stderr
    assert run.stderr.startswith("error: 'rt_ms' ≤ 0 in 1 row (-68.6522), impossible under log(rt_ms)")
    assert run.stderr.count("\n") == 1


def test_5_fractional_response_without_trials_warns(tmp_path, valid):
    d = pd.read_csv(SLEEPSTUDY)
    d["share"] = (d["Reaction"] - d["Reaction"].min()) / (d["Reaction"].max() - d["Reaction"].min())
    path = tmp_path / "shares.csv"
    d.to_csv(path, index=False)
    args = ("glmm", path, "--formula", "share ~ Days + (1 | Subject)")
    doc = valid(json.loads(ok(cli(*args, "--json"))))
    assert any(w.startswith("non-integer #successes in a binomial glm!") for w in doc["warnings"])
    assert "non-integer #successes in a binomial glm!" in ok(cli(*args))


# -- 6: R's formula idioms, and a misspelled column is one line ---------------------------------------
def test_6_misspelled_fixed_effect_column_is_one_line_naming_the_closest():
    run = cli("glmm", BOROWSKI, "--map", "borowski", "--formula", "correct ~ conditon + (1 | participant)")
    assert run.returncode == 2 and run.stdout == "" and "Traceback" not in run.stderr
    assert run.stderr.startswith("error: ") and run.stderr.count("\n") == 1
    assert "'conditon'" in run.stderr and "'condition'" in run.stderr


def test_6_cbind_and_factor_through_the_cli(valid):
    """cbpp as lme4 fits it: ``factor(period)`` gives lme4's deviance 184.1 (help('cbpp')); the bare
    numeric period is one slope, and a note says so."""
    doc = valid(json.loads(ok(cli("glmm", CBPP, "--json", "--formula",
                                  "cbind(incidence, size - incidence) ~ factor(period) + (1 | herd)"))))
    assert doc["deviance"] == pytest.approx(184.1, abs=0.05) and len(doc["fixed"]) == 4
    slope = valid(json.loads(ok(cli("glmm", CBPP, "--json", "--formula",
                                    "cbind(incidence, size - incidence) ~ period + (1 | herd)"))))
    assert any("write factor(period)" in n for n in slope["notes"])
    # --help's syntax and examples: test_output_contract.py::test_cli_prints_one_line_errors_and_documents_the_formula_syntax


# -- 7: the JSON is a contract: every document above is validated against the schema; each command's
# --json: test_output_contract.py::test_glmm_and_lmm_json_have_one_shape_and_carry_the_summary and
# ::test_describe_machine_and_power_json_validate


# -- 8: the summary reads like lme4's ------------------------------------------------------------------
def test_8_sleepstudy_summary_through_the_cli():
    text = ok(cli("lmm", SLEEPSTUDY, "--all-trials", "--correlation", "--formula", "Reaction ~ Days + (Days | Subject)"))
    for line in ("REML criterion at convergence: 1743.6", "Number of obs: 180, groups:  Subject, 18",
                 "Correlation of Fixed Effects:"):
        assert line in text
    assert " Groups   Name        Variance Std.Dev. Corr" in text
    # the layout line by line: test_output_contract.py::test_sleepstudy_summary_is_laid_out_as_lme4s


# -- 9: packaging: test_packaging.py installs the package and imports it from outside the repository
