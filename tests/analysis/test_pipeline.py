"""load → exclusions → descriptives → report/CLI, on Borowski et al. (2021) and on a
synthetic export in our own format."""

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from analysis.__main__ import main
from analysis.descriptives import describe
from analysis.exclusions import apply_exclusions
from analysis.load import BOROWSKI_MAP, ExportError, parse_mapping, read_responses
from analysis.report import adapt_formula, run_report

BOROWSKI = Path(__file__).resolve().parents[1] / "data" / "borowski2021" / "experiment_I_trials.csv"
MAP = ("participant=subject_id,unit=unit_name,condition=instr_type,reference_type=instr_type,correct=correct,"
       "trial_kind=trial_type,catch=catch_trial,rt=RT,confidence=abs_conf_rating")

# Borowski et al. README table: trials, accuracy, per-participant mean ± SEM, median RT, confidence
TABLE = {
    "natural": (450, 0.9222, 0.9222, 0.0089, 4.98, 2.49),
    "optimized": (450, 0.8200, 0.8200, 0.0213, 8.21, 1.95),
    "none_pre": (226, 0.4469, 0.4460, 0.0407, 2.55, 1.42),
    "none_post": (224, 0.4152, 0.4152, 0.0323, 1.84, 1.21),
}


def test_mapping_string_matches_constant():
    assert parse_mapping(MAP) == BOROWSKI_MAP


def test_borowski_describe_reproduces_table():
    df = read_responses(BOROWSKI, MAP)
    out = describe(df, n_boot=500, seed=1)
    rows = {r["condition"]: r for r in out["conditions"]}
    assert set(rows) == set(TABLE)
    for cond, (n, acc, pm, sem, rt, conf) in TABLE.items():
        r = rows[cond]
        assert r["trials"] == n
        assert round(r["accuracy"], 4) == acc
        assert round(r["participant_mean"], 4) == pm
        assert round(r["participant_sem"], 4) == sem
        assert round(r["median_rt_s"], 2) == rt
        assert round(r["mean_confidence"], 2) == conf
        assert r["ci_low"] <= r["accuracy"] <= r["ci_high"]
        assert r["unit_ci_low"] <= r["accuracy"] <= r["unit_ci_high"]
    assert out["catch"]["trials"] == 180
    assert round(out["catch"]["accuracy"], 4) == 0.9889
    # seeded: same numbers again
    assert describe(df, n_boot=500, seed=1) == out


def test_cli_describe_json(capsys):
    assert main(["describe", str(BOROWSKI), "--map", MAP, "--json", "--n-boot", "200"]) == 0
    out = json.loads(capsys.readouterr().out)
    acc = {r["condition"]: (r["trials"], round(r["accuracy"], 4)) for r in out["conditions"]}
    assert acc["natural"] == (450, 0.9222) and acc["none_post"] == (224, 0.4152)
    assert {"condition", "trials", "accuracy", "ci_low", "ci_high"} <= set(out["conditions"][0])


def test_missing_columns_clear_error(tmp_path):
    p = tmp_path / "x.csv"
    pd.DataFrame({"subject_id": [1], "correct": [1]}).to_csv(p, index=False)
    with pytest.raises(ExportError, match="missing required column"):
        read_responses(p)
    assert main(["describe", str(p)]) == 2


def _export(seed=0):
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(12):
        pid = f"p{i}"
        for t in range(40):
            kind = "catch" if t % 9 == 8 else "main"
            good = i != 0  # p0 fails catch trials
            correct = 1 if kind == "catch" and good else int(rng.random() < 0.75)
            if kind == "catch" and not good:
                correct = 0
            choice = "a" if i == 1 else rng.choice(["a", "b"])  # p1 presses one side only
            rows.append({
                "study": "s", "participant": pid, "condition": "pca-l3" if t % 2 else "neuron-l3",
                "basis": "pca" if t % 2 else "neuron", "layer": "l3", "unit": f"u{t % 10}",
                "trial_index": t, "trial_kind": kind, "choice": choice, "correct": correct,
                "confidence": 2, "rt_ms": 1500.0 + t,
                "instructions_ms": 5000.0 if i == 2 else 30000.0,  # p2 skims the instructions
                "participant_started": "2026-01-01T10:00:00Z",
                "participant_finished": "2026-01-01T10:20:00Z" if i != 3 else "2026-01-01T12:00:00Z",
            })
    return pd.DataFrame(rows)


