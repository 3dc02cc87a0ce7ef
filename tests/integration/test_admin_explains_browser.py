"""The researcher's admin in Chromium at 1,366 px: a job's progress refreshes itself without reloading
the page, the job form offers the chosen network's layers, the units list shows its thumbnails without
horizontal scrolling, and the pages a researcher reads most (job, units, unit, study, participant) are
captured as screenshots."""
import pytest

from .participant import admin_password

pytestmark = [pytest.mark.postgres, pytest.mark.redis, pytest.mark.browser, pytest.mark.slow]

WIDTH = 1366

# A study of its own (the demo study's counts belong to other tests), on the demo job, recruited on
# Prolific; and a job row that no worker runs, whose progress the test moves by hand.
SET_UP = """
from studyapp.models import Condition, StimulusJob, Study
job = Study.objects.get(slug="demo").conditions.first().job
study, _ = Study.objects.get_or_create(slug="admin-tour", defaults=dict(
    title="Admin tour", n_practice=2, n_main=9, status="live", recruitment="prolific",
    completion_code="TOUR-DONE", participants_per_condition=5))
for basis in ("neuron", "pca"):
    Condition.objects.get_or_create(study=study, name=f"{basis}-conv2",
                                    defaults=dict(job=job, layer="conv2", basis=basis))
moving = StimulusJob.objects.create(network=job.network, image_set=job.image_set, layer="conv1", bases="neuron",
                                    status="running", stage="bases", progress=10.0)
print(job.pk, study.pk, moving.pk)
"""


def log_in(page, stack, next_url):
    page.goto(f"{stack.base_url}/admin/login/?next={next_url}")
    page.fill("#id_username", "admin")
    page.fill("#id_password", admin_password(stack))
    page.click("input[type=submit]")
    page.wait_for_load_state("load")


def no_horizontal_scroll(page):
    """Neither the window nor a list's own scrolling box has to be scrolled sideways."""
    return page.evaluate(f"document.documentElement.scrollWidth <= {WIDTH} && Array.from("
                         "document.querySelectorAll('#changelist .results')).every(r => r.scrollWidth <= r.clientWidth)")


