"""Both kinds of background job, a stimulus job and a Sobol region analysis, live one lifecycle: the same
columns, the same runner (claim, cancel, busy worker, failure) and the same admin columns and actions.
The stimulus job's own path through it is in test_jobs.py."""
import re

import pytest
from django.utils import timezone

import stimuli.measures.regions
from studyapp import lifecycle, regions, tasks
from studyapp.models import ImageSet, Job, Network, SobolAnalysis, StimulusJob

LIFECYCLE = {"status", "stage", "progress", "error", "attempts", "heartbeat", "created", "started", "finished"}


@pytest.fixture
def analysis(db):
    return SobolAnalysis.objects.create(network=Network.objects.create(name="demo"),
                                        image_set=ImageSet.objects.create(name="digits"), image_index=0)


@pytest.fixture
def stimulus_job(db):
    return StimulusJob.objects.create(network=Network.objects.create(name="demo2"),
                                      image_set=ImageSet.objects.create(name="digits2"), layer="conv2")


def test_both_jobs_carry_the_lifecycle_columns_of_one_abstract_model():
    for model in (StimulusJob, SobolAnalysis):
        assert issubclass(model, Job)
        assert {field.name for field in model._meta.fields} >= LIFECYCLE
        assert model.Status is Job.Status


def test_a_cancel_request_stops_an_analysis_at_its_next_progress_report(analysis, monkeypatch):
    def analyse_image(*args, progress, **kwargs):
        SobolAnalysis.objects.filter(pk=analysis.pk).update(status=Job.Status.CANCEL_REQUESTED)
        progress(0.5)
        raise AssertionError("the analysis should have been stopped")

    monkeypatch.setattr(stimuli.measures.regions, "analyse_image", analyse_image)
    assert regions.run_analysis(analysis.pk) is None
    analysis.refresh_from_db()
    assert analysis.status == Job.Status.CANCELLED and analysis.stage == "sobol" and analysis.progress == 50
    assert analysis.result is None and analysis.attempts == 1 and analysis.finished is not None


def test_an_analysis_held_by_a_live_worker_is_not_taken_over(analysis, monkeypatch):
    def analyse_image(*args, **kwargs):
        raise AssertionError("a second worker must not run it")

    monkeypatch.setattr(stimuli.measures.regions, "analyse_image", analyse_image)
    SobolAnalysis.objects.filter(pk=analysis.pk).update(status=Job.Status.RUNNING, heartbeat=timezone.now())
    with pytest.raises(lifecycle.JobBusy):
        regions.run_analysis(analysis.pk)


def test_a_failed_job_keeps_its_progress_and_records_the_error(analysis):
    def work(job, progress):
        progress("sobol", 0.25)
        raise RuntimeError("out of memory")

    with pytest.raises(RuntimeError):
        lifecycle.run(SobolAnalysis, analysis.pk, work)
    analysis.refresh_from_db()
    assert analysis.status == Job.Status.FAILED and analysis.progress == 25
    assert analysis.error.startswith("RuntimeError: out of memory")


@pytest.mark.parametrize("kind", ["stimulusjob", "sobolanalysis"])
def test_the_admin_relaunches_and_cancels_either_job_the_same_way(admin_client, analysis, stimulus_job, monkeypatch,
                                                                  kind):
    job = {"stimulusjob": stimulus_job, "sobolanalysis": analysis}[kind]
    launched = []
    monkeypatch.setattr(tasks, "launch", launched.append)
    type(job).objects.filter(pk=job.pk).update(status=Job.Status.FAILED, progress=40, error="boom")
    admin_client.post(f"/admin/studyapp/{kind}/", {"action": "launch", "_selected_action": [job.pk]})
    job.refresh_from_db()
    assert [j.pk for j in launched] == [job.pk]
    assert (job.status, job.progress, job.error) == (Job.Status.QUEUED, 0, "")
    admin_client.post(f"/admin/studyapp/{kind}/", {"action": "cancel", "_selected_action": [job.pk]})
    job.refresh_from_db()
    assert job.status == Job.Status.CANCEL_REQUESTED


def test_the_admin_lists_both_jobs_with_the_same_lifecycle_columns(admin_client, analysis, stimulus_job):
    def headers(kind):
        page = admin_client.get(f"/admin/studyapp/{kind}/").content.decode()
        return re.findall(r'<th scope="col"[^>]*class="[^"]*column-(\w+)', page)

    jobs, analyses = headers("stimulusjob"), headers("sobolanalysis")
    lifecycle_columns = ["status", "stage", "progress_percent", "attempts", "created", "finished"]
    assert jobs[:len(lifecycle_columns) + 1] == analyses[:len(lifecycle_columns) + 1] == ["__str__", *lifecycle_columns]
