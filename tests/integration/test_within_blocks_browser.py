"""A within-participant study walked in headless Chromium: two block types, each opened by its own
instruction screen, every trial of a block from its condition, to the completion code."""
import json

import pytest

from .participant import READY_TRIAL, answer_shown_trial

pytestmark = [pytest.mark.postgres, pytest.mark.redis, pytest.mark.browser, pytest.mark.slow]

N_MAIN = 3  # per condition, one block each

SETUP = """
import json
from studyapp.models import Condition, Study
demo = Study.objects.get(slug="demo").conditions.first()
study = Study.objects.create(
    slug="within-blocks", title="Within blocks", design="within", counterbalancing="none", n_practice=0,
    n_main=N_MAIN, catch_ratio=0, min_instructions_seconds=0, response_lock_ms=300, participants_per_condition=4,
    completion_code="DONE-WITHIN")
for name, reference_type, text in (("natural", "natural", "In this block the examples are **natural** images."),
                                   ("max-only", "max_only", "In this block you see only the **strongest** examples.")):
    condition = Condition(study=study, name=name, job=demo.job, layer=demo.layer, basis=demo.basis,
                          reference_type=reference_type, block_instructions=text)
    condition.full_clean()
    condition.save()
study.status = Study.Status.LIVE
study.save()
print(json.dumps({"study": study.pk}))
"""


@pytest.fixture(scope="module")
def setup(stack):
    script = SETUP.replace("N_MAIN", str(N_MAIN))
    return json.loads(stack.manage("shell", "-c", script, timeout=300).stdout.strip().splitlines()[-1])


def test_a_within_study_walks_two_block_types_with_their_instruction_screens(stack, browser, shots, setup):
    page = browser.new_page(viewport={"width": 1366, "height": 768})
    errors = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(f"{stack.base_url}/s/within-blocks/?PROLIFIC_PID=within-1&STUDY_ID=w&SESSION_ID=s1")
    page.click("#start")
    page.click("#consent-agree")
    page.click("#instructions-continue")
    page.click("#jspsych-fullscreen-btn")

    screens = []  # ("block", text) or ("trial", trial id), in the order the page showed them
    next_screen = f"{READY_TRIAL}, #study-block-instructions, #study-notice, #study-questionnaire"
    while True:
        page.locator(next_screen).first.wait_for(timeout=20_000)
        if page.locator("#study-questionnaire").count():
            break
        if page.locator("#study-notice").count():
            page.click("#notice-continue")
            page.locator("#study-notice").wait_for(state="detached")
            continue
        block = page.locator("#study-block-instructions")
        if block.count():
            screens.append(("block", block.inner_text().strip()))
            if len(screens) == 1:
                page.screenshot(path=shots / "within-block-instructions.png")
            page.click("#block-continue")
            block.wait_for(state="detached")
            continue
        trial_id = answer_shown_trial(page, stack)
        screens.append(("trial", trial_id))
        page.locator(f".study-trial[data-trial-id='{trial_id}']").wait_for(state="detached")

    assert [kind for kind, _ in screens] == ["block"] + ["trial"] * N_MAIN + ["block"] + ["trial"] * N_MAIN
    assert screens[0][1] == "In this block the examples are natural images."
    assert screens[N_MAIN + 1][1] == "In this block you see only the strongest examples."
    stored = dict(stack.sql(
        "SELECT t.id, c.name || ':' || t.block_index FROM studyapp_trial t "
        "JOIN studyapp_condition c ON t.condition_id = c.id WHERE t.id = ANY(%s)",
        ([value for kind, value in screens if kind == "trial"],)))
    shown = [stored[value] for kind, value in screens if kind == "trial"]
    assert shown == ["natural:0"] * N_MAIN + ["max-only:1"] * N_MAIN
    page.fill("#q-strategy", "compared the images")
    page.click("#jspsych-survey-html-form-next")
    page.locator("#study-done").wait_for()
    assert page.locator("#completion-code").inner_text().strip() == "DONE-WITHIN"
    assert errors == []
