"""A participant plays a `synthetic` condition (feature visualizations as references, natural queries)
to the end in headless Chromium, and the export says `synthetic`."""
import csv

import pytest

from .participant import answer_current_trial, shown_references

pytestmark = [pytest.mark.postgres, pytest.mark.redis, pytest.mark.browser, pytest.mark.slow]

# a small job with feature visualizations, run in the shell's process, then a study over it
CREATE_STUDY = """
from studyapp import jobs
from studyapp.models import Condition, StimulusJob, Study
demo = Study.objects.get(slug="demo").conditions.first().job
job = StimulusJob.objects.create(network=demo.network, image_set=demo.image_set, layer="conv2", bases="neuron",
                                 n_units=2, seed=0, parameters={"n_references": 3, "n_queries": 6,
                                 "completeness": False, "feature_vis": {"steps": 32}})
jobs.run_job(job.pk)
study = Study.objects.create(slug="synthetic-refs", title="Synthetic references", n_practice=2, n_main=6,
                             catch_ratio=0, status=Study.Status.LIVE)
condition = Condition(study=study, name="neuron-synthetic", job=job, layer="conv2", basis="neuron",
                      reference_type="synthetic")
condition.full_clean()
condition.save()
print(job.pk)
"""


def test_a_participant_plays_a_synthetic_condition_and_the_export_says_synthetic(stack, browser, shots, tmp_path):
    job_id = int(stack.manage("shell", "-c", CREATE_STUDY).stdout.splitlines()[-1])
    synthetic = {row[0].rsplit("/", 1)[-1] for row in stack.sql(
        "SELECT e.image FROM studyapp_exemplar e JOIN studyapp_unit u ON e.unit_id = u.id "
        "WHERE u.job_id = %s AND e.role = 'synthetic_max'", (job_id,))}
    assert len(synthetic) == 2 * 3

    page = browser.new_page(viewport={"width": 1280, "height": 860})
    page.goto(f"{stack.base_url}/s/synthetic-refs/?PROLIFIC_PID=it-synthetic-1&STUDY_ID=s&SESSION_ID=t")
    page.click("#start")
    page.click("#consent-agree")
    page.click("#instructions-continue")
    page.click("#jspsych-fullscreen-btn")
    page.locator("#r2afc[data-state='ready']").wait_for(timeout=20_000)
    page.screenshot(path=shots / "11-synthetic-trial.png")
    shown = shown_references(page)
    assert len(shown) == 3 and set(shown) <= synthetic
    answered = 0
    while True:
        page.locator("#r2afc[data-state='ready'], #study-notice, #study-questionnaire").first.wait_for(timeout=20_000)
        if page.locator("#study-questionnaire").count():
            break
        if page.locator("#study-notice").count():
            page.click("#notice-continue")
            page.locator("#study-notice").wait_for(state="detached")
            continue
        answer_current_trial(page, stack)
        answered += 1
    assert answered == 8
    page.fill("#q-strategy", "the stripes")
    page.click("#jspsych-survey-html-form-next")
    page.locator("#study-done").wait_for()

    export = tmp_path / "synthetic.csv"
    stack.manage("export_responses", "synthetic-refs", "--format", "csv", "--out", str(export))
    rows = list(csv.DictReader(export.open()))
    assert len(rows) == 8 and {r["reference_type"] for r in rows} == {"synthetic"}
