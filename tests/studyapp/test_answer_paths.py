"""Storing an answer has two implementations: one statement on PostgreSQL (the hot path) and the ORM in
several statements elsewhere (the embedded demo's SQLite). Both must refuse the same answers with the
same error, in the same order, and store the same rows; every test here runs through each (the
`answer_path` fixture), as do test_api.py's tests that store answers."""
import json
import threading
import uuid
from datetime import timedelta

import pytest
from django.db import connections
from django.utils import timezone

from studyapp import participation
from studyapp.models import Participant, Response, Trial
from tests.studyapp.helpers import api, arrive, correct_choice, make_study, through_instructions

PATHS = ["one_statement", "orm"]  # the params of the answer_path fixture (conftest.py)


def answer(client, participant, trial_id, choice="a", key=None, confidence=2, token=None):
    body = {"trial": trial_id, "idempotency_key": key or str(uuid.uuid4()), "choice": choice,
            "confidence": confidence, "rt_ms": 812.5, "client_time": "2026-11-23T10:00:00Z"}
    response = client.post(f"/api/p/{token or participant.token}/responses", json.dumps(body),
                           content_type="application/json")
    return response.status_code, (response.json() if response["Content-Type"] == "application/json" else None)


def first_trial(participant):
    return Trial.objects.filter(participant=participant).order_by("position").first()


def unchanged(participant):
    fresh = Participant.objects.get(pk=participant.pk)
    return fresh.answered == participant.answered and not Response.objects.filter(participant=participant).exists()


@pytest.mark.django_db
def test_a_study_with_confidence_refuses_an_answer_without_it_before_anything_else(answer_path, client, study):
    participant = arrive(client, study)  # not even consented: the missing rating is said first
    status, body = answer(client, participant, first_trial(participant).pk, confidence=None)
    assert status == 400 and body["error"] == "bad_request" and "confidence" in body["detail"]
    study.confidence = False
    study.save()
    through_instructions(client, participant)
    assert answer(client, participant, first_trial(participant).pk, confidence=None)[0] == 201
    assert Response.objects.get(participant=participant).confidence is None


@pytest.mark.django_db
def test_an_answer_past_the_time_limit_times_the_participant_out(answer_path, client, job):
    study = make_study(job, time_limit_minutes=30)
    participant = arrive(client, study)
    through_instructions(client, participant)
    Participant.objects.filter(pk=participant.pk).update(started_at=timezone.now() - timedelta(minutes=31))
    status, body = answer(client, participant, first_trial(participant).pk)
    assert status == 410 and body["error"] == "timed_out"
    participant.refresh_from_db()
    assert participant.status == Participant.Status.TIMED_OUT and participant.answered == 0
    assert not Response.objects.exists()


@pytest.mark.django_db
def test_an_ended_session_takes_no_answer(answer_path, client, study):
    participant = arrive(client, study)
    through_instructions(client, participant)
    Participant.objects.filter(pk=participant.pk).update(status=Participant.Status.RETURNED)
    status, body = answer(client, participant, first_trial(participant).pk)
    assert status == 410 and body["error"] == "ended"
    assert unchanged(participant)


@pytest.mark.django_db
def test_answers_before_the_instructions_are_out_of_order(answer_path, client, study):
    participant = arrive(client, study)
    assert api(client, participant, "consent", {"consent": True})[0] == 200
    status, body = answer(client, participant, first_trial(participant).pk)
    assert status == 409 and body["error"] == "out_of_order" and "instructions" in body["detail"]


@pytest.mark.django_db
@pytest.mark.parametrize("trial_id", [2 ** 70, -(2 ** 70), 0, -1])
def test_a_trial_id_no_trial_has_is_unknown(answer_path, client, study, trial_id):
    participant = arrive(client, study)
    through_instructions(client, participant)
    status, body = answer(client, participant, trial_id)
    assert status == 404 and body["error"] == "unknown_trial"


@pytest.mark.django_db
def test_an_unknown_token_is_not_found_whatever_the_body(answer_path, client, study):
    participant = arrive(client, study)
    through_instructions(client, participant)
    trial = first_trial(participant)
    token = participant.token[:-1] + ("A" if participant.token[-1] != "A" else "B")
    assert answer(client, participant, trial.pk, token=token)[0] == 404
    assert client.post(f"/api/p/{token}/responses", "{not json", content_type="application/json").status_code == 404
    assert client.post(f"/api/p/{participant.token}/responses", "{not json",
                       content_type="application/json").status_code == 400
    assert unchanged(participant)


