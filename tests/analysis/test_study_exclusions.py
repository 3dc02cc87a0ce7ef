"""The study's own exclusion flags in an export (``excluded``, ``excl_*``; docs/contracts.md §2):
honoured by default, replaced by the analysis's rules when those are asked for."""

import json

import numpy as np
import pandas as pd
import pytest

from analysis.__main__ import main
from analysis.exclusions import exclude, study_exclusions
from analysis.load import ExportError, read_responses
from analysis.report import run_report


def _export_with_flags():
    """Eight participants. The study's own rules were laxer than the analysis's defaults: p4 got 3 of 5
    catch trials right (60 %), which the study (say, a 50 % minimum) accepted and the analysis's 80 %
    would not. p0 failed the study's catch rule, p1 pressed one side only, p2 skimmed the instructions."""
    rng = np.random.default_rng(0)
    rows = []
    for i in range(8):
        pid = f"p{i}"
        flags = {"excl_catch_accuracy": i == 0, "excl_one_side": i == 1, "excl_instructions_time": i == 2,
                 "excl_total_time": None}
        for t in range(45):
            kind = "catch" if t % 9 == 8 else "main"
            correct = int(rng.random() < 0.75)
            if kind == "catch":
                correct = {0: 0, 4: int(t < 27)}.get(i, 1)
            rows.append({
                "study": "s", "participant": pid, "condition": "pca" if t % 2 else "neuron",
                "basis": "pca" if t % 2 else "neuron", "layer": "l3", "unit": f"u{t % 10}",
                "trial_index": t, "trial_kind": kind, "choice": "a" if i == 1 else rng.choice(["a", "b"]),
                "correct": correct, "confidence": 2, "rt_ms": 1500.0 + t,
                "instructions_ms": 5000.0 if i == 2 else 30000.0,
                "excluded": any(v for v in flags.values() if v), **flags,
            })
    return pd.DataFrame(rows)


@pytest.fixture
def export_csv(tmp_path):
    path = tmp_path / "export.csv"
    _export_with_flags().to_csv(path, index=False)
    return path


def test_flags_survive_csv_and_parquet(export_csv, tmp_path):
    csv = read_responses(export_csv)
    assert str(csv["excluded"].dtype) == "boolean" and csv["excl_total_time"].isna().all()
    parquet = tmp_path / "export.parquet"
    frame = _export_with_flags()
    frame["excl_total_time"] = frame["excl_total_time"].astype("boolean")
    frame.to_parquet(parquet)
    pq = read_responses(parquet)
    for data in (csv, pq):
        res = study_exclusions(data)
        assert dict(zip(res.excluded.participant, res.excluded.reasons)) == {
            "p0": "catch accuracy below the study's minimum",
            "p1": "one response side throughout",
            "p2": "instructions read faster than the study's minimum",
        }


def test_the_study_flags_are_honoured_by_default_and_the_own_rules_on_request(export_csv):
    data = read_responses(export_csv)
    study = exclude(data)
    assert study.source == "study" and set(study.excluded.participant) == {"p0", "p1", "p2"}
    assert study.counts["catch accuracy below the study's minimum"] == 1
    assert any("does not apply" in n and "excl_total_time" in n for n in study.notes)
    # the analysis's default 80 % catch rule also drops p4, whom the study kept
    own = exclude(data, "own")
    assert own.source == "analysis" and set(own.excluded.participant) == {"p0", "p1", "p2", "p4"}
    # rule options imply the analysis's rules
    assert exclude(data, options={"min_catch_accuracy": 0.5}).source == "analysis"
    assert exclude(data, "none").kept.participant.nunique() == 8
    with pytest.raises(ExportError):
        exclude(data.drop(columns=["excluded"]), "study")
    with pytest.raises(ValueError):
        exclude(data, "sometimes")


