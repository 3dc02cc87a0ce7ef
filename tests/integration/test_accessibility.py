"""axe-core (the npm package, built into tests/integration/vendor by frontend/build.mjs) on every screen
a participant of the demo study passes, in headless Chromium: no serious or critical violation, and each
screen has a main landmark and a level-one heading."""
import pytest

from .participant import READY_TRIAL, axe_violations, play_trials

pytestmark = [pytest.mark.postgres, pytest.mark.redis, pytest.mark.browser, pytest.mark.slow]

# The demo study's texts, condition and settings, with a plan short enough to reach the questionnaire.
CREATE_STUDY = """
from studyapp.models import Condition, Study
demo = Study.objects.get(slug="demo")
study = Study.objects.create(slug="a11y", title=demo.title, consent_text=demo.consent_text,
                             instructions_text=demo.instructions_text, debrief_text=demo.debrief_text,
                             n_practice=1, n_main=2, catch_ratio=0, practice_max_attempts=1,
                             min_instructions_seconds=0, response_lock_ms=300, completion_code="A11Y-DONE")
for c in demo.conditions.all()[:1]:
    Condition.objects.create(study=study, name=c.name, job=c.job, layer=c.layer, basis=c.basis,
                             reference_type=c.reference_type, paradigm=c.paradigm)
study.status = Study.Status.LIVE
study.save()
"""
# moderate in axe's scale, but what the participant pages promise
STRUCTURE_RULES = {"landmark-one-main", "page-has-heading-one"}


def test_every_participant_screen_passes_axe(stack, browser):
    stack.manage("shell", "-c", CREATE_STUDY)
    # bypass_csp lets axe-core in; the participant pages' own policy is checked in test_participant_session
    context = browser.new_context(viewport={"width": 1366, "height": 768}, bypass_csp=True)
    page = context.new_page()
    found = {}

    def check(screen):
        violations = axe_violations(page, impacts=("minor", "moderate", "serious", "critical"))
        found[screen] = [v for v in violations if v["impact"] in ("serious", "critical") or v["id"] in STRUCTURE_RULES]

    page.goto(f"{stack.base_url}/s/a11y/")
    check("landing")
    page.click("#start")
    page.locator("#study-consent").wait_for()
    check("consent")
    page.click("#consent-agree")
    page.locator("#study-instructions").wait_for()
    check("instructions")
    page.click("#instructions-continue")
    page.click("#jspsych-fullscreen-btn")
    page.locator(READY_TRIAL).wait_for(timeout=20_000)
    check("trial")
    # the six answer buttons are named after what they show, then the side they answer for
    names = page.locator(".study-answer").evaluate_all("bs => bs.map(b => b.textContent.replace(/\\s+/g, ' ').trim())")
    assert names == ["Very sure 1, image A", "Sure 2, image A", "Unsure 3, image A",
                     "Unsure 8, image B", "Sure 9, image B", "Very sure 0, image B"]
    assert len(play_trials(page, stack)) == 3
    check("questionnaire")
    page.click("#jspsych-survey-html-form-next")
    page.locator("#study-done").wait_for()
    check("done")
    context.close()
    assert found == {screen: [] for screen in ("landing", "consent", "instructions", "trial", "questionnaire", "done")}
