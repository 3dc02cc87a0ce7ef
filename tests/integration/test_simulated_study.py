"""A few hundred simulated participants through gunicorn on PostgreSQL (the demo's stimuli made by the
Celery worker), answering at planted accuracies per basis; then the export and the analysis must give
those accuracies back, and every double submit must have stored exactly one response."""
import json
import subprocess
import sys

import pytest

from .stack import ROOT, free_port

pytestmark = [pytest.mark.postgres, pytest.mark.redis, pytest.mark.slow]

SLUG = "simulated"
PLANTED = {"neuron": 0.65, "pca": 0.8, "nmf": 0.9}
N = 210


def _run_analysis(*args):
    result = subprocess.run([sys.executable, "-m", "analysis", *args], cwd=ROOT, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    return json.loads(result.stdout)


def _forget_participants(stack):
    """Leave the shared stack as the other integration tests expect it: no participants of ours."""
    ours = f"SELECT p.id FROM studyapp_participant p JOIN studyapp_study s ON p.study_id = s.id WHERE s.slug = '{SLUG}'"
    stack.sql(f"DELETE FROM studyapp_response WHERE participant_id IN ({ours})")
    stack.sql(f"DELETE FROM studyapp_trial WHERE participant_id IN ({ours})")
    stack.sql(f"DELETE FROM studyapp_participant WHERE id IN ({ours})")


def test_simulated_participants_give_back_the_planted_accuracies(stack, tmp_path):
    # A study of its own over the demo's stimuli (the command reuses the finished stimulus job).
    stack.manage("demo", "--slug", SLUG, "--base-url", stack.base_url)
    stack.sql("UPDATE studyapp_study SET participants_per_condition = 200 WHERE slug = %s", (SLUG,))
    # A web server of our own that trusts one proxy hop, so that each simulated participant counts
    # against the per-address rate limit under its own X-Forwarded-For address, as behind the proxy.
    port = free_port()
    stack.start_web(name="web-simulated", port=port, TRUSTED_PROXY_COUNT="1")
    base_url = f"http://127.0.0.1:{port}"
    try:
        summary_file = tmp_path / "simulation.json"
        run = stack.manage(
            "simulate_participants", SLUG, "--n", str(N), "--base-url", base_url, "--concurrency", "8",
            "--forwarded-for",
            "--accuracy", ",".join(f"{k}={v}" for k, v in PLANTED.items()), "--seed", "7", "--reload-rate", "0.15",
            "--double-submit-rate", "0.15", "--return-rate", "0.05", "--max-seconds", "150",
            "--json", str(summary_file), timeout=240)
        print(run.stdout)
        summary = json.loads(summary_file.read_text())
        people = summary["participants"]
        assert people["error"] == 0 and people["cut"] == 0 and summary["errors"] == 0, run.stdout
        assert people["completed"] >= 0.85 * N and people["refused"] == 0
        assert summary["oracle_misses"] == 0

        # Idempotency: every resend (same key after a reload, or a double submit) was answered 200 and
        # stored nothing; the database holds exactly the answers acknowledged with 201.
        assert summary["resends"] >= 0.1 * N and summary["resends_stored_again"] == 0
        stored = stack.sql("SELECT count(*), count(DISTINCT r.trial_id), count(DISTINCT r.idempotency_key) "
                           "FROM studyapp_response r JOIN studyapp_participant p ON r.participant_id = p.id "
                           "JOIN studyapp_study s ON p.study_id = s.id WHERE s.slug = %s", (SLUG,))[0]
        assert stored == (summary["answers_stored"],) * 3
        statuses = dict(stack.sql(
            "SELECT p.status, count(*) FROM studyapp_participant p JOIN studyapp_study s ON p.study_id = s.id "
            "WHERE s.slug = %s GROUP BY p.status", (SLUG,)))
        assert statuses.get("completed", 0) == people["completed"]
        assert statuses.get("returned", 0) == people["returned"]
        assert statuses.get("started", 0) == people["abandoned"]

        export = tmp_path / "simulated.csv"
        stack.manage("export_responses", SLUG, "--format", "csv", "--out", str(export))

        # Without exclusions the analysis counts exactly what the simulator answered, trial for trial.
        described = _run_analysis("describe", str(export), "--json", "--n-boot", "1000")
        by_condition = {row["condition"]: row for row in described["conditions"]}
        for key, tally in summary["accuracy"].items():
            kind, condition = key.split(":", 1)
            if kind == "main":
                assert by_condition[condition]["trials"] == tally["n"]
                assert round(by_condition[condition]["accuracy"] * tally["n"]) == tally["correct"]

        # The simulator is a script: it claims reading times (log-normal around 35 s) it never spends and
        # answers as fast as the server acknowledges, so the server's clock excludes every simulated
        # participant who finished under the study's own rules.
        verdicts = _run_analysis("report", str(export), "--json", "--no-model", "--n-boot", "50",
                                 "--exclusions", "study", "--out", str(tmp_path / "verdicts"))
        assert verdicts["exclusions"]["participants_kept"] <= people["started"] - people["completed"]
        # With the rules that judge answers rather than time (catch accuracy, one side), the planted
        # accuracy of each basis lies within its bootstrap CI; the allowance of half a CI width on
        # either side keeps the three-way check from failing one run in seven by chance.
        report = _run_analysis("report", str(export), "--json", "--no-model", "--n-boot", "1000",
                               "--min-instructions-s", "0", "--max-fast-answer-share", "1", "--keep-flagged",
                               "--out", str(tmp_path / "report"))
        rows = {row["condition"]: row for row in report["descriptives"]["conditions"]}
        assert len(rows) == 3
        for condition, row in rows.items():
            planted = PLANTED[condition.split("-")[0]]
            slack = (row["ci_high"] - row["ci_low"]) / 2
            assert row["ci_low"] - slack <= planted <= row["ci_high"] + slack, (condition, row)
            assert row["ci_high"] - row["ci_low"] < 0.12  # enough simulated data to mean something
        kept = report["exclusions"]["participants_kept"]
        assert 0.8 * people["completed"] <= kept <= people["started"] - people["returned"]
    finally:
        stack.stop_process("web-simulated")
        _forget_participants(stack)
