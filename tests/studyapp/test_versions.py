"""What answers mean is frozen: a study with answers keeps its conditions and trial plan, a change is a new
version, texts and recruitment stay editable with a change log, the export reports what participants saw,
and a stimulus job that has run keeps its parameters."""
import re
import uuid

import pandas as pd
import pytest
from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError

from studyapp import golive, versions
from studyapp.export import response_frame
from studyapp.models import Condition, Frozen, Participant, StimulusJob, Study, StudyChange
from tests.studyapp.admin_forms import study_form
from tests.studyapp.helpers import answer, api, arrive, correct_choice, make_job, make_study, through_instructions


def take_part(client, study, n_answers=4, pid=None):
    participant = arrive(client, study, pid=pid or str(uuid.uuid4()))
    through_instructions(client, participant)
    trials = api(client, participant, f"trials?limit={n_answers}")[1]["trials"]
    for trial in trials:
        status, _ = answer(client, participant, trial["id"], correct_choice(trial["id"]))
        assert status == 201
    return participant


@pytest.mark.django_db
def test_the_admin_form_saves_an_unchanged_study_and_logs_a_text_change_with_its_author(admin_client, client, study):
    take_part(client, study)
    response = admin_client.post(f"/admin/studyapp/study/{study.pk}/change/",
                                 study_form(study, consent_text="New consent", completion_code="DONE-2"))
    assert response.status_code == 302, response.content.decode()[:3000]
    study.refresh_from_db()
    assert study.consent_text == "New consent" and study.completion_code == "DONE-2"
    log = {c.field: c for c in StudyChange.objects.filter(study=study)}
    assert set(log) == {"consent_text", "completion_code"}
    assert log["completion_code"].old == "" and log["completion_code"].new == "DONE-2"
    assert log["consent_text"].new == "New consent" and log["consent_text"].author_name == "admin"
    assert log["consent_text"].author == get_user_model().objects.get(username="admin")
    page = admin_client.get(f"/admin/studyapp/study/{study.pk}/change/").content.decode()
    assert "DONE-2" in page and "completion_code" in page  # the change log, read-only on the study's page
    listing = admin_client.get(f"/admin/studyapp/studychange/?study__id__exact={study.pk}")
    assert listing.status_code == 200 and "DONE-2" in listing.content.decode()
    assert admin_client.get(f"/admin/studyapp/studychange/{log['consent_text'].pk}/delete/").status_code == 403


@pytest.mark.django_db
def test_the_admin_refuses_a_trial_plan_change_of_a_study_with_answers_and_offers_a_new_version(
        admin_client, client, study):
    take_part(client, study)
    response = admin_client.post(f"/admin/studyapp/study/{study.pk}/change/", study_form(study, n_main=20))
    page = response.content.decode()
    assert response.status_code == 200
    assert "has answers" in page and "n_main" in page and "New version" in page
    assert Study.objects.get(pk=study.pk).n_main == 9


@pytest.mark.django_db
def test_the_admin_refuses_a_condition_change_of_a_study_with_answers(admin_client, client, study):
    take_part(client, study)
    response = admin_client.post(f"/admin/studyapp/study/{study.pk}/change/",
                                 study_form(study, conditions={"pca": {"basis": "neuron"}}))
    page = response.content.decode()
    assert response.status_code == 200 and "basis" in page and "New version" in page
    assert study.conditions.get(name="pca").basis == "pca"


@pytest.mark.django_db
def test_every_other_path_is_refused_too(client, study):
    take_part(client, study)
    condition = study.conditions.get(name="pca")
    condition.basis = "neuron"
    with pytest.raises(Frozen, match=r"changing the basis of the condition \"pca\" is refused"):
        condition.save()
    with pytest.raises(ValidationError, match="New version"):
        condition.full_clean()
    study.refresh_from_db()
    study.n_main, study.confidence = 20, False
    with pytest.raises(Frozen, match="n_main, confidence define what they mean"):
        study.save()
    with pytest.raises(Frozen, match="adding the condition"):
        Condition.objects.create(study=study, name="more", job=condition.job, layer="conv2", basis="neuron")
    with pytest.raises(Frozen, match="removing the condition"):
        study.conditions.get(name="neuron").delete()
    assert StudyChange.objects.filter(study=study).count() == 0


