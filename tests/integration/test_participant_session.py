"""One participant through a whole session in headless Chromium, against gunicorn on PostgreSQL, with
the demo's stimuli made by a real Celery worker through Redis; then the export and the analysis."""
import subprocess
import sys

import pytest

from .participant import answer_current_trial
from .stack import ROOT

pytestmark = [pytest.mark.postgres, pytest.mark.redis, pytest.mark.browser, pytest.mark.slow]

# Other tests share the stack's database: count only the demo study's rows.
DEMO_PARTICIPANTS = "SELECT {} FROM studyapp_participant p JOIN studyapp_study s ON p.study_id = s.id WHERE s.slug = 'demo'"
DEMO_RESPONSES = ("SELECT {} FROM studyapp_response r JOIN studyapp_participant p ON r.participant_id = p.id "
                  "JOIN studyapp_study s ON p.study_id = s.id WHERE s.slug = 'demo'")


def test_a_participant_walks_the_whole_study_and_the_analyst_gets_the_data(stack, browser, shots, tmp_path):
    assert "Demo study 'demo' is live with 3 conditions over 18 units." in stack.demo_output
    assert stack.sql("SELECT status FROM studyapp_stimulusjob")[0][0] == "succeeded"
    assert "succeeded" in stack.log("worker")  # the job ran in the worker process, not in `manage.py demo`

    page = browser.new_page(viewport={"width": 1280, "height": 860})
    sent = []
    page.on("request", lambda r: sent.append((r.method, r.url)) if "/api/p/" in r.url else None)
    # Every Content-Security-Policy violation, as the browser reports it to the page and on its console.
    violations = []
    page.on("console", lambda m: violations.append(m.text) if "Content Security Policy" in m.text else None)
    page.expose_function("reportViolation", lambda text: violations.append(text))
    page.add_init_script("document.addEventListener('securitypolicyviolation', e => "
                         "window.reportViolation(e.violatedDirective + ' ' + e.blockedURI));")
    landing = page.goto(f"{stack.base_url}/s/demo/?PROLIFIC_PID=it-participant-1&STUDY_ID=demo&SESSION_ID=s1")
    assert "script-src 'self'" in landing.headers["content-security-policy"]
    page.screenshot(path=shots / "01-landing.png")
    assert stack.sql(DEMO_PARTICIPANTS.format("count(*)"))[0][0] == 0  # the link alone starts nothing
    with page.expect_response(lambda r: "/p/" in r.url and "/api/" not in r.url) as experiment:
        page.click("#start")
    assert "default-src 'none'" in experiment.value.headers["content-security-policy"]

    page.locator("#study-consent").wait_for()
    page.screenshot(path=shots / "02-consent.png")
    page.click("#consent-agree")
    page.locator("#study-instructions").wait_for()
    page.screenshot(path=shots / "03-instructions.png")
    page.click("#instructions-continue")
    fullscreen = page.locator("#jspsych-fullscreen-btn")
    fullscreen.wait_for()
    page.screenshot(path=shots / "04-fullscreen.png")
    fullscreen.click()

    # Practice: one miss, so a second practice block follows, then all correct.
    answer_current_trial(page, stack, choose_correctly=False)
    page.locator("#study-feedback[data-correct='false']").wait_for()
    page.screenshot(path=shots / "05-practice-feedback.png")
    for _ in range(4):
        answer_current_trial(page, stack)
    page.locator("#study-notice[data-notice='practice-repeat']").wait_for()
    page.click("#notice-continue")
    page.locator("#r2afc[data-state='ready']").wait_for()
    page.screenshot(path=shots / "06-practice-trial.png")
    for _ in range(5):
        answer_current_trial(page, stack)
    page.locator("#study-notice[data-notice='practice-done']").wait_for()
    page.click("#notice-continue")

    # Main trials, with a reload half-way: the page resumes at the first unanswered trial.
    for i in range(18):
        if i == 9:
            page.reload()
            page.locator("#r2afc, #jspsych-fullscreen-btn").first.wait_for()
            if page.locator("#jspsych-fullscreen-btn").count():
                page.click("#jspsych-fullscreen-btn")
        if i == 3:
            page.locator("#r2afc[data-state='ready']").wait_for()
            page.screenshot(path=shots / "07-main-trial.png")
        answer_current_trial(page, stack)

    page.locator("#study-questionnaire").wait_for()
    page.screenshot(path=shots / "08-questionnaire.png")
    page.fill("#q-strategy", "looked at the stroke shapes")
    page.click("#jspsych-survey-html-form-next")
    page.locator("#study-done").wait_for()
    page.screenshot(path=shots / "09-done.png")
    assert page.locator("#completion-code").inner_text().strip() == "DEMO-DONE"
    # The whole study played under the participant pages' policy without a single violation.
    assert violations == [], sorted({v[:160] for v in violations})

    status, answered, total, attempts = stack.sql(
        DEMO_PARTICIPANTS.format("p.status, p.answered, p.trial_count, p.practice_attempts"))[0]
    assert (status, answered, total, attempts) == ("completed", 28, 28, 2)
    assert stack.sql(DEMO_RESPONSES.format("count(*)"))[0][0] == 28

    # Coming back with the same Prolific id after finishing is refused, kindly.
    again = browser.new_page()
    again.goto(f"{stack.base_url}/s/demo/?PROLIFIC_PID=it-participant-1&STUDY_ID=demo&SESSION_ID=s2")
    again.click("#start")
    assert "already taken part" in again.content()

    export = tmp_path / "demo.csv"
    stack.manage("export_responses", "demo", "--format", "csv", "--out", str(export))
    # The test clicks through the instructions at once; the default 15 s reading rule would exclude it.
    report = subprocess.run([sys.executable, "-m", "analysis", "report", str(export), "--out", str(tmp_path / "report"),
                             "--min-instructions-s", "0"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert report.returncode == 0, report.stdout + report.stderr
    condition = stack.sql("SELECT c.name FROM studyapp_participant p JOIN studyapp_condition c ON p.condition_id = c.id "
                          "JOIN studyapp_study s ON p.study_id = s.id WHERE s.slug = 'demo'")[0][0]
    assert condition in report.stdout and "Excluded participants: 0" in report.stdout
    assert (tmp_path / "report" / "report.html").exists()
    assert stack.sql(DEMO_RESPONSES.format("count(*)") + " AND NOT r.correct")[0][0] == 1
    lines = export.read_text().splitlines()
    assert len(lines) == 29 and lines[0].startswith("study,study_version,participant,condition")
