"""Automated and inattentive participants in a real browser, flagged in the live monitor and the export;
a normal participant is not.

Three participants of a short study in headless Chromium against gunicorn on PostgreSQL:

- a normal one: Chromium started with `--disable-blink-features=AutomationControlled`, which makes
  `navigator.webdriver` false as in a person's browser (Playwright's own flags make it true);
- one who leaves the study's tab during the trials: the same browser, with the page's focus
  emulation turned off (Chrome DevTools Protocol) so that bringing another tab to the front makes the
  study's window lose focus for real, as switching tabs does; jsPsych records the "blur";
- a Playwright session as it comes (`navigator.webdriver` true), answering like a person.
"""
import csv
import io
import json
import time

import pytest

from .participant import CHROMIUM, admin_password, answer_current_trial

pytestmark = [pytest.mark.postgres, pytest.mark.redis, pytest.mark.browser, pytest.mark.slow]

BASE_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking"]
PERSON_ARGS = [*BASE_ARGS, "--disable-blink-features=AutomationControlled"]
SLUG = "integrity"

CREATE_STUDY = """
from studyapp.models import Condition, Study
demo = Study.objects.get(slug="demo")
study, _ = Study.objects.update_or_create(slug="{slug}", defaults=dict(
    title="Integrity", status="live", n_practice=2, n_main=5, catch_ratio=0.2, practice_max_attempts=1,
    participants_per_condition=10, completion_code="INT-DONE", min_instructions_seconds=0))
for c in demo.conditions.all()[:1]:
    Condition.objects.get_or_create(study=study, name=c.name, defaults=dict(
        job=c.job, layer=c.layer, basis=c.basis, reference_type=c.reference_type, paradigm=c.paradigm))
print(study.pk)
"""


@pytest.fixture
def browsers():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        person = playwright.chromium.launch(executable_path=CHROMIUM, args=PERSON_ARGS, headless=True)
        automated = playwright.chromium.launch(executable_path=CHROMIUM, args=BASE_ARGS, headless=True)
        yield person, automated
        person.close()
        automated.close()


def create_study(stack, slug):
    return int(stack.manage("shell", "-c", CREATE_STUDY.format(slug=slug)).stdout.strip().splitlines()[-1])


def take_part(stack, browser, pid, leave_tab=0):
    context = browser.new_context(viewport={"width": 1280, "height": 860})
    page = context.new_page()
    page.goto(f"{stack.base_url}/s/{SLUG}/?PROLIFIC_PID={pid}&STUDY_ID={SLUG}&SESSION_ID=s-{pid}")
    page.click("#start")
    page.click("#consent-agree")
    page.locator("#study-instructions").wait_for()
    page.click("#instructions-continue")
    page.click("#jspsych-fullscreen-btn")
    elsewhere = None
    if leave_tab:
        context.new_cdp_session(page).send("Emulation.setFocusEmulationEnabled", {"enabled": False})
        elsewhere = context.new_page()
        page.bring_to_front()
    answered = 0
    while True:
        page.locator("#r2afc[data-state='ready'], #study-notice, #study-questionnaire").first.wait_for(timeout=30_000)
        if page.locator("#study-questionnaire").count():
            break
        if page.locator("#study-notice").count():
            page.click("#notice-continue")
            continue
        if answered < leave_tab:
            elsewhere.bring_to_front()  # the participant looks at another tab for a while
            page.wait_for_timeout(300)
            page.bring_to_front()
        answer_current_trial(page, stack)
        answered += 1
    page.click("#jspsych-survey-html-form-next")
    page.locator("#study-done").wait_for()
    webdriver = page.evaluate("navigator.webdriver")
    context.close()
    return webdriver