def test_the_admin_explains_itself_at_1366_px(stack, browser, shots):
    job_id, study_id, moving_id = map(int, stack.manage("shell", "-c", SET_UP).stdout.splitlines()[-1].split())
    stack.manage("simulate_participants", "admin-tour", "--n", "2", "--base-url", stack.base_url, "--concurrency", "1",
                 "--reload-rate", "0", "--double-submit-rate", "0", "--return-rate", "0", "--reading-ms", "20000",
                 "--seed", "1", timeout=300)
    page = browser.new_page(viewport={"width": WIDTH, "height": 860})
    log_in(page, stack, "/admin/")

    # The progress of a running job refreshes on its page and in the list, the page never reloading.
    for url in (f"/admin/studyapp/stimulusjob/{moving_id}/change/", "/admin/studyapp/stimulusjob/"):
        stack.sql("UPDATE studyapp_stimulusjob SET status = 'running', stage = 'bases', progress = 10 WHERE id = %s",
                  (moving_id,))
        page.goto(stack.base_url + url)
        widget = page.locator(f".job-progress[data-pk='{moving_id}']")
        assert "bases 10 %" in widget.inner_text()
        page.evaluate("window.notReloaded = true")
        stack.sql("UPDATE studyapp_stimulusjob SET stage = 'render', progress = 60 WHERE id = %s", (moving_id,))
        page.wait_for_function(
            f"document.querySelector(\".job-progress[data-pk='{moving_id}'] .job-stage\").textContent"
            ".includes('render 60 %')", timeout=20_000)
        assert page.evaluate("window.notReloaded === true")
        name = "30-running-job-page.png" if url.endswith("change/") else "30-running-job-list.png"
        page.screenshot(path=shots / name, full_page=True)
        assert no_horizontal_scroll(page)
        stack.sql("UPDATE studyapp_stimulusjob SET status = 'succeeded', stage = 'import', progress = 100 "
                  "WHERE id = %s", (moving_id,))
        page.wait_for_function(
            f"document.querySelector(\".job-progress[data-pk='{moving_id}'] .job-stage\").textContent === 'done'",
            timeout=20_000)
        status = (f"tr:has(.job-progress[data-pk='{moving_id}']) td.field-status" if url.endswith("stimulusjob/")
                  else ".field-status .readonly")
        assert page.locator(status).inner_text().strip() == "Succeeded"
        assert page.evaluate("window.notReloaded === true")

    # The job form offers the layers of the network chosen.
    page.goto(f"{stack.base_url}/admin/studyapp/stimulusjob/add/")
    page.select_option("#id_network", label="demo")
    layers = page.locator("#id_layer optgroup:not([disabled]) option").evaluate_all("os => os.map(o => o.value)")
    assert layers[:3] == ["conv1", "relu1", "conv2"] and "fc2" in layers

    page.goto(f"{stack.base_url}/admin/studyapp/stimulusjob/{job_id}/change/")
    page.screenshot(path=shots / "31-job-page.png", full_page=True)

    # The units list: every column, thumbnails included, within 1,366 px.
    page.goto(f"{stack.base_url}/admin/studyapp/unit/?job__id__exact={job_id}")
    thumbs = page.locator("td.field-least_activating .thumb-grid").first
    thumbs.wait_for()
    # The thumbnails load lazily: those in view are all loaded before the picture is taken.
    page.wait_for_function("Array.from(document.querySelectorAll('.thumb-grid img'))"
                           ".filter(i => i.getBoundingClientRect().top < innerHeight)"
                           ".every(i => i.complete && i.naturalWidth > 0)", timeout=20_000)
    box = thumbs.bounding_box()
    assert box["x"] + box["width"] <= WIDTH and no_horizontal_scroll(page)
    page.screenshot(path=shots / "32-units-list.png")

    unit_id = stack.sql("SELECT id FROM studyapp_unit WHERE job_id = %s AND basis = 'nmf' ORDER BY index LIMIT 1",
                        (job_id,))[0][0]
    page.goto(f"{stack.base_url}/admin/studyapp/unit/{unit_id}/change/")
    assert page.locator("table.measures tr").count() > 5 and no_horizontal_scroll(page)
    page.screenshot(path=shots / "33-unit-page.png", full_page=True)

    page.goto(f"{stack.base_url}/admin/studyapp/study/{study_id}/change/")
    url = page.locator("#recruitment-url-1").inner_text()
    assert url == (f"{stack.base_url}/s/admin-tour/?PROLIFIC_PID={{{{%PROLIFIC_PID%}}}}"
                   "&STUDY_ID={{%STUDY_ID%}}&SESSION_ID={{%SESSION_ID%}}")
    page.context.grant_permissions(["clipboard-read", "clipboard-write"], origin=stack.base_url)
    page.click("button[data-copy='recruitment-url-1']")
    page.wait_for_function("document.querySelector(\"button[data-copy='recruitment-url-1']\").textContent "
                           "=== 'Copied'", timeout=10_000)
    assert page.evaluate("navigator.clipboard.readText()") == url
    assert page.locator("#id_catch_ratio").input_value() == "1/9"
    assert no_horizontal_scroll(page)
    # A new condition's layer and basis are those of the job it picks.
    new_row = page.locator("tr.dynamic-conditions:not(.has_original)").first
    job_select = new_row.locator("select[name$='-job']")
    job_select.select_option(str(job_id))
    layers = new_row.locator("select[name$='-layer'] optgroup:not([disabled]) option").all_inner_texts()
    bases = new_row.locator("select[name$='-basis'] optgroup:not([disabled]) option").all_inner_texts()
    assert layers == ["conv2"] and bases == ["neuron", "nmf", "pca"]
    page.screenshot(path=shots / "34-study-page.png", full_page=True)

    participant_id = stack.sql("SELECT id FROM studyapp_participant WHERE study_id = %s AND answered > 0 "
                               "ORDER BY id LIMIT 1", (study_id,))[0][0]
    page.goto(f"{stack.base_url}/admin/studyapp/participant/{participant_id}/change/")
    answers = page.locator("td.field-answer").all_inner_texts()
    assert answers and all(a.startswith("query ") for a in answers[:3])
    page.screenshot(path=shots / "35-participant-page.png", full_page=True)