@pytest.mark.django_db
def test_a_preview_does_not_freeze_the_study(client, study):
    from studyapp import participation

    participant = participation.start_preview(study, study.conditions.first())
    assert participant.is_preview and not study.has_answers()
    study.n_main = 12
    study.save()


@pytest.mark.django_db
def test_a_new_version_takes_the_edit_and_the_old_answers_stay_with_their_version(client, study):
    started = take_part(client, study, n_answers=3)
    v2 = versions.new_version(study)
    assert (v2.version, v2.previous_version, v2.slug, v2.status) == (2, study, f"{study.slug}-v2", Study.Status.DRAFT)
    assert [(c.name, c.basis, c.layer, c.job_id) for c in v2.conditions.all()] == \
        [(c.name, c.basis, c.layer, c.job_id) for c in study.conditions.all()]
    assert not v2.participants.exists()
    # The new version has no answers: its plan and conditions change freely.
    v2.n_main = 18
    v2.save()
    condition = v2.conditions.get(name="pca")
    condition.reference_type = "max_only"
    condition.save()
    with pytest.raises(versions.VersionError, match="already has a newer version"):
        versions.new_version(study)

    closed = golive.set_live(v2)
    assert closed == [study] and Study.objects.get(pk=study.pk).status == Study.Status.CLOSED
    # A participant who started on version 1 finishes there.
    status, batch = api(client, started, "trials?limit=1")
    assert status == 200
    trial = batch["trials"][0]
    assert answer(client, started, trial["id"], correct_choice(trial["id"]))[0] == 201
    newcomer = take_part(client, v2, n_answers=2)
    assert Participant.objects.get(pk=started.pk).study_id == study.pk and newcomer.study_id == v2.pk
    old, new = response_frame(study), response_frame(v2)
    assert len(old) == 4 and set(old["study_version"]) == {1} and set(old["study"]) == {study.slug}
    assert len(new) == 2 and set(new["study_version"]) == {2} and set(new["study"]) == {v2.slug}
    assert StudyChange.objects.filter(study=v2, field="new version").exists()


@pytest.mark.django_db
def test_the_export_reports_what_participants_saw_after_the_study_is_edited_behind_the_guard(client):
    job = make_job(bases=("neuron", "pca"))
    study = make_study(job)
    for _ in range(2):
        take_part(client, study)
    before = response_frame(study)
    assert set(before["basis"]) == {"neuron", "pca"}
    # An old database, or a write past the models' save: every field that says what an answer meant changes.
    other = make_job(bases=("neuron", "pca", "nmf"), layer="fc1")
    Condition.objects.filter(study=study).update(basis="nmf", layer="fc1", job=other, reference_type="max_only",
                                                 paradigm="ordered_strip")
    Condition.objects.filter(study=study, name="pca").update(name="renamed")
    Study.objects.filter(pk=study.pk).update(n_main=30, catch_ratio=0.5)
    study.refresh_from_db()
    after = response_frame(study)
    pd.testing.assert_frame_equal(before, after)
    # Each row's basis and layer are those of the unit it showed.
    assert (after["unit"] == after["layer"] + ":" + after["basis"] + ":" + after["unit"].str.split(":").str[2]).all()
    assert set(after["job"]) == {job.pk} and set(after["reference_type"]) == {"natural"}


@pytest.mark.django_db
def test_duplicate_copies_conditions_texts_and_settings_as_a_draft_without_participants(admin_client, client, study):
    take_part(client, study)
    study.consent_text = "Our consent"
    study.save()
    response = admin_client.post("/admin/studyapp/study/", {"action": "duplicate", "_selected_action": [study.pk]})
    copy = Study.objects.get(slug=f"{study.slug}-copy")
    assert response.status_code == 302 and response["Location"].endswith(f"/admin/studyapp/study/{copy.pk}/change/")
    assert (copy.status, copy.version, copy.previous_version, copy.consent_text, copy.n_main) == \
        (Study.Status.DRAFT, 1, None, "Our consent", study.n_main)
    assert sorted(copy.conditions.values_list("name", "basis")) == sorted(study.conditions.values_list("name", "basis"))
    assert not copy.participants.exists()
    assert versions.duplicate(study).slug == f"{study.slug}-copy-2"


