"""The participant API through Django's test client, on the default database. The tests that store
answers take `answer_path` (tests/studyapp/conftest.py) and run through each way of storing one."""
import uuid

import pytest

from studyapp.models import Participant, Response, Trial
from tests.studyapp.helpers import answer, api, arrive, correct_choice, make_study, through_instructions


@pytest.mark.django_db
def test_landing_page_starts_nothing_until_the_participant_clicks(client, study):
    response = client.get(f"/s/{study.slug}/?PROLIFIC_PID=abc&STUDY_ID=s&SESSION_ID=t")
    assert response.status_code == 200
    assert b'name="PROLIFIC_PID" value="abc"' in response.content
    assert Participant.objects.count() == 0


@pytest.mark.django_db
def test_whole_session_through_the_api(answer_path, client, study):
    participant = arrive(client, study, pid="p-1")
    assert participant.external_id_hash and "p-1" not in participant.external_id_hash
    status, session = api(client, participant, "session")
    assert session["phase"] == "consent" and session["progress"] == {"answered": 0, "total": 12}
    assert through_instructions(client, participant)["phase"] == "practice"

    answered = 0
    while True:
        status, batch = api(client, participant, "trials?limit=4")
        if not batch["trials"]:
            break
        for trial in batch["trials"]:
            status, result = answer(client, participant, trial["id"], correct_choice(trial["id"]))
            assert status == 201 and result["stored"]
            assert ("correct" in result) == (trial["block"] == "practice")
            answered += 1
    assert answered == 12 and batch["phase"] == "questionnaire"
    status, done = api(client, participant, "questionnaire", {"answers": {"strategy": "shapes"}})
    assert status == 200 and done["completion"]["code"] == study.completion_code
    participant.refresh_from_db()
    assert participant.status == Participant.Status.COMPLETED
    assert Response.objects.filter(participant=participant).count() == 12


@pytest.mark.django_db
def test_trial_payload_never_carries_the_answer(client, study):
    participant = arrive(client, study)
    through_instructions(client, participant)
    raw = client.get(f"/api/p/{participant.token}/trials?limit=50").content.decode()
    for word in ("correct", "catch", "qmax", "qmin", "kind", "unit"):
        assert word not in raw


@pytest.mark.django_db
def test_double_submit_stores_one_response_and_keeps_the_first_answer(answer_path, client, study):
    participant = arrive(client, study)
    through_instructions(client, participant)
    trial = api(client, participant, "trials?limit=1")[1]["trials"][0]
    key = str(uuid.uuid4())
    assert answer(client, participant, trial["id"], "a", key=key)[0] == 201
    assert answer(client, participant, trial["id"], "a", key=key)[0] == 200
    # A second tab answering the same trial differently does not overwrite it.
    assert answer(client, participant, trial["id"], "b")[0] == 200
    assert Response.objects.get(trial_id=trial["id"]).choice == "a"
    assert Response.objects.count() == 1


@pytest.mark.django_db
def test_reload_resumes_at_the_first_unanswered_trial(answer_path, client, study):
    participant = arrive(client, study)
    through_instructions(client, participant)
    first, second = api(client, participant, "trials?limit=2")[1]["trials"]
    answer(client, participant, first["id"], correct_choice(first["id"]))
    status, batch = api(client, participant, "trials?limit=2")
    assert batch["trials"][0]["id"] == second["id"]
    assert api(client, participant, "session")[1]["progress"]["answered"] == 1


@pytest.mark.django_db
def test_out_of_order_foreign_and_malformed_submissions_are_refused(answer_path, client, study):
    participant = arrive(client, study)
    other = arrive(client, study)
    through_instructions(client, participant)
    through_instructions(client, other)
    trials = api(client, participant, "trials?limit=2")[1]["trials"]
    status, body = answer(client, participant, trials[1]["id"])
    assert status == 409 and body["error"] == "out_of_order"
    foreign = api(client, other, "trials?limit=1")[1]["trials"][0]
    status, body = answer(client, participant, foreign["id"])
    assert status == 404 and body["error"] == "unknown_trial"
    for bad in ({"trial": "x"}, {"trial": trials[0]["id"], "idempotency_key": "short"},
                {"trial": trials[0]["id"], "idempotency_key": str(uuid.uuid4()), "choice": "c"}):
        status, body = api(client, participant, "responses", bad)
        assert status == 400 and body["detail"]
    response = client.post(f"/api/p/{participant.token}/responses", "{not json", content_type="application/json")
    assert response.status_code == 400 and "JSON" in response.json()["detail"]
    assert client.get("/api/p/no-such-token/session").status_code == 404
    assert Response.objects.count() == 0


@pytest.mark.django_db
def test_trials_before_consent_are_refused(answer_path, client, study):
    participant = arrive(client, study)
    trial = Trial.objects.filter(participant=participant).order_by("position").first()
    assert api(client, participant, "trials?limit=5")[1]["trials"] == []
    status, body = answer(client, participant, trial.pk)
    assert status == 409


