"""How many SQL statements the participant API's requests cost. Storing an answer is the hot path (a
Prolific launch sends hundreds of participants answering every few seconds): one statement that checks
and writes everything, no transaction of its own, nothing re-read. A regression here costs capacity.

The tests run without the test's wrapping transaction (`transaction=True`), as gunicorn runs a request:
inside one, the answer statement takes a savepoint, which would be counted too."""
import json
import uuid

import pytest
from django.db import connection

from studyapp import participation
from studyapp.models import Participant, Response, Trial
from tests.studyapp.helpers import api, arrive, correct_choice, make_study, through_instructions

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]


def post_answer(client, participant, trial_id, choice="a", key=None):
    response = client.post(f"/api/p/{participant.token}/responses", json.dumps({
        "trial": trial_id, "idempotency_key": key or str(uuid.uuid4()), "choice": choice, "confidence": 2,
        "rt_ms": 812.5, "client_time": "2026-11-23T10:00:00Z"}), content_type="application/json")
    return response.status_code, response.json()


@pytest.fixture
def in_main_trials(client, job):
    study = make_study(job, n_practice=2, n_main=9)
    participant = arrive(client, study)
    through_instructions(client, participant)
    for trial in Trial.objects.filter(participant=participant, block="practice").order_by("position"):
        assert post_answer(client, participant, trial.pk, correct_choice(trial.pk))[0] == 201
    participant.refresh_from_db()
    return participant


def next_trial(participant):
    participant.refresh_from_db()
    return Trial.objects.get(participant=participant, position=participant.answered)


def test_an_answer_is_one_statement(client, in_main_trials, django_assert_num_queries):
    trial = next_trial(in_main_trials)
    with django_assert_num_queries(1):
        status, body = post_answer(client, in_main_trials, trial.pk)
    assert status == 201 and body["stored"] is True


def test_the_first_answer_on_a_connection_also_prepares_the_statement(client, in_main_trials,
                                                                       django_assert_num_queries):
    with connection.cursor() as cursor:
        cursor.execute("DEALLOCATE studyapp_answer")
    participation._prepared_on.discard(connection.connection)
    trial = next_trial(in_main_trials)
    with django_assert_num_queries(2) as captured:
        assert post_answer(client, in_main_trials, trial.pk)[0] == 201
    assert captured.captured_queries[0]["sql"].startswith("PREPARE studyapp_answer")
    trial = next_trial(in_main_trials)
    with django_assert_num_queries(1):
        assert post_answer(client, in_main_trials, trial.pk)[0] == 201


def test_a_statement_deallocated_behind_our_back_is_prepared_again(client, in_main_trials):
    with connection.cursor() as cursor:
        cursor.execute("DEALLOCATE studyapp_answer")  # as a DISCARD ALL would
    assert post_answer(client, in_main_trials, next_trial(in_main_trials).pk)[0] == 201
    assert post_answer(client, in_main_trials, next_trial(in_main_trials).pk)[0] == 201


def test_a_statement_the_session_holds_already_is_not_prepared_twice(client, in_main_trials):
    participation._prepared_on.discard(connection.connection)
    assert post_answer(client, in_main_trials, next_trial(in_main_trials).pk)[0] == 201
    assert connection.connection in participation._prepared_on


def test_without_prepared_statements_an_answer_is_still_one_statement(client, in_main_trials, settings,
                                                                       django_assert_num_queries):
    settings.DATABASE_PREPARED_STATEMENTS = False  # behind a pooler in transaction mode
    trial = next_trial(in_main_trials)
    with django_assert_num_queries(1) as captured:
        assert post_answer(client, in_main_trials, trial.pk)[0] == 201
    assert captured.captured_queries[0]["sql"].lstrip().startswith("WITH p AS")


def test_a_repeated_answer_is_two_statements(client, in_main_trials, django_assert_num_queries):
    trial, key = next_trial(in_main_trials), str(uuid.uuid4())
    assert post_answer(client, in_main_trials, trial.pk, key=key)[0] == 201
    with django_assert_num_queries(2):  # the answer statement, then the stored answer
        assert post_answer(client, in_main_trials, trial.pk, key=key)[0] == 200
    assert Response.objects.filter(trial=trial).count() == 1


def test_a_refused_answer_costs_no_more_than_a_repeated_one(client, in_main_trials, django_assert_max_num_queries):
    trial = next_trial(in_main_trials)
    later = Trial.objects.get(participant=in_main_trials, position=trial.position + 1)
    with django_assert_max_num_queries(2):  # like a repeat: no stored answer found
        assert post_answer(client, in_main_trials, later.pk)[0] == 409  # out of order
    with django_assert_max_num_queries(1):
        assert post_answer(client, in_main_trials, 2 ** 40)[0] == 404  # not this participant's trial
    with django_assert_max_num_queries(1):
        assert client.post("/api/p/no-such-token/responses", "{}", content_type="application/json").status_code == 404


def test_the_end_of_a_practice_block_is_bounded(client, job, django_assert_max_num_queries):
    # The rare path: the answer that ends a practice block may insert another block (a miss here).
    study = make_study(job, n_practice=3, practice_max_attempts=2, n_main=4)
    participant = arrive(client, study)
    through_instructions(client, participant)
    practice = list(Trial.objects.filter(participant=participant).order_by("position")[:3])
    wrong = {"a": "b", "b": "a"}
    assert post_answer(client, participant, practice[0].pk, wrong[correct_choice(practice[0].pk)])[0] == 201
    assert post_answer(client, participant, practice[1].pk, correct_choice(practice[1].pk))[0] == 201
    with django_assert_max_num_queries(16):
        status, body = post_answer(client, participant, practice[2].pk, correct_choice(practice[2].pk))
    assert status == 201 and body["practice_repeat"] is True


def test_reading_the_session_and_the_next_trials_is_one_statement_each(client, in_main_trials,
                                                                       django_assert_num_queries):
    with django_assert_num_queries(1):
        assert api(client, in_main_trials, "session")[0] == 200
    with django_assert_num_queries(3):  # the participant, its next trials, the server's time of first serving
        assert api(client, in_main_trials, "trials?limit=10")[0] == 200
    with django_assert_num_queries(2):  # served before: nothing to stamp
        assert api(client, in_main_trials, "trials?limit=10")[0] == 200


def test_an_answer_changes_only_its_rows(client, in_main_trials):
    trial = next_trial(in_main_trials)
    before = Participant.objects.get(pk=in_main_trials.pk)
    assert post_answer(client, in_main_trials, trial.pk)[0] == 201
    after = Participant.objects.get(pk=in_main_trials.pk)
    assert after.answered == before.answered + 1 and after.last_seen > before.last_seen
    assert (after.status, after.trial_count, after.practice_end) == (before.status, before.trial_count,
                                                                      before.practice_end)
