"""Go-live checks: each reason a study cannot run is refused with its own message, all of them at once, on
every path that sets a study live (the admin's action and form, the demo command, `golive.set_live`)."""
import pytest
from django.core.management import CommandError

from studyapp import demo, golive
from studyapp.models import Condition, Exemplar, StimulusJob, Study
from tests.studyapp.admin_forms import study_form
from tests.studyapp.helpers import make_job, make_study


def draft(job=None, **fields):
    return make_study(job or make_job(), status=Study.Status.DRAFT, **fields)


def refusal(study):
    with pytest.raises(golive.GoLiveRefused) as caught:
        golive.set_live(study)
    assert Study.objects.get(pk=study.pk).status == Study.Status.DRAFT
    return caught.value.problems


@pytest.mark.django_db
def test_a_study_that_can_run_goes_live():
    study = draft(recruitment=Study.Recruitment.PROLIFIC, completion_code="C0DE",
                  completion_url="https://app.prolific.com/submissions/complete?cc={code}")
    assert golive.problems(study) == []
    golive.set_live(study)
    assert Study.objects.get(pk=study.pk).status == Study.Status.LIVE


@pytest.mark.django_db
def test_no_conditions():
    study = draft()
    study.conditions.all().delete()
    assert refusal(study) == ["The study has no conditions: a participant would have nothing to do."]


@pytest.mark.django_db
def test_n_main_zero():
    assert refusal(draft(n_main=0)) == ["N main is 0: a participant would have no trials."]


@pytest.mark.django_db
def test_a_quota_of_zero():
    assert refusal(draft(participants_per_condition=0)) == [
        "The quota (participants per condition) is 0: the first participant would find the study full."]


@pytest.mark.django_db
@pytest.mark.parametrize("platform, label", [("prolific", "Prolific"), ("mturk", "Amazon Mechanical Turk")])
def test_a_platform_study_without_a_completion_code_or_url(platform, label):
    assert refusal(draft(recruitment=platform)) == [
        f"A {label} study needs a completion code or a completion URL: without either, {label} cannot tell who "
        f"finished."]


@pytest.mark.django_db
def test_a_completion_url_that_is_not_a_url():
    problems = refusal(draft(recruitment="prolific", completion_code="X", completion_url="not a url {codez}"))
    assert problems == [
        "The completion URL has {codez}, which nothing fills in; it may use {code}, {STUDY_ID}, {SESSION_ID}.",
        "The completion URL 'not a url {codez}' is not a web address: it must be a full URL starting with https://.",
    ]


@pytest.mark.django_db
def test_code_in_the_url_with_no_code():
    problems = refusal(draft(recruitment="prolific",
                             completion_url="https://app.prolific.com/submissions/complete?cc={code}"))
    assert problems == ["The completion URL has {code}, but the completion code is empty: participants would be "
                        "sent on without one."]


@pytest.mark.django_db
def test_mturk_s_submit_url_with_its_placeholders_passes():
    study = draft(recruitment="mturk", completion_code="X",
                  completion_url="{turkSubmitTo}/mturk/externalSubmit?assignmentId={assignmentId}&code={code}")
    assert golive.problems(study) == []


@pytest.mark.django_db
def test_synthetic_references_without_feature_visualizations_name_the_units_by_key():
    study = draft(make_job(bases=("pca",), n_units=2))
    Condition.objects.filter(study=study).update(reference_type="synthetic")
    assert refusal(study) == ['Condition "pca": units conv2:pca:0, conv2:pca:1 each has no feature visualizations: '
                              'run its stimulus job with feature_vis.']


@pytest.mark.django_db
def test_an_ordered_strip_condition_without_strips():
    study = draft(make_job(bases=("nmf",), n_units=1, n_strips=0))
    Condition.objects.filter(study=study).update(paradigm="ordered_strip")
    assert refusal(study) == ['Condition "nmf": unit conv2:nmf:0 has no ordered strip of at least 3 images in its '
                              'artifact.']


@pytest.mark.django_db
def test_overlays_missing_for_one_unit():
    job = make_job(bases=("pca",), n_units=2)
    Exemplar.objects.filter(unit__job=job, unit__index=1, role=Exemplar.Role.OVERLAY_MAX).delete()
    study = draft(job)
    Condition.objects.filter(study=study).update(reference_type="overlay")
    assert refusal(study) == ['Condition "pca": unit conv2:pca:1 has no attribution overlay for each maximal '
                              'reference.']