def test_report_says_which_rules_it_applied(export_csv, tmp_path):
    data = read_responses(export_csv)
    res = run_report(data, tmp_path / "a", n_boot=50, fit_model=False)
    assert res["exclusions"]["source"] == "study" and res["exclusions"]["participants_kept"] == 5
    assert "exclusions: the study's own rules" in res["text"]
    assert "the study&#x27;s own rules, as flagged in the export" in (tmp_path / "a" / "report.html").read_text()
    res = run_report(data, tmp_path / "b", n_boot=50, fit_model=False, exclusion_options={"min_catch_accuracy": 0.8})
    assert res["exclusions"]["source"] == "analysis" and res["exclusions"]["participants_kept"] == 4


def test_cli_report_exclusion_choices(export_csv, tmp_path, capsys):
    def kept(*extra):
        assert main(["report", str(export_csv), "--json", "--no-model", "--n-boot", "50",
                     "--out", str(tmp_path / "r"), *extra]) == 0
        out = json.loads(capsys.readouterr().out)["exclusions"]
        return out["source"], out["participants_kept"]

    assert kept() == ("study", 5)
    assert kept("--exclusions", "own") == ("analysis", 4)
    assert kept("--min-instructions-s", "1") == ("analysis", 5)  # p2 read for 5 s; p4's catch rate is out
    assert kept("--exclusions", "none") == ("none", 8)


def _export_with_integrity():
    """The same eight participants with the server's evidence and integrity flags: p5's browser said it
    was automated (the study counts flagged participants as excluded), p6 claimed a 30 s reading time the
    server measured as 0.4 s, p7 answered every 0.2 s; the others took 3 s per answer."""
    frame = _export_with_flags()
    pid = frame["participant"]
    frame["server_instructions_ms"] = np.where(pid == "p6", 400.0, np.where(pid == "p2", 5200.0, 30500.0))
    position = frame.groupby("participant").cumcount()
    frame["server_interval_ms"] = np.where(position == 0, np.nan, np.where(pid == "p7", 200.0, 3000.0))
    frame["flag_webdriver"] = pid == "p5"
    frame["flag_focus_loss"] = False
    frame["flag_fullscreen_exit"] = None
    frame["flag_client_time"] = pid == "p6"
    frame["flagged"] = frame["flag_webdriver"] | frame["flag_client_time"]
    frame["excl_flagged"] = frame["flagged"]
    frame["excl_answer_interval"] = pid == "p7"
    frame["excl_instructions_time"] = pid.isin(["p2", "p6"])
    frame["excluded"] = frame[[c for c in frame.columns if c.startswith("excl_")]].fillna(False).any(axis=1)
    return frame


def test_integrity_flags_are_honoured_and_counted_per_flag(tmp_path):
    path = tmp_path / "export.csv"
    _export_with_integrity().to_csv(path, index=False)
    data = read_responses(path)
    assert str(data["flag_webdriver"].dtype) == "boolean" and data["flag_fullscreen_exit"].isna().all()

    study = exclude(data)
    assert set(study.excluded.participant) == {"p0", "p1", "p2", "p5", "p6", "p7"}
    assert study.counts["flagged: browser driven by automation (navigator.webdriver)"] == 1
    assert study.counts["flagged: browser's reading time longer than the server measured"] == 1
    assert any(n.startswith("flagged participants (automation or inattention): 2") for n in study.notes)

    # The analysis's own rules judge the server's times and drop the flagged unless told to keep them.
    own = exclude(data, "own")
    reasons = dict(zip(own.excluded.participant, own.excluded.reasons))
    assert "instructions read in < 15 s" in reasons["p6"]  # by the server's 0.4 s, not the claimed 30 s
    assert "of answers within 1500 ms" in reasons["p7"]
    assert "flagged" in reasons["p5"]
    kept = exclude(data, options={"exclude_flagged": False, "min_catch_accuracy": 0.5})
    assert "p5" not in set(kept.excluded.participant) and "p6" in set(kept.excluded.participant)
