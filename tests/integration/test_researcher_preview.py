"""A researcher previews an attribution-overlay condition from the admin in Chromium, and a participant
page whose security token expired recovers by a reload without losing or doubling the answer."""

import pytest

from .participant import admin_password, answer_key, shown_references

pytestmark = [pytest.mark.postgres, pytest.mark.redis, pytest.mark.browser, pytest.mark.slow]

CREATE_STUDY = """
from studyapp.models import Condition, Study
job = Study.objects.get(slug="demo").conditions.first().job
study = Study.objects.create(slug="overlay-preview", title="Overlay preview", n_practice=2, n_main=9)
condition = Condition(study=study, name="nmf-overlay", job=job, layer="conv2", basis="nmf", reference_type="overlay")
condition.full_clean()
condition.save()
print(study.pk, condition.pk)
"""


def test_a_researcher_previews_an_overlay_condition_and_an_expired_token_recovers_by_reload(stack, browser, shots):
    study_id, condition_id = map(int, stack.manage("shell", "-c", CREATE_STUDY).stdout.splitlines()[-1].split())
    overlays = {row[0].rsplit("/", 1)[-1] for row in stack.sql(
        "SELECT e.image FROM studyapp_exemplar e JOIN studyapp_unit u ON e.unit_id = u.id "
        "WHERE u.basis = 'nmf' AND e.role = 'overlay_max'")}
    assert len(overlays) == 6 * 9

    context = browser.new_context(viewport={"width": 1280, "height": 860})
    page = context.new_page()
    page.goto(f"{stack.base_url}/admin/login/?next=/admin/studyapp/study/{study_id}/preview/")
    page.fill("#id_username", "admin")
    page.fill("#id_password", admin_password(stack))
    page.click("input[type=submit]")
    page.locator("#preview-form").wait_for()
    assert stack.sql("SELECT count(*) FROM studyapp_participant WHERE study_id = %s", (study_id,))[0][0] == 0
    page.select_option("#id_condition", str(condition_id))
    page.click("#preview-form input[type=submit]")

    page.click("#consent-agree")
    page.click("#instructions-continue")
    page.click("#jspsych-fullscreen-btn")
    page.locator("#r2afc[data-state='ready']").wait_for(timeout=20_000)
    page.screenshot(path=shots / "10-overlay-preview-trial.png")
    shown = shown_references(page)
    assert len(shown) == 9 and set(shown) <= overlays  # the maximal references are the heat maps
    (participant_id, is_preview), = stack.sql(
        "SELECT id, is_preview FROM studyapp_participant WHERE study_id = %s", (study_id,))
    assert is_preview

    # The CSRF cookie is gone (expired, or cleared by the browser): the answer is refused with a
    # sentence and a button that reloads, and the reloaded page sends the kept answer once.
    context.clear_cookies(name="csrftoken")
    trial_id = int(page.locator("#r2afc").get_attribute("data-trial-id"))
    page.locator(f".r2afc-btn[data-choice='{answer_key(stack, trial_id)}'][data-confidence='3']").click()
    error = page.locator("#study-error")
    error.wait_for(timeout=20_000)
    assert "security token" in error.inner_text()
    assert page.locator("#study-retry").inner_text() == "Reload the page"
    assert stack.sql("SELECT count(*) FROM studyapp_response r JOIN studyapp_trial t ON r.trial_id = t.id "
                     "WHERE t.participant_id = %s", (participant_id,))[0][0] == 0
    page.click("#study-retry")
    page.locator("#r2afc[data-state='ready'], #jspsych-fullscreen-btn, #study-feedback").first.wait_for(timeout=20_000)

    def stored():
        return stack.sql("SELECT t.id FROM studyapp_response r JOIN studyapp_trial t ON r.trial_id = t.id "
                         "WHERE t.participant_id = %s", (participant_id,))

    for _ in range(100):
        if stored():
            break
        page.wait_for_timeout(100)
    assert stored() == [(trial_id,)]
    context.close()
