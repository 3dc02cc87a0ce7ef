"""Fuzzing the participant API: schemathesis drives the OpenAPI schema (/api/openapi.json) through the
WSGI application in process, and hypothesis feeds the JSON body parsers and the views arbitrary input.
Whatever arrives, the answer is a 2xx or a 4xx, never a server error.

The budgets are small and the runs derandomized, so the suite stays quick and a failure reproduces."""
import json
import math
import uuid
from datetime import datetime

import pytest
import schemathesis
from django.conf import settings
from django.core.handlers.wsgi import WSGIHandler
from django.core.signals import request_finished, request_started
from django.db import close_old_connections
from django.middleware.csrf import get_token
from django.test import Client, RequestFactory
from hypothesis import HealthCheck, given, settings as hypothesis_settings, strategies as st
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import response_schema_conformance

from studyapp import api, participation
from studyapp.models import Participant, Response, Trial
from studyapp.recruitment import Arrival
from tests.studyapp.helpers import arrive, make_study, through_instructions

FUZZ = hypothesis_settings(max_examples=60, deadline=None, derandomize=True, database=None,
                           suppress_health_check=list(HealthCheck))
FIELDS = ["trial", "idempotency_key", "choice", "confidence", "rt_ms", "client_time", "focus_losses",
          "fullscreen_exits", "webdriver"]

json_scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True, allow_infinity=True) | st.text()
json_values = st.recursive(json_scalars, lambda inner: st.lists(inner, max_size=4)
                           | st.dictionaries(st.text(max_size=8), inner, max_size=4), max_leaves=12)
# Values near the valid ones, where parsing bugs live.
near_valid = (st.sampled_from(["a", "b", "A", "", "ab", None, True, 1, 2, 3, 0, 4, -1, 1.0, 2.5, "2"])
              | st.integers(min_value=-2**70, max_value=2**70)
              | st.floats(allow_nan=True, allow_infinity=True)
              | st.uuids().map(str)
              | st.datetimes(timezones=st.timezones() | st.none()).map(lambda d: d.isoformat())
              | st.from_regex(r"\A[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9:.]{0,12}(Z|[+-][0-9]{2}:[0-9]{2})?\Z")
              | st.text(max_size=70))


class FakeRequest:
    def __init__(self, body, content_type="application/json"):
        self.body = body
        self.content_type = content_type
        self.META = {"CONTENT_LENGTH": str(len(body))}


# ----------------------------------------------------------------------------------- the parsers
@FUZZ
@given(st.binary(max_size=300) | json_values.map(lambda v: json.dumps(v).encode())
       | st.sampled_from([b"1" * 5000, b"[" * 5000, b'{"a": "\\ud800"}', b'{"a": "\\u0000"}', b"NaN",
                          b'{"x": 1e999}', b'{"x": Infinity}', b"\xff\xfe", b'"\\udfff"']))
def test_the_body_parser_returns_an_object_or_says_bad_request(body):
    try:
        data = api._body(FakeRequest(body))
    except api.BadRequest as exc:
        assert exc.detail
        return
    assert isinstance(data, dict)
    # What it lets through, the database can store: encodable text, no NUL, finite numbers.
    text = json.dumps(data, ensure_ascii=False, allow_nan=False)
    text.encode("utf-8")
    assert "\\u0000" not in text


@FUZZ
@given(st.binary(max_size=100), st.sampled_from(["", "text/plain", "multipart/form-data",
                                                 "application/x-www-form-urlencoded", "application/json5"]))
def test_the_body_parser_refuses_what_is_not_declared_json(body, content_type):
    with pytest.raises(api.UnsupportedMediaType):
        api._body(FakeRequest(body, content_type))


# Nested lists as deep as a stored questionnaire that once broke the admin (930 levels, parsed in Python).
deep_values = st.integers(min_value=1, max_value=930).map(lambda n: json.loads("[" * n + "1" + "]" * n))


@FUZZ
@given(json_values | deep_values | st.dictionaries(st.text(max_size=80), near_valid | json_values | deep_values,
                                                   max_size=25))
def test_the_questionnaire_parser_lets_through_only_a_flat_mapping_of_short_values(answers):
    try:
        stored = api._questionnaire_answers(answers)
    except api.BadRequest as exc:
        assert exc.detail
        return
    assert isinstance(stored, dict) and len(stored) <= api.QUESTIONNAIRE_MAX_KEYS
    for key, value in stored.items():
        assert 1 <= len(key) <= api.QUESTIONNAIRE_MAX_KEY_LENGTH
        assert value is None or isinstance(value, (bool, int, float, str))
        assert not isinstance(value, str) or len(value) <= api.QUESTIONNAIRE_MAX_TEXT_LENGTH
    json.loads(json.dumps(stored))  # a reader can load what is stored, at any nesting limit