@pytest.mark.django_db
def test_a_missed_practice_block_is_repeated_before_the_main_trials(answer_path, client, job):
    study = make_study(job, n_practice=3, practice_max_attempts=2, n_main=4)
    participant = arrive(client, study)
    through_instructions(client, participant)
    practice = api(client, participant, "trials?limit=3")[1]["trials"]
    wrong = {"a": "b", "b": "a"}
    results = [answer(client, participant, t["id"], wrong[correct_choice(t["id"])] if i == 0 else correct_choice(t["id"]))[1]
               for i, t in enumerate(practice)]
    assert results[0]["correct"] is False and results[-1]["practice_repeat"] is True
    status, batch = api(client, participant, "trials?limit=10")
    assert [t["block"] for t in batch["trials"]] == ["practice"] * 3 + ["main"] * 4
    assert {t["attempt"] for t in batch["trials"][:3]} == {2}
    # Missing again on the last allowed attempt moves on to the main trials.
    for t in batch["trials"][:3]:
        result = answer(client, participant, t["id"], wrong[correct_choice(t["id"])])[1]
    assert result["practice_repeat"] is False and result["phase"] == "main"
    positions = list(Trial.objects.filter(participant=participant).order_by("position").values_list("position", flat=True))
    assert positions == list(range(10))


@pytest.mark.django_db
def test_repeat_participation_is_refused_and_an_unfinished_one_resumes(client, study):
    first = arrive(client, study, pid="same-person")
    assert arrive(client, study, pid="same-person").pk == first.pk
    api(client, first, "consent", {"consent": False})
    response = client.post(f"/s/{study.slug}/start", {"PROLIFIC_PID": "same-person"})
    assert response.status_code == 403 and b"already taken part" in response.content


@pytest.mark.django_db
def test_conditions_fill_evenly_and_a_full_study_says_so(client, job):
    study = make_study(job, participants_per_condition=2)
    conditions = [arrive(client, study).condition.name for _ in range(4)]
    assert sorted(conditions) == ["neuron", "neuron", "pca", "pca"]
    response = client.post(f"/s/{study.slug}/start", {})
    assert response.status_code == 403 and b"full" in response.content


@pytest.mark.django_db
def test_a_study_that_is_not_live_takes_nobody(client, job):
    study = make_study(job, status="paused")
    assert client.get(f"/s/{study.slug}/").status_code == 403
    assert client.post(f"/s/{study.slug}/start", {}).status_code == 403


@pytest.mark.django_db
def test_a_participant_past_the_time_limit_is_timed_out_and_frees_the_slot(client, job):
    from datetime import timedelta

    from django.utils import timezone

    study = make_study(job, participants_per_condition=1, time_limit_minutes=30)
    participant = arrive(client, study)
    Participant.objects.filter(pk=participant.pk).update(started_at=timezone.now() - timedelta(minutes=31))
    status, body = api(client, participant, "consent", {"consent": True})
    assert status == 410 and body["error"] == "timed_out" and "time limit" in body["detail"]
    participant.refresh_from_db()
    assert participant.status == Participant.Status.TIMED_OUT
    arrive(client, study)
    arrive(client, study)  # both conditions take one more participant: the timed-out slot is free again
    assert Participant.objects.filter(status="started").count() == 2


@pytest.mark.django_db
def test_the_ordered_strip_paradigm_sends_two_rows_and_scores_the_ordered_one(answer_path, client, job):
    study = make_study(job)
    study.conditions.update(paradigm="ordered_strip")
    participant = arrive(client, study)
    through_instructions(client, participant)
    trials = api(client, participant, "trials?limit=50")[1]["trials"]
    assert len(trials) == 12
    for trial in trials:
        assert trial["paradigm"] == "ordered_strip" and "query_a" not in trial
        assert len(trial["strip_a"]) == len(trial["strip_b"]) >= 3
        assert sorted(trial["strip_a"]) == sorted(trial["strip_b"])
    first = trials[0]
    status, result = answer(client, participant, first["id"], correct_choice(first["id"]))
    assert status == 201 and result["correct"] is True


@pytest.mark.django_db
def test_openapi_schema_describes_every_participant_route(client):
    from studyapp.urls import participant_api

    schema = client.get("/api/openapi.json").json()
    assert schema["openapi"].startswith("3.")
    documented = {path.rsplit("/", 1)[-1] for path in schema["paths"]}
    assert documented == {str(p.pattern) for p in participant_api}


@pytest.mark.django_db
def test_a_database_outage_answers_503_with_retry_after(client, study, monkeypatch):
    from django.db import OperationalError

    participant = arrive(client, study)

    def unavailable(*args, **kwargs):
        raise OperationalError("connection to server at 127.0.0.1 failed")

    monkeypatch.setattr("studyapp.participation.give_consent", unavailable)
    status, body = api(client, participant, "consent", {"consent": True})
    assert status == 503 and body["error"] == "unavailable"
    response = client.post(f"/api/p/{participant.token}/consent", "{}", content_type="application/json")
    assert response.status_code == 400  # a parse error is still the client's, not the database's