def test_tab_leavers_and_automated_sessions_are_flagged_in_the_monitor_and_the_export(stack, browsers):
    study_id = create_study(stack, SLUG)
    person, automated = browsers
    assert take_part(stack, person, "int-normal") is False
    assert take_part(stack, person, "int-leaver", leave_tab=4) is False
    assert take_part(stack, automated, "int-robot") is True

    # Participants in arrival order: normal, leaver, robot.
    ids = [row[0] for row in stack.sql(
        "SELECT p.id FROM studyapp_participant p JOIN studyapp_study s ON p.study_id = s.id "
        "WHERE s.slug = %s ORDER BY p.started_at", (SLUG,))]
    names = dict(zip(("normal", "leaver", "robot"), (f"P{pk:05d}" for pk in ids)))
    losses = stack.sql("SELECT p.id, coalesce(sum(r.focus_losses), 0), bool_or(r.webdriver) "
                       "FROM studyapp_participant p JOIN studyapp_response r ON r.participant_id = p.id "
                       "WHERE p.id = ANY(%s) GROUP BY p.id", (ids,))
    stored = {pk: (n, webdriver) for pk, n, webdriver in losses}
    assert stored[ids[0]] == (0, False) and stored[ids[1]][0] >= 3 and stored[ids[2]][1] is True

    # The export: flag_* beside excl_*, the same on every row of a participant.
    out = stack.workdir / "integrity.csv"
    stack.manage("export_responses", SLUG, "--format", "csv", "--out", str(out))
    rows = list(csv.DictReader(io.StringIO(out.read_text())))
    by = {name: [r for r in rows if r["participant"] == names[name]] for name in names}
    first = {name: found[0] for name, found in by.items()}
    assert first["normal"]["flagged"] == "False" and first["normal"]["excluded"] == "False"
    assert first["leaver"]["flag_focus_loss"] == "True" and first["leaver"]["flagged"] == "True"
    assert first["leaver"]["flag_webdriver"] == "False"
    assert first["robot"]["flag_webdriver"] == "True" and first["robot"]["flagged"] == "True"
    assert first["robot"]["excl_flagged"] == "True" and first["robot"]["excluded"] == "True"

    # The live monitor lists the two flagged participants, and not the normal one.
    page = person.new_page()
    page.goto(f"{stack.base_url}/admin/login/?next=/admin/studyapp/study/{study_id}/monitor/")
    page.fill("#id_username", "admin")
    page.fill("#id_password", admin_password(stack))
    page.click("input[type=submit]")
    table = page.locator("#monitor-participants")
    table.wait_for()
    listed = {row.get_attribute("data-participant"): json.loads(row.get_attribute("data-flagged"))
              for row in table.locator("tbody tr[data-participant]").all()}
    assert listed == {names["leaver"]: True, names["robot"]: True}


def test_the_front_end_waits_as_long_as_retry_after_says(stack, browsers):
    """A 503 with Retry-After: 3 on the consent: the page sends it again after 3 s, not after its own
    half-second back-off."""
    slug = "integrity-retry"
    create_study(stack, slug)
    person, _ = browsers
    page = person.new_page(viewport={"width": 1280, "height": 860})
    sent = []

    def consent(route):
        sent.append(time.monotonic())
        if len(sent) == 1:
            route.fulfill(status=503, headers={"Retry-After": "3", "Content-Type": "application/json"},
                          body=json.dumps({"error": "unavailable", "detail": "One moment."}))
        else:
            route.continue_()

    page.route("**/api/p/*/consent", consent)
    page.goto(f"{stack.base_url}/s/{slug}/?PROLIFIC_PID=int-retry&STUDY_ID={slug}&SESSION_ID=s1")
    page.click("#start")
    page.click("#consent-agree")
    page.locator("#study-instructions").wait_for(timeout=20_000)
    assert len(sent) == 2
    # The browser hears the 503 only after `consent` above has run, and its timer starts after that, so
    # the gap can only be shorter if the page did not wait; a loaded machine can only lengthen it.
    assert sent[1] - sent[0] >= 3.0