def test_exclusions_each_rule(tmp_path):
    df = _export()
    p = tmp_path / "e.parquet"
    df.to_parquet(p)
    data = read_responses(p)
    res = apply_exclusions(data, max_total_minutes=60)
    reasons = dict(zip(res.excluded.participant, res.excluded.reasons))
    assert set(reasons) == {"p0", "p1", "p2", "p3"}
    assert "catch" in reasons["p0"] and "side" in reasons["p1"]
    assert "instructions" in reasons["p2"] and "total time" in reasons["p3"]
    assert res.kept.participant.nunique() == 8
    off = apply_exclusions(data, min_catch_accuracy=None, exclude_one_side=False,
                           min_instructions_s=None)
    assert off.excluded.empty


def test_exclusions_skip_absent_columns():
    df = read_responses(BOROWSKI, MAP)
    res = apply_exclusions(df)
    assert any("no 'choice' column" in n for n in res.notes)
    assert any("instructions_ms" in n for n in res.notes)


def test_report_single_basis_and_html(tmp_path):
    df = read_responses(BOROWSKI, MAP)
    formula, notes = adapt_formula("correct ~ basis + (1 | participant) + (1 | unit)", df)
    assert formula == "correct ~ 1 + (1 | participant) + (1 | unit)" and notes
    exp = _export()
    exp["basis"] = "pca"
    f2, notes2 = adapt_formula("correct ~ basis * layer + (1 | participant)", exp)
    assert f2.startswith("correct ~ 1 + ") and any("single basis" in n for n in notes2)
    res = run_report(df, tmp_path, n_boot=200)
    html = (tmp_path / "report.html").read_text()
    assert "data:image/png;base64," in html and "natural" in html
    assert (tmp_path / "accuracy.svg").exists() and res["model"]["fit"]["nobs"] == 1350


def test_cli_glmm_and_lmm_json(tmp_path, capsys):
    p = tmp_path / "e.csv"
    _export().to_csv(p, index=False)
    assert main(["glmm", str(p), "--formula", "correct ~ basis + (1 | participant) + (1 | unit)",
                 "--json"]) == 0
    g = json.loads(capsys.readouterr().out)
    assert [r["term"] for r in g["fixed"]] == ["(Intercept)", "basispca"]
    assert g["nobs"] == 12 * 36
    assert main(["lmm", str(p), "--formula", "rt_ms ~ basis + (1 | participant)", "--reml",
                 "--json"]) == 0
    lm = json.loads(capsys.readouterr().out)
    assert lm["random"][-1]["group"] == "Residual"


def test_no_django_import():
    import subprocess
    import sys

    code = "import sys, analysis.report, analysis.__main__; print('django' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=Path(__file__).resolve().parents[2])
    assert out.stdout.strip() == "False"


def test_report_says_so_when_the_exclusions_leave_nothing(tmp_path):
    path = tmp_path / "export.parquet"
    _export().to_parquet(path)
    res = run_report(read_responses(path), tmp_path / "out", n_boot=50, exclusion_options={"min_catch_accuracy": 1.01})
    assert res["model"] is None
    assert any("all 12 participants are excluded" in n and "--exclusions none" in n for n in res["notes"])
    assert (tmp_path / "out" / "report.html").exists()