@pytest.mark.django_db
def test_too_few_query_pairs_for_the_trial_plan():
    study = draft(make_job(bases=("pca",), n_units=2, n_queries=3), n_main=18)
    # 16 main trials (2 catch) over 2 units: 8 each, from 3 pairs.
    assert refusal(study) == ['Condition "pca": N main 18 gives each unit up to 8 main trials, but units '
                              'conv2:pca:0, conv2:pca:1 have fewer query pairs: participants would see one again. '
                              'Lower N main or run the job with more.']


@pytest.mark.django_db
def test_a_condition_whose_job_has_not_succeeded():
    job = make_job(bases=("pca",))
    study = draft(job)
    StimulusJob.objects.filter(pk=job.pk).update(status=StimulusJob.Status.FAILED)
    assert refusal(study) == [f'Condition "pca": its stimulus job {job} has not succeeded (it is failed).']


@pytest.mark.django_db
def test_a_condition_without_units_for_its_layer_and_basis():
    job = make_job(bases=("pca",))
    study = draft(job)
    Condition.objects.filter(study=study).update(basis="nmf")
    assert refusal(study) == [f"Condition \"pca\": stimulus job {job} has no units for layer 'conv2' and basis 'nmf'."]


@pytest.mark.django_db
def test_every_reason_is_listed_at_once():
    study = draft(make_job(bases=("pca",)), participants_per_condition=0, recruitment="prolific",
                  completion_url="https://x.org/?cc={code}")
    Condition.objects.filter(study=study).update(reference_type="mixed")
    problems = refusal(study)
    assert len(problems) == 3 and problems[0].startswith("The quota") and "{code}" in problems[1]
    assert "feature visualizations" in problems[2]


@pytest.mark.django_db
def test_the_admin_action_refuses_with_every_reason(admin_client):
    study = draft(n_main=0, participants_per_condition=0)
    response = admin_client.post("/admin/studyapp/study/", {"action": "go_live", "_selected_action": [study.pk]},
                                 follow=True)
    page = response.content.decode()
    assert "cannot go live" in page and "N main is 0" in page and "The quota (participants per condition) is 0" in page
    assert Study.objects.get(pk=study.pk).status == Study.Status.DRAFT


@pytest.mark.django_db
def test_the_admin_form_refuses_the_live_status(admin_client):
    study = draft(recruitment="prolific")
    response = admin_client.post(f"/admin/studyapp/study/{study.pk}/change/", study_form(study, status="live"))
    page = response.content.decode()
    assert response.status_code == 200 and "The study cannot be live" in page and "completion code" in page
    assert Study.objects.get(pk=study.pk).status == Study.Status.DRAFT
    response = admin_client.post(f"/admin/studyapp/study/{study.pk}/change/",
                                 study_form(study, status="live", completion_code="DONE"))
    assert response.status_code == 302 and Study.objects.get(pk=study.pk).status == Study.Status.LIVE


@pytest.mark.django_db
def test_the_demo_command_s_study_passes_the_same_checks():
    job = make_job(bases=demo.DEMO_BASES, layer=demo.DEMO_LAYER, n_units=3)
    assert demo.demo_study(job, slug="demo").status == Study.Status.LIVE
    lacking = make_job(bases=("neuron", "pca"), layer=demo.DEMO_LAYER)
    with pytest.raises(golive.GoLiveRefused, match="no units for layer 'conv2' and basis 'nmf'"):
        demo.demo_study(lacking, slug="demo-2")
    assert not Study.objects.filter(slug="demo-2").exists()


@pytest.mark.django_db
def test_the_demo_command_says_why_it_cannot_go_live(monkeypatch):
    from django.core.management import call_command

    lacking = make_job(bases=("neuron", "pca"), layer=demo.DEMO_LAYER)
    monkeypatch.setattr(demo, "demo_job", lambda: (lacking, False))
    monkeypatch.setattr("studyapp.management.commands.demo.wait_for_job", lambda job: None)
    with pytest.raises(CommandError, match="cannot go live:\n  Condition \"nmf-conv2\""):
        call_command("demo")