@pytest.mark.django_db
def test_the_new_version_action_opens_the_new_draft(admin_client, client, study):
    take_part(client, study)
    response = admin_client.post("/admin/studyapp/study/", {"action": "new_version", "_selected_action": [study.pk]})
    v2 = Study.objects.get(previous_version=study)
    assert response.status_code == 302 and response["Location"].endswith(f"/{v2.pk}/change/") and v2.version == 2


@pytest.mark.django_db
def test_a_stimulus_job_that_has_run_keeps_its_parameters(admin_client, job):
    job.layer, job.n_units = "fc1", 9
    with pytest.raises(Frozen, match="layer, n_units cannot change"):
        job.save()
    with pytest.raises(ValidationError, match="Relaunch as new job"):
        job.full_clean()
    job.refresh_from_db()
    job.summary = {"note": "results may still be written"}
    job.save()
    page = admin_client.get(f"/admin/studyapp/stimulusjob/{job.pk}/change/").content.decode()
    assert 'name="layer"' not in page and 'name="n_units"' not in page
    # A job no worker has taken up yet is still a draft of a run.
    queued = StimulusJob.objects.create(network=job.network, image_set=job.image_set, layer="conv1")
    queued.layer = "conv2"
    queued.save()
    assert 'name="layer"' in admin_client.get(f"/admin/studyapp/stimulusjob/{queued.pk}/change/").content.decode()


@pytest.mark.django_db
def test_relaunch_as_new_job_opens_a_new_job_with_the_old_settings(admin_client, job):
    job.parameters = {"mis_layer": "relu3"}
    StimulusJob.objects.filter(pk=job.pk).update(parameters=job.parameters, seed=7)
    response = admin_client.post("/admin/studyapp/stimulusjob/",
                                 {"action": "relaunch_as_new_job", "_selected_action": [job.pk]})
    assert response.status_code == 302 and response["Location"].endswith(f"/add/?from_job={job.pk}")
    page = admin_client.get(response["Location"]).content.decode()
    # The layer is a choice of the network's layers, the old job's one selected.
    assert re.search(r'<option value="conv2"[^>]*selected', page)
    assert 'name="seed" value="7"' in page and "relu3" in page


@pytest.mark.django_db
def test_the_change_page_of_a_study_with_answers_offers_the_next_version(admin_client, client, study):
    assert "are frozen" not in admin_client.get(f"/admin/studyapp/study/{study.pk}/change/").content.decode()
    take_part(client, study)
    page = admin_client.get(f"/admin/studyapp/study/{study.pk}/change/").content.decode()
    assert "its trial plan and conditions are frozen" in page and "Make version 2 to change them" in page
    url = f"/admin/studyapp/study/{study.pk}/new-version/"
    assert admin_client.get(url).status_code == 302 and not Study.objects.filter(previous_version=study).exists()
    response = admin_client.post(url)
    v2 = Study.objects.get(previous_version=study)
    assert response.status_code == 302 and response["Location"].endswith(f"/{v2.pk}/change/")
    assert "are frozen" not in admin_client.get(response["Location"]).content.decode()


@pytest.mark.django_db
def test_the_admin_refuses_to_remove_a_condition_of_a_study_with_answers(admin_client, client, study):
    take_part(client, study)
    response = admin_client.post(f"/admin/studyapp/study/{study.pk}/change/",
                                 study_form(study, conditions={"pca": {"DELETE": "on"}}))
    page = response.content.decode()
    assert response.status_code == 200 and "removing pca is refused" in page and "Make version 2" in page
    assert study.conditions.filter(name="pca").exists()


@pytest.mark.django_db
def test_a_person_who_took_one_version_cannot_take_the_next_and_resumes_the_one_they_started(client, study):
    done = take_part(client, study, pid="finished-v1")
    Participant.objects.filter(pk=done.pk).update(status=Participant.Status.COMPLETED)
    take_part(client, study, pid="started-v1")
    v2 = versions.new_version(study)
    golive.set_live(v2)
    # A new Prolific session for version 2, by the people of version 1.
    for pid, page in (("finished-v1", "already taken part"), ("started-v1", "another session")):
        response = client.post(f"/s/{v2.slug}/start", {"PROLIFIC_PID": pid, "STUDY_ID": "s2", "SESSION_ID": "new"})
        assert response.status_code == 403 and page in response.content.decode()
    assert not v2.participants.exists()
    assert take_part(client, v2, n_answers=1, pid="newcomer").study_id == v2.pk