@FUZZ
@given(st.dictionaries(st.sampled_from(FIELDS) | st.text(max_size=5), near_valid | json_values, max_size=8))
def test_the_response_parser_returns_valid_fields_or_says_bad_request(data):
    try:
        trial, fields = api._parse_response(data)
    except api.BadRequest as exc:
        assert exc.detail
        return
    assert isinstance(trial, int) and not isinstance(trial, bool)
    assert 8 <= len(fields["idempotency_key"]) <= 64
    assert fields["choice"] in ("a", "b")
    assert fields["confidence"] in (None, 1, 2, 3)
    assert math.isfinite(fields["rt_ms"]) and fields["rt_ms"] >= 0
    assert fields["client_time"] is None or isinstance(fields["client_time"], datetime)


@FUZZ
@given(st.fixed_dictionaries({
    "trial": st.integers(min_value=1, max_value=10**6),
    "idempotency_key": st.uuids().map(str),
    "choice": st.sampled_from(["a", "b"]),
    "confidence": st.sampled_from([1, 2, 3]),
    "rt_ms": st.floats(min_value=0, max_value=86_399_999, allow_nan=False),
    "client_time": st.none() | st.datetimes(timezones=st.timezones() | st.none()).map(lambda d: d.isoformat()),
}))
def test_every_valid_answer_parses(data):
    trial, fields = api._parse_response(data)
    assert trial == data["trial"] and fields["choice"] == data["choice"]


# ------------------------------------------------------------------------- the views, through Django
@pytest.fixture
def fuzz_study(db):
    return make_study(n_practice=2, n_main=4, participants_per_condition=100_000)


@pytest.fixture
def live_participant(fuzz_study, client):
    participant = arrive(client, fuzz_study)
    through_instructions(client, participant)
    return participant


def in_trials(study):
    """A participant of `study` with trials left to answer: the last one, or a new one when a fuzzed
    request ended it or it answered everything."""
    participant = Participant.objects.filter(study=study, status=Participant.Status.STARTED).last()
    if participant is None or participant.answered >= participant.trial_count:
        participant = participation.start(study, Arrival("link", None, {}))
        participation.give_consent(participant, True)
        participation.record_instructions(participant, 20_000.0)
    return participant


def _post(client, participant, name, body):
    return client.post(f"/api/p/{participant.token}/{name}", body, content_type="application/json")


@pytest.mark.django_db
@FUZZ
@given(name=st.sampled_from(["consent", "instructions", "responses", "questionnaire"]),
       body=json_values.map(lambda v: json.dumps(v).encode())
       | st.dictionaries(st.sampled_from(FIELDS + ["consent", "reading_ms", "answers"]), near_valid | json_values,
                         max_size=7).map(lambda v: json.dumps(v).encode())
       | st.binary(max_size=200))
def test_the_participant_endpoints_never_answer_a_server_error(client, live_participant, name, body):
    response = _post(client, live_participant, name, body)
    assert response.status_code < 500
    assert response["Content-Type"] == "application/json"


@pytest.mark.django_db
@FUZZ
@given(st.dictionaries(st.sampled_from(["trial", "idempotency_key", "confidence", "rt_ms", "client_time",
                                        "focus_losses", "fullscreen_exits", "webdriver"]),
                       near_valid, max_size=8),
       st.sampled_from(["a", "b"]))
def test_answers_with_fuzzed_fields_on_the_next_trial_never_answer_a_server_error(client, fuzz_study, fields, choice):
    participant = in_trials(fuzz_study)
    trial = Trial.objects.get(participant=participant, position=participant.answered)
    body = {"trial": trial.pk, "idempotency_key": str(uuid.uuid4()), "choice": choice, "confidence": 2,
            "rt_ms": 700, **fields}
    if isinstance(fields.get("trial"), int) and fields["trial"] % 2:
        body["trial"] = trial.pk
    response = _post(client, participant, "responses", json.dumps(body).encode())
    assert response.status_code < 500
    if response.status_code == 201:
        # What was stored reads back (an out-of-range time would be stored by PostgreSQL but not read).
        stored = Response.objects.get(trial=trial)
        assert stored.client_time is None or stored.client_time.tzinfo is not None


@pytest.mark.django_db
@FUZZ
@given(st.dictionaries(st.sampled_from(["PROLIFIC_PID", "STUDY_ID", "SESSION_ID", "workerId", "assignmentId",
                                        "hitId", "turkSubmitTo"]), st.text(max_size=120), max_size=5),
       st.text(max_size=400))