def test_report_per_unit_tests_lmms_and_lrt(tmp_path):
    from analysis.glmm import BinomialGLMM
    from analysis.simulate import simulate_responses

    sim = simulate_responses(n_participants=30, n_units=24, seed=5).drop(columns="log_rt")
    res = run_report(sim, tmp_path, n_boot=100)
    saved = json.loads((tmp_path / "results.json").read_text())
    # LRT of basis: the null model's deviance, refitted here, gives the same χ²
    (t,) = saved["model"]["lrt"]
    small = BinomialGLMM.from_formula(t["formula_small"], sim).fit(se="rx")
    assert t["df"] == 2 and t["formula_small"] == "correct ~ 1 + (1 | participant) + (1 | unit)"
    assert t["chisq"] == pytest.approx(2 * (saved["model"]["fit"]["loglik"] - small.loglik), abs=1e-4)
    # confidence is an ordered rating: the cumulative-logit mixed model, not a Gaussian LMM
    assert set(saved["lmm"]) == {"log_rt"}
    conf = saved["ordinal"]["confidence"]
    assert conf["formula"].startswith("confidence ~ basis") and conf["fit"]["nobs"] == len(sim)
    assert [t["threshold"] for t in conf["fit"]["thresholds"]] == ["1|2", "2|3"]
    # the GLMM's profile-likelihood intervals, within the report's budget
    assert saved["model"]["intervals"]["method"] == "profile"
    assert "Profile-likelihood 95% confidence intervals" in res["text"]
    lm = saved["lmm"]["log_rt"]
    assert lm["formula"].startswith("log(rt_ms) ~ basis") and lm["lrt"][0]["refitted_ml"]
    assert lm["fit"]["nobs"] == len(sim)
    # planted log-RT intercept 7.8 (ln ms) within 3 SE
    icpt = lm["fit"]["fixed"][0]
    assert abs(icpt["estimate"] - 7.8) < 3 * icpt["std_error"]
    d = saved["descriptives"]
    assert d["unit_accuracy_test"]["df"] == 2 and len(d["unit_accuracy_test"]["pairs"]) == 3
    assert len(d["units"]) == 24 and {"rt_median_s", "confidence_iqr"} <= set(d["rt_confidence"][0])
    html = (tmp_path / "report.html").read_text()
    # four figures of the data and the forest plot of the GLMM's emmeans contrasts
    assert html.count("data:image/png;base64,") == 5
    assert "http://" not in html and "https://" not in html and "<script" not in html
    for stem in ("accuracy", "unit_accuracy", "rt", "confidence", "contrasts"):
        assert (tmp_path / f"{stem}.svg").exists() and (tmp_path / f"{stem}.png").exists()
    assert re.search(r"^\s*basis\s+[0-9.]+\s+2\s", res["text"], re.M)  # the LRT table's row


def test_report_shows_the_artifact_curves_beside_accuracy_per_basis(tmp_path, capsys):
    """The report takes the stimulus artifact's folder: its SVG figures, titled by its manifest, are
    embedded beside people's accuracy per basis; without it the section says it was skipped."""
    import base64

    from analysis.__main__ import main as analysis_main

    artifact = tmp_path / "artifact"
    (artifact / "figures").mkdir(parents=True)
    svg = b'<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"><rect width="10" height="10"/></svg>'
    (artifact / "figures" / "conv2-essence.svg").write_bytes(svg)
    (artifact / "manifest.json").write_text(json.dumps({"figures": [
        {"layer": "conv2", "kind": "essence", "title": "conv2: essence of the class", "file": "figures/conv2-essence.svg"}]}))
    export = tmp_path / "e.csv"
    _export().to_csv(export, index=False)
    assert analysis_main(["report", str(export), "--out", str(tmp_path / "with"), "--n-boot", "20", "--no-model",
                          "--curves", str(artifact), "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    page = (tmp_path / "with" / "report.html").read_text()
    assert "data:image/svg+xml;base64," + base64.b64encode(svg).decode() in page
    assert "conv2: essence of the class</figcaption>" in page
    per_basis = {r["basis"]: r["accuracy"] for r in res["curves"]["accuracy_per_basis"]}
    from analysis.exclusions import exclude
    from analysis.load import main_trials

    kept = main_trials(exclude(_export(), "auto", None).kept)
    assert kept.participant.nunique() < 12  # people excluded by the rules do not count
    for basis, acc in per_basis.items():
        assert acc == pytest.approx(kept.loc[kept.basis == basis, "correct"].mean())
    assert len(per_basis) == 2
    run_report(_export(), tmp_path / "without", n_boot=20, fit_model=False)
    assert "skipped: the export carries no figures" in (tmp_path / "without" / "report.html").read_text()