@pytest.mark.django_db
def test_a_key_reused_for_another_trial_is_refused_and_nothing_moves(answer_path, client, study):
    participant = arrive(client, study)
    through_instructions(client, participant)
    first, second = Trial.objects.filter(participant=participant).order_by("position")[:2]
    key = str(uuid.uuid4())
    assert answer(client, participant, first.pk, correct_choice(first.pk), key=key)[0] == 201
    status, body = answer(client, participant, second.pk, key=key)
    assert status == 409 and body["error"] == "duplicate_key"
    assert Participant.objects.get(pk=participant.pk).answered == 1
    assert list(Response.objects.values_list("trial_id", flat=True)) == [first.pk]
    assert answer(client, participant, second.pk)[0] == 201  # a fresh key goes through


@pytest.mark.django_db
def test_a_repeated_answer_gives_back_the_stored_one(answer_path, client, job):
    study = make_study(job, practice_feedback=True)
    participant = arrive(client, study)
    through_instructions(client, participant)
    trial = first_trial(participant)
    wrong = {"a": "b", "b": "a"}[correct_choice(trial.pk)]
    key = str(uuid.uuid4())
    created = answer(client, participant, trial.pk, wrong, key=key)
    again = answer(client, participant, trial.pk, wrong, key=key)
    other_tab = answer(client, participant, trial.pk, correct_choice(trial.pk))
    assert created[0] == 201 and again[0] == 200 and other_tab[0] == 200
    assert created[1]["correct"] is again[1]["correct"] is other_tab[1]["correct"] is False
    assert again[1]["practice_repeat"] is False and again[1]["remaining"] == created[1]["remaining"]
    assert Response.objects.get().choice == wrong


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("path", PATHS)
def test_simultaneous_answers_to_one_trial_store_one(client, job, path, monkeypatch):
    monkeypatch.setattr(participation, "_answers_in_one_statement", lambda: path == "one_statement")
    study = make_study(job, n_practice=0, n_main=4)
    participant = arrive(client, study)
    through_instructions(client, participant)
    trial = first_trial(participant)
    barrier, results = threading.Barrier(8), []

    def submit(i):
        try:
            barrier.wait()
            results.append(participation.record_response(
                participant.token, trial.pk, idempotency_key=f"simultaneous-{i}", choice="a", confidence=2,
                rt_ms=700.0, client_time=None).created)
        except participation.ParticipationError as exc:
            results.append(exc.code)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=submit, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    # One stores it; the others wait for its row, find the counter moved and get the stored answer back.
    assert sorted(results) == [False] * 7 + [True], results
    assert Response.objects.filter(trial=trial).count() == 1
    assert Participant.objects.get(pk=participant.pk).answered == 1


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_the_answer_statement_is_its_own_health_check_and_a_dead_kept_connection_is_replaced(
        client, job, monkeypatch):
    """No SELECT 1 before the answer on a kept connection; one PostgreSQL ended between two requests is
    found dead by the answer itself, which goes again on a new connection and is stored once."""
    from django.db import connection

    study = make_study(job, n_practice=0, n_main=4)
    participant = arrive(client, study)
    through_instructions(client, participant)
    trials = list(Trial.objects.filter(participant=participant).order_by("position"))
    # As production has it (settings/base.py); the test settings leave Django's default, no checks.
    monkeypatch.setitem(connections["default"].settings_dict, "CONN_HEALTH_CHECKS", True)
    monkeypatch.setattr(connections["default"], "health_check_enabled", True)
    checks = []
    is_usable = type(connections["default"]).is_usable
    monkeypatch.setattr(type(connections["default"]), "is_usable",
                        lambda self: checks.append(self) or is_usable(self))

    connection.health_check_done = False  # what a new request does to a kept connection
    assert answer(client, participant, trials[0].pk)[0] == 201
    assert checks == []

    kept = connection.connection
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        [pid] = cursor.fetchone()
    other = connections.create_connection("default")
    try:
        with other.cursor() as cursor:
            cursor.execute("SELECT pg_terminate_backend(%s, 10000)", [pid])
    finally:
        other.close()
    connection.health_check_done = False
    assert answer(client, participant, trials[1].pk)[0] == 201
    assert connection.connection is not kept and kept.closed
    assert checks == []
    assert list(Response.objects.filter(participant=participant).values_list("trial_id", flat=True)
                .order_by("trial__position")) == [trials[0].pk, trials[1].pk]
    assert Participant.objects.get(pk=participant.pk).answered == 2