def test_the_start_form_never_answers_a_server_error(client, fields, user_agent):
    study = make_study(participants_per_condition=1000)
    response = client.post(f"/s/{study.slug}/start", fields, HTTP_USER_AGENT=user_agent)
    assert response.status_code in (302, 400, 403)


@pytest.mark.django_db
@FUZZ
@given(st.text(min_size=1, max_size=80).filter(lambda t: "/" not in t and t not in (".", "..")),
       st.sampled_from(["session", "trials", "consent"]))
def test_guessed_and_malformed_tokens_are_not_found(client, token, name):
    from urllib.parse import quote

    url = f"/api/p/{quote(token, safe='')}/{name}"
    response = client.get(url) if name != "consent" else client.post(url, "{}", content_type="application/json")
    assert response.status_code == 404
    assert client.get(f"/p/{quote(token, safe='')}/").status_code == 404


# ------------------------------------------------------------------- schemathesis, the whole schema
# Loaded through the WSGI application itself (the schema view touches no database). schemathesis'
# lazy `from_fixture` loader does not run under pytest 9, hence the schema at import.
schema = schemathesis.openapi.from_wsgi("/api/openapi.json", WSGIHandler())
schema.config.generation.update(max_examples=40, deterministic=True)


@pytest.fixture
def in_process_requests():
    """Requests through the WSGI handler inside the test's transaction: the handler must not close the
    test's connection at the end of each request (Django's test client disconnects the same signal)."""
    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    yield
    request_started.connect(close_old_connections)
    request_finished.connect(close_old_connections)


def _csrf_pair():
    request = RequestFactory().get("/")
    get_token(request)
    secret = request.META["CSRF_COOKIE"]
    return {"X-CSRFToken": secret}, {settings.CSRF_COOKIE_NAME: secret}


@schema.parametrize()
@hypothesis_settings(suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_schemathesis_finds_no_server_error(case, fuzz_study, in_process_requests):
    participant = in_trials(fuzz_study)
    case.path_parameters = {**(case.path_parameters or {}), "token": participant.token}
    if case.operation.label == "POST /api/p/{token}/responses" and isinstance(case.body, dict) \
            and isinstance(case.body.get("trial"), int) and case.body["trial"] % 3 != 1:
        # Most generated answers aim at the next trial, with a confidence rating, so that the storing
        # path is fuzzed too and not only the parser.
        next_trial = Trial.objects.get(participant=participant, position=participant.answered)
        case.body = {**case.body, "trial": next_trial.pk, "confidence": case.body.get("confidence") or 2}
    headers, cookies = _csrf_pair()
    response = case.call(headers=headers, cookies=cookies)
    case.validate_response(response, checks=[not_a_server_error])
    if response.status_code < 300:
        case.validate_response(response, checks=[response_schema_conformance])


def _error_shape(response):
    assert response["Content-Type"] == "application/json"
    body = response.json()
    assert set(body) == {"error", "detail"} and isinstance(body["error"], str) and body["detail"]


@pytest.mark.django_db
@FUZZ
@given(name=st.sampled_from(["consent", "instructions", "responses", "questionnaire"]),
       content_type=st.sampled_from(["multipart/form-data; boundary=BoUnDaRy", "application/x-www-form-urlencoded",
                                     "text/plain", "application/xml", "application/octet-stream"]),
       body=st.binary(max_size=300) | st.just(b'--BoUnDaRy\r\nContent-Disposition: form-data; name="consent"'
                                              b'\r\n\r\ntrue\r\n--BoUnDaRy--\r\n'))
def test_bodies_that_are_not_json_are_refused_in_the_api_shape_even_past_the_csrf_check(fuzz_study, name,
                                                                                       content_type, body):
    participant = in_trials(fuzz_study)
    headers, cookies = _csrf_pair()
    browser = Client(enforce_csrf_checks=True)
    browser.cookies.load(cookies)
    response = browser.post(f"/api/p/{participant.token}/{name}", body, content_type=content_type,
                            HTTP_X_CSRFTOKEN=headers["X-CSRFToken"])
    assert response.status_code in (400, 415)
    _error_shape(response)


@pytest.mark.django_db
@FUZZ
@given(method=st.sampled_from(["get", "post", "put", "patch", "delete", "options", "head"]),
       tail=st.sampled_from(["session", "consent", "instructions", "trials", "responses", "questionnaire"])
       | st.text(alphabet="abcdefghijklmnopqrstuvwxyz/._-", max_size=20),
       known=st.booleans())
def test_every_refusal_under_the_api_is_the_json_error_shape(client, fuzz_study, method, tail, known):
    participant = in_trials(fuzz_study)
    token = participant.token if known else "x" * 32
    response = getattr(client, method)(f"/api/p/{token}/{tail}")
    assert response.status_code < 500
    if response.status_code >= 400 and method != "head":
        _error_shape(response)
