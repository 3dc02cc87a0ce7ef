"""The security properties the participant's and the researcher's doors promise:

1. nothing sent before an answer tells which query is correct;
2. a participant can neither read nor write another's trials, and the admin needs a staff login;
3. a recruitment id takes part once, and only its keyed hash is stored;
4. the admin's sign-in locks out after repeated failures;
5. the participant API's POSTs need the CSRF token the page hands out;
6. the participant API is rate limited per token and per client address.
(Fuzzing, the "never a server error" side, is in test_fuzz.py.)"""
import hashlib
import hmac
import json
import os
import re
import secrets
import uuid
from datetime import timedelta

import pytest
from axes.models import AccessAttempt
from django.apps import apps
from django.contrib import admin
from django.contrib.auth import get_user_model
from django.contrib.sessions.models import Session
from django.core.cache import cache
from django.db import models
from django.db.models import F
from django.test import Client, RequestFactory, override_settings
from django.urls import URLPattern, URLResolver
from django.urls.resolvers import RegexPattern

from studyapp import openapi, ratelimit
from studyapp.models import Participant, Response, Trial, Unit, new_token
from studyapp.recruitment import hash_external_id
from tests.studyapp.helpers import answer, api, arrive, correct_choice, make_job, make_study, through_instructions


@pytest.fixture(autouse=True)
def fresh_cache():
    """Rate-limit counters live in the cache, which outlives a test."""
    cache.clear()
    yield
    cache.clear()


def everything_sent(response):
    """Every byte a response puts on the wire: status, headers, cookies and body."""
    head = [f"HTTP {response.status_code}"] + [f"{k}: {v}" for k, v in response.items()]
    head.append(response.cookies.output())
    body = b"".join(response.streaming_content) if response.streaming else response.content
    return "\n".join(head) + "\n\n" + body.decode("utf-8", "replace")


def documented_keys(schema):
    """Every property name the OpenAPI document allows anywhere in a participant API body."""
    keys = set()
    if isinstance(schema, dict):
        keys |= set(schema.get("properties", {}))
        for value in schema.values():
            keys |= documented_keys(value)
    elif isinstance(schema, list):
        for value in schema:
            keys |= documented_keys(value)
    return keys


def json_keys(value):
    if isinstance(value, dict):
        return set(value) | set().union(*(json_keys(v) for v in value.values()))
    if isinstance(value, list):
        return set().union(*(json_keys(v) for v in value)) if value else set()
    return set()


# ------------------------------------------------------------------------- 1. the answer stays put
IMAGE_URL = re.compile(r"\A/media/[0-9a-f]{20}\.png\Z")
FORBIDDEN = ["correct_query", "catch", "kind", "query_max", "query_min", "reference_max", "reference_min",
             "qmax", "qmin", "rmax", "rmin", "unit_id", "basis", "answer_key"]


@pytest.mark.django_db
def test_no_byte_sent_before_an_answer_tells_which_query_is_correct():
    # Enough query pairs per unit that no main trial needs the pair practice gave feedback on.
    job = make_job(n_units=3, n_queries=8)
    study = make_study(job, n_practice=3, n_main=18, catch_ratio=1 / 9, practice_feedback=True)
    client = Client()
    sent = []  # everything sent to this participant so far, one entry per response
    api_bodies = []

    def get(url):
        response = client.get(url)
        assert response.status_code in (200, 302), url
        sent.append(everything_sent(response))
        return response

    def post_json(name, body):
        response = client.post(f"/api/p/{participant.token}/{name}", json.dumps(body),
                               content_type="application/json")
        sent.append(everything_sent(response))
        api_bodies.append(response.json())
        return response

    get(f"/s/{study.slug}/?PROLIFIC_PID=leak-test&STUDY_ID=s1&SESSION_ID=x")
    start = client.post(f"/s/{study.slug}/start", {"PROLIFIC_PID": "leak-test", "STUDY_ID": "s1", "SESSION_ID": "x"})
    sent.append(everything_sent(start))
    participant = Participant.objects.get(token=start["Location"].rstrip("/").split("/")[-1])
    get(f"/p/{participant.token}/")
    api_bodies.append(get(f"/api/p/{participant.token}/session").json())
    assert post_json("consent", {"consent": True}).status_code == 200
    assert post_json("instructions", {"reading_ms": 20_000}).status_code == 200

    unit_keys = {u.key for u in Unit.objects.filter(job=job)}
    unit_keys |= {f"{u.layer}:{u.basis}" for u in Unit.objects.filter(job=job)}
    told = {}  # query URL -> whether feedback said it was the correct one
    skeletons = {}  # block -> the shapes of its trials, URLs and numbers blanked
    shown = []
    while True:
        batch = get(f"/api/p/{participant.token}/trials?limit=4").json()
        api_bodies.append(batch)
        if not batch["trials"]:
            break
        for trial in batch["trials"]:
            row = Trial.objects.get(pk=trial["id"])
            correct_url = trial["query_a"] if row.correct_query == "a" else trial["query_b"]
            wrong_url = trial["query_b"] if row.correct_query == "a" else trial["query_a"]
            wire = "\n".join(sent)
            # No word of the answer key, the trial kind, the exemplar roles or the unit.
            for word in FORBIDDEN + sorted(unit_keys):
                assert word not in wire, word
            assert not re.search(r"\bunits?\b", wire)
            # Every JSON key is one the schema documents; "correct" only answers a practice answer.
            for body in api_bodies:
                assert json_keys(body) <= documented_keys(openapi.schema()["paths"])
            # The two queries are presented alike: same URL shape (a content hash), as often as each
            # other, and every trial has one layout whatever its kind or its correct side.
            assert IMAGE_URL.match(correct_url) and IMAGE_URL.match(wrong_url)
            if row.kind != Trial.Kind.CATCH:
                # (A catch query is a reference image, drawn at random per catch trial, so its count
                # follows the draw rather than the answer.)
                assert wire.count(correct_url) == wire.count(wrong_url)
            skeletons.setdefault(trial["block"], set()).add(
                re.sub(r"\d+", "N", re.sub(r'"/media/[^"]+"', '"URL"', json.dumps(trial))))
            if row.kind == Trial.Kind.CATCH:
                # The paradigm's own exception: a catch query *is* one of the references on screen, so
                # its URL equals a reference URL, for both queries alike.
                assert correct_url in trial["references_max"] and wrong_url in trial["references_min"]
            else:
                assert correct_url not in trial["references_max"] + trial["references_min"]
                assert wrong_url not in trial["references_max"] + trial["references_min"]
                # Feedback on an earlier trial must not have told the answer to this one.
                assert correct_url not in told and wrong_url not in told
            shown.append((trial["block"], row.correct_query))

            choice = correct_choice(trial["id"]) if trial["block"] == "practice" else "a"
            response = post_json("responses", {"trial": trial["id"], "idempotency_key": str(uuid.uuid4()),
                                               "choice": choice, "confidence": 2, "rt_ms": 900})
            assert response.status_code == 201
            result = response.json()
            assert ("correct" in result) == (trial["block"] == "practice")
            if "correct" in result:
                told[trial["query_a"]] = result["correct"] == (choice == "a")
                told[trial["query_b"]] = result["correct"] == (choice == "b")
    # Catch trials among them: one shape per block, whatever the kind.
    assert len(shown) == 21
    assert {block: len(shapes) for block, shapes in skeletons.items()} == {"practice": 1, "main": 1}
    assert Trial.objects.filter(participant=participant, kind=Trial.Kind.CATCH).count() == 2
    assert {side for block, side in shown} == {"a", "b"}


@pytest.mark.django_db
def test_the_ordered_strip_paradigm_does_not_repeat_the_ordered_row(client, job):
    study = make_study(job, n_practice=0, n_main=9, catch_ratio=0)
    study.conditions.update(paradigm="ordered_strip")
    participant = arrive(client, study)
    through_instructions(client, participant)
    wire = ""
    for trial in api(client, participant, "trials?limit=50")[1]["trials"]:
        response = client.get(f"/api/p/{participant.token}/trials?limit=1")
        wire += response.content.decode()
        row = Trial.objects.get(pk=trial["id"])
        ordered, shuffled = (trial["strip_a"], trial["strip_b"]) if row.correct_query == "a" else \
            (trial["strip_b"], trial["strip_a"])
        assert wire.count(json.dumps(ordered)) == wire.count(json.dumps(shuffled))
        assert answer(client, participant, trial["id"])[0] == 201


@pytest.mark.django_db
def test_the_correct_side_is_drawn_at_random_for_every_participant(client, job):
    study = make_study(job, n_practice=0, n_main=18, catch_ratio=0, participants_per_condition=100)
    sides = []
    for _ in range(8):
        participant = arrive(client, study)
        sides += list(Trial.objects.filter(participant=participant).values_list("correct_query", flat=True))
    share_a = sides.count("a") / len(sides)
    assert 0.3 < share_a < 0.7  # 144 fair draws: more than 4 standard deviations of room


# --------------------------------------------------------------- 2. one participant, one credential
def test_tokens_are_long_random_and_distinct():
    tokens = [new_token() for _ in range(2000)]
    assert len(set(tokens)) == len(tokens)
    assert all(len(t) >= 32 and re.fullmatch(r"[-\w]+", t, re.ASCII) for t in tokens)
    # 24 random bytes: every position takes many values, nothing is a counter or a time stamp.
    assert all(len({t[i] for t in tokens}) > 40 for i in range(32))


@pytest.mark.django_db
def test_a_participant_can_neither_read_nor_write_another_participants_trials(client, study):
    mine, theirs = arrive(client, study), arrive(client, study)
    through_instructions(client, mine)
    through_instructions(client, theirs)
    their_trials = set(Trial.objects.filter(participant=theirs).values_list("pk", flat=True))
    seen = {t["id"] for t in api(client, mine, "trials?limit=50")[1]["trials"]}
    assert seen and not seen & their_trials
    for trial_id in sorted(their_trials):
        status, body = answer(client, mine, trial_id)
        assert status == 404 and body["error"] == "unknown_trial"
    assert Response.objects.count() == 0
    theirs.refresh_from_db()
    assert theirs.answered == 0
    # Near misses of their token find nothing.
    token = theirs.token
    flipped = token[:-1] + chr(ord(token[-1]) ^ 1)
    for guess in (token[:-1], token + "x", token.upper(), token.lower(), token[1:], flipped):
        if guess == token:
            continue
        assert client.get(f"/api/p/{guess}/session").status_code == 404
        assert client.get(f"/api/p/{guess}/trials").status_code == 404
        assert client.get(f"/p/{guess}/").status_code == 404


@pytest.mark.django_db
def test_guessing_tokens_finds_nobody(client, study):
    arrive(client, study)
    for _ in range(200):
        guess = secrets.token_urlsafe(24)
        assert client.get(f"/api/p/{guess}/session").status_code == 404
    for odd in ("", "%00", "..", "a" * 500, "%E2%80%8B", "' OR '1'='1", "*"):
        assert client.get(f"/api/p/{odd}/session").status_code == 404
        assert client.post(f"/api/p/{odd}/consent", "{}", content_type="application/json").status_code == 404


def admin_paths(patterns, prefix="/admin/"):
    """Every URL the admin serves, with 1 for each captured argument, and its name. Regular-expression
    routes (the app index, the catch-all) are left out; the app index is added by hand."""
    for pattern in patterns:
        if isinstance(pattern.pattern, RegexPattern):
            continue
        concrete = re.sub(r"<[^>]+>", "1", str(pattern.pattern))
        if isinstance(pattern, URLResolver):
            yield from admin_paths(pattern.url_patterns, prefix + concrete)
        elif isinstance(pattern, URLPattern):
            yield prefix + concrete, pattern.name


@pytest.mark.django_db
def test_every_admin_page_needs_a_staff_login(study):
    paths = [(p, name) for p, name in admin_paths(admin.site.get_urls()) if name not in ("login", "logout")]
    paths.append(("/admin/studyapp/", "app_list"))
    names = {name for _, name in paths}
    assert {"index", "studyapp_study_monitor", "studyapp_study_preview", "studyapp_participant_changelist",
            "studyapp_response_changelist"} <= names, names
    member = get_user_model().objects.create_user("member", password="a-long-password-1")  # not staff
    for who in (None, member):
        browser = Client()
        if who is not None:
            browser.force_login(who)
        for path, _name in paths:
            response = browser.get(path)
            assert response.status_code == 302, (path, response.status_code)
            assert response["Location"].startswith("/admin/login/"), path
    assert Participant.objects.filter(is_preview=True).count() == 0  # the preview page started nothing


# ------------------------------------------------------------------------ 3. one person, one go
TEXT_FIELDS = (models.CharField, models.TextField, models.JSONField)


def every_stored_text():
    """Each text or JSON value in every table of the app, with the sessions and the admin log."""
    for model in [*apps.get_app_config("studyapp").get_models(), Session, apps.get_model("admin", "LogEntry")]:
        fields = [f.attname for f in model._meta.concrete_fields if isinstance(f, TEXT_FIELDS)]
        for row in model.objects.values_list(*fields):
            for field, value in zip(fields, row):
                if value is not None:
                    yield model.__name__, field, value if isinstance(value, str) else json.dumps(value)


@pytest.mark.django_db
def test_an_mturk_worker_takes_part_once_and_is_known_only_by_a_keyed_hash(client, study, settings):
    worker = "A3WORKER" + secrets.token_hex(6).upper()
    link = {"workerId": worker, "assignmentId": "ASSIGN1", "hitId": "HIT1",
            "turkSubmitTo": "https://workersandbox.mturk.com"}
    first = client.post(f"/s/{study.slug}/start", link)
    assert first.status_code == 302
    participant = Participant.objects.get(token=first["Location"].rstrip("/").split("/")[-1])
    expected = hmac.new(settings.PARTICIPANT_ID_KEY.encode(), f"mturk:{worker}".encode(), hashlib.sha256).hexdigest()
    assert participant.external_id_hash == expected == hash_external_id(settings.PARTICIPANT_ID_KEY, "mturk", worker)
    assert participant.external_id_hash != hashlib.sha256(f"mturk:{worker}".encode()).hexdigest()
    assert participant.external_id_hash != hash_external_id(settings.PARTICIPANT_ID_KEY, "prolific", worker)
    assert participant.recruitment == "mturk" and participant.recruitment_info["assignmentId"] == "ASSIGN1"

    # Coming back before finishing resumes; after finishing (here: declining), the door is closed, on a
    # new assignment too.
    again = client.post(f"/s/{study.slug}/start", {**link, "assignmentId": "ASSIGN2"})
    assert again["Location"] == first["Location"]
    api(client, participant, "consent", {"consent": False})
    refused = client.post(f"/s/{study.slug}/start", {**link, "assignmentId": "ASSIGN3"})
    assert refused.status_code == 403 and b"already taken part" in refused.content
    # The same id on Prolific is another person, and under another key the hash is another too.
    assert client.post(f"/s/{study.slug}/start", {"PROLIFIC_PID": worker}).status_code == 302
    settings.PARTICIPANT_ID_KEY = "another-key"
    assert client.post(f"/s/{study.slug}/start", link).status_code == 302
    assert Participant.objects.filter(study=study).count() == 3


@pytest.mark.django_db
def test_the_raw_recruitment_ids_are_in_no_database_column(client, job):
    study = make_study(job, n_practice=1, n_main=2, catch_ratio=0,
                       completion_url="https://app.prolific.com/submissions/complete?cc={code}")
    prolific_id = "PROLIFIC" + secrets.token_hex(8)
    worker_id = "WORKER" + secrets.token_hex(8).upper()
    for link in ({"PROLIFIC_PID": prolific_id, "STUDY_ID": "study-1", "SESSION_ID": "session-1"},
                 {"workerId": worker_id, "assignmentId": "A1", "hitId": "H1"}):
        response = client.post(f"/s/{study.slug}/start", link)
        participant = Participant.objects.get(token=response["Location"].rstrip("/").split("/")[-1])
        through_instructions(client, participant)
        for trial in api(client, participant, "trials?limit=50")[1]["trials"]:
            assert answer(client, participant, trial["id"], correct_choice(trial["id"]))[0] == 201
        assert api(client, participant, "questionnaire", {"answers": {"strategy": "colours"}})[0] == 200
    values = list(every_stored_text())
    assert any(model == "Participant" and field == "recruitment_info" for model, field, _ in values)
    for raw in (prolific_id, worker_id):
        leaks = [(model, field) for model, field, value in values if raw.lower() in value.lower()]
        assert not leaks, f"{raw} stored in {leaks}"


# -------------------------------------------------------------------------- 4. the admin's lockout
@pytest.fixture
def researcher(db):
    return get_user_model().objects.create_user("researcher", password="correct-horse-battery", is_staff=True,
                                                is_superuser=True)


def sign_in(browser, username, password, address="10.1.1.1"):
    return browser.post("/admin/login/?next=/admin/", {"username": username, "password": password},
                        REMOTE_ADDR=address)


@pytest.mark.django_db
def test_the_admin_locks_a_username_out_from_one_address_after_five_failures_and_says_so(
        researcher, settings):
    assert settings.LOGIN_LOCKOUT_ATTEMPTS == 5
    browser = Client()
    for _ in range(4):
        response = sign_in(browser, "researcher", "wrong", address="10.0.0.1")
        assert response.status_code == 200 and b"Too many failed" not in response.content
    fifth = sign_in(browser, "researcher", "wrong", address="10.0.0.1")
    assert b"Too many failed sign-in attempts" in fifth.content and b"15 more minutes" in fifth.content
    # The right password from that address does not help while the lockout lasts,
    right = sign_in(browser, "researcher", "correct-horse-battery", address="10.0.0.1")
    assert right.status_code == 200 and b"Too many failed sign-in attempts" in right.content
    # nor do further attempts prolong it: 15 minutes after the fifth failure it is over. django-axes keeps
    # each pair's latest failure time on its AccessAttempt row; moving that back is the 15 minutes passing.
    assert AccessAttempt.objects.get(username="researcher", ip_address="10.0.0.1").failures_since_start == 5
    AccessAttempt.objects.update(attempt_time=F("attempt_time") - timedelta(minutes=15, seconds=1))
    after = sign_in(browser, "researcher", "correct-horse-battery", address="10.0.0.1")
    assert after.status_code == 302 and after["Location"] == "/admin/"


@pytest.mark.postgres
@pytest.mark.django_db
def test_failures_from_elsewhere_never_lock_the_researcher_out(researcher):
    """Issue 13: five bad sign-ins as `admin` from anywhere locked the account for everyone."""
    for attempt in range(30):
        sign_in(Client(), "researcher", "wrong", address=f"203.0.113.{attempt % 6}")
    own = sign_in(Client(), "researcher", "correct-horse-battery", address="10.9.9.9")
    assert own.status_code == 302 and own["Location"] == "/admin/"


@pytest.mark.django_db
def test_the_admin_locks_an_address_out_whatever_the_usernames(researcher, settings):
    settings.LOGIN_LOCKOUT_ADDRESS_ATTEMPTS = 8
    browser = Client()
    for i in range(8):
        sign_in(browser, f"user{i}", "guess", address="192.0.2.7")
    refused = sign_in(browser, "researcher", "correct-horse-battery", address="192.0.2.7")
    assert b"Too many failed sign-in attempts" in refused.content
    elsewhere = sign_in(Client(), "researcher", "correct-horse-battery", address="198.51.100.1")
    assert elsewhere.status_code == 302


@pytest.mark.django_db
def test_a_successful_sign_in_clears_the_failures(researcher):
    for _ in range(4):
        sign_in(Client(), "researcher", "wrong")
    assert sign_in(Client(), "researcher", "correct-horse-battery").status_code == 302
    for _ in range(4):
        sign_in(Client(), "researcher", "wrong")
    assert sign_in(Client(), "researcher", "correct-horse-battery").status_code == 302


@pytest.mark.django_db
def test_the_admin_lists_the_failed_sign_ins_and_usernames_count_case_folded(researcher):
    for name in ("Researcher", "RESEARCHER", "researcher"):
        sign_in(Client(), name, "wrong", address="192.0.2.40")
    [attempt] = AccessAttempt.objects.filter(ip_address="192.0.2.40")
    assert attempt.username == "researcher" and attempt.failures_since_start == 3
    browser = Client()
    browser.force_login(researcher)
    listed = browser.get("/admin/axes/accessattempt/")
    assert listed.status_code == 200 and b"192.0.2.40" in listed.content


# ----------------------------------------------------------------------------------------- 5. CSRF
@pytest.mark.django_db
def test_participant_posts_need_the_csrf_token_from_the_page(study):
    browser = Client(enforce_csrf_checks=True)
    landing = browser.get(f"/s/{study.slug}/?PROLIFIC_PID=csrf-1")
    assert browser.post(f"/s/{study.slug}/start", {"PROLIFIC_PID": "csrf-1"}).status_code == 403
    form_token = re.search(rb'name="csrfmiddlewaretoken" value="([^"]+)"', landing.content).group(1).decode()
    start = browser.post(f"/s/{study.slug}/start", {"PROLIFIC_PID": "csrf-1", "csrfmiddlewaretoken": form_token})
    assert start.status_code == 302
    page = browser.get(start["Location"])
    config = json.loads(re.search(rb'<script id="study-config" type="application/json">(.*?)</script>',
                                  page.content, re.S).group(1))
    url = f"{config['api_base']}consent"
    body = json.dumps({"consent": True})

    refused = browser.post(url, body, content_type="application/json")
    assert refused.status_code == 403
    assert refused.json()["error"] == "csrf_failed" and refused.json()["detail"]
    wrong = browser.post(url, body, content_type="application/json", HTTP_X_CSRFTOKEN="x" * 64)
    assert wrong.status_code == 403
    participant = Participant.objects.get(token=config["token"])
    assert participant.consented_at is None
    accepted = browser.post(url, body, content_type="application/json", HTTP_X_CSRFTOKEN=config["csrf_token"])
    assert accepted.status_code == 200 and accepted.json()["phase"] == "instructions"
    # Reading needs no token.
    assert browser.get(f"{config['api_base']}session").status_code == 200
    # Without the cookie the header alone is not enough (another site cannot set it).
    stranger = Client(enforce_csrf_checks=True)
    assert stranger.post(url, body, content_type="application/json",
                         HTTP_X_CSRFTOKEN=config["csrf_token"]).status_code == 403


# ----------------------------------------------------------------------------------- 6. rate limits
@pytest.mark.django_db
@override_settings(PARTICIPANT_RATE_LIMIT_PER_TOKEN=5, PARTICIPANT_RATE_LIMIT_PER_IP=0,
                   PARTICIPANT_RATE_LIMIT_WINDOW=60)
def test_a_token_is_limited_per_window_with_retry_after(client, study, monkeypatch, django_assert_num_queries):
    participant, other = arrive(client, study), arrive(client, study)
    now = 60 * 16_666_667 + 20.0  # 20 s into a window
    monkeypatch.setattr(ratelimit.time, "time", lambda: now)
    for _ in range(5):
        assert client.get(f"/api/p/{participant.token}/session").status_code == 200
    with django_assert_num_queries(0):
        refused = client.post(f"/api/p/{participant.token}/consent", json.dumps({"consent": True}),
                              content_type="application/json")
    assert refused.status_code == 429
    assert refused.json() == {"error": "rate_limited", "detail": refused.json()["detail"]}
    assert "40 seconds" in refused.json()["detail"] and refused["Retry-After"] == "40"
    assert client.get(f"/p/{participant.token}/").status_code == 429  # the page counts too
    assert client.get(f"/api/p/{other.token}/session").status_code == 200  # another token is not touched
    participant.refresh_from_db()
    assert participant.consented_at is None
    monkeypatch.setattr(ratelimit.time, "time", lambda: now + 40)
    assert client.get(f"/api/p/{participant.token}/session").status_code == 200


@pytest.mark.django_db
@override_settings(PARTICIPANT_RATE_LIMIT_PER_TOKEN=0, PARTICIPANT_RATE_LIMIT_PER_IP=8)
def test_an_address_is_limited_across_tokens_and_guesses(client, study, one_rate_window):
    participants = [arrive(client, study) for _ in range(3)]
    for i in range(8):
        token = participants[i % 3].token if i % 2 else secrets.token_urlsafe(24)
        assert client.get(f"/api/p/{token}/session", REMOTE_ADDR="203.0.113.5").status_code in (200, 404)
    assert client.get(f"/api/p/{participants[0].token}/session", REMOTE_ADDR="203.0.113.5").status_code == 429
    assert client.get(f"/api/p/{participants[0].token}/session", REMOTE_ADDR="203.0.113.6").status_code == 200
    # The participant's pages outside the token routes (landing, start) are not limited here.
    assert client.get(f"/s/{study.slug}/", REMOTE_ADDR="203.0.113.5").status_code == 200


@pytest.mark.django_db
def test_forwarded_addresses_count_only_behind_a_trusted_proxy(client, study, settings, one_rate_window):
    # One way of changing settings per test: the settings fixture and override_settings do not nest.
    settings.PARTICIPANT_RATE_LIMIT_PER_TOKEN = 0
    settings.PARTICIPANT_RATE_LIMIT_PER_IP = 3
    participant = arrive(client, study)
    url = f"/api/p/{participant.token}/session"
    # Not trusted (the default): a client cannot escape its bucket by inventing X-Forwarded-For.
    for i in range(3):
        assert client.get(url, HTTP_X_FORWARDED_FOR=f"198.51.100.{i}").status_code == 200
    assert client.get(url, HTTP_X_FORWARDED_FOR="198.51.100.99").status_code == 429
    # Behind one trusted proxy, the address it appended is the client; anything left of it is not.
    settings.TRUSTED_PROXY_COUNT = 1
    cache.clear()
    proxy = {"REMOTE_ADDR": "10.0.0.2"}
    for spoof in ("1.1.1.1", "2.2.2.2", "3.3.3.3"):
        assert client.get(url, HTTP_X_FORWARDED_FOR=f"{spoof}, 192.0.2.10", **proxy).status_code == 200
    assert client.get(url, HTTP_X_FORWARDED_FOR="4.4.4.4, 192.0.2.10", **proxy).status_code == 429
    assert client.get(url, HTTP_X_FORWARDED_FOR="192.0.2.11", **proxy).status_code == 200


def test_client_address():
    factory = RequestFactory()
    request = factory.get("/", REMOTE_ADDR="10.0.0.2", HTTP_X_FORWARDED_FOR="6.6.6.6, 203.0.113.1, 10.0.0.1")
    with override_settings(TRUSTED_PROXY_COUNT=0):
        assert ratelimit.client_address(request) == "10.0.0.2"
    with override_settings(TRUSTED_PROXY_COUNT=1):
        assert ratelimit.client_address(request) == "10.0.0.1"
    with override_settings(TRUSTED_PROXY_COUNT=2):
        assert ratelimit.client_address(request) == "203.0.113.1"
    with override_settings(TRUSTED_PROXY_COUNT=5):
        assert ratelimit.client_address(request) == "6.6.6.6"
    with override_settings(TRUSTED_PROXY_COUNT=1):
        assert ratelimit.client_address(factory.get("/", REMOTE_ADDR="10.0.0.2")) == "10.0.0.2"


@pytest.mark.django_db
def test_the_default_limits_let_a_brisk_participant_through(client, job, settings):
    settings.PARTICIPANT_RATE_LIMIT_PER_TOKEN = 120
    settings.PARTICIPANT_RATE_LIMIT_PER_IP = 600
    study = make_study(job, n_practice=3, n_main=18, catch_ratio=1 / 9)
    participant = arrive(client, study)
    client.get(f"/p/{participant.token}/")
    through_instructions(client, participant)
    answered = 0
    while True:
        status, batch = api(client, participant, "trials?limit=1")  # the most requests a client could make
        assert status == 200
        if not batch["trials"]:
            break
        for trial in batch["trials"]:
            api(client, participant, "session")
            assert answer(client, participant, trial["id"], correct_choice(trial["id"]))[0] == 201
            answered += 1
    assert answered == 21
    assert api(client, participant, "questionnaire", {"answers": {}})[0] == 200


def test_main_trials_keep_clear_of_the_pair_practice_gave_feedback_on():
    from studyapp.trials import UnitExemplars, build_trial_list

    units = [UnitExemplars(unit_id=u, references_max=[f"u{u}-rmax{i}" for i in range(9)],
                           references_min=[f"u{u}-rmin{i}" for i in range(9)],
                           queries_max=[f"u{u}-qmax{i}" for i in range(5)],
                           queries_min=[f"u{u}-qmin{i}" for i in range(5)]) for u in range(3)]
    for seed in range(20):
        specs = build_trial_list(units, n_practice=3, n_main=12, catch_ratio=0, reference_type="natural", seed=seed)
        practiced = {q for s in specs if s.block == "practice" for q in (s.query_a, s.query_b)}
        main = {q for s in specs if s.block == "main" for q in (s.query_a, s.query_b)}
        assert practiced and not practiced & main
    # Only when the plan needs every pair does the practice pair come back, last.
    specs = build_trial_list(units, n_practice=3, n_main=15, catch_ratio=0, reference_type="natural", seed=0)
    assert sum("qmax0" in s.query_a + s.query_b for s in specs if s.block == "main") == 3


@pytest.mark.redis
@pytest.mark.django_db
def test_redis_counts_both_limits_in_one_round_trip_and_spares_tokens_once_the_address_is_over(
        client, study, settings, one_rate_window):
    """The production cache: the counting script, not the local-memory fallback."""
    import redis as redis_py
    from django.core.cache import caches

    url = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/10")
    settings.CACHES = {"default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": url,
                                   "KEY_PREFIX": f"t{secrets.token_hex(4)}"}}
    settings.PARTICIPANT_RATE_LIMIT_PER_IP, settings.PARTICIPANT_RATE_LIMIT_PER_TOKEN = 6, 3
    server = redis_py.Redis.from_url(url)
    assert ratelimit._redis() is not None  # the script path, not the local-memory fallback
    try:
        participant = arrive(client, study)
        url_session = f"/api/p/{participant.token}/session"
        statuses = [client.get(url_session, REMOTE_ADDR="198.51.100.7").status_code for _ in range(4)]
        assert statuses == [200, 200, 200, 429]  # the token's limit
        for _ in range(2):
            assert client.get(f"/api/p/{secrets.token_urlsafe(24)}/session", REMOTE_ADDR="198.51.100.7").status_code == 404
        guessed = secrets.token_urlsafe(24)
        assert client.get(f"/api/p/{guessed}/session", REMOTE_ADDR="198.51.100.7").status_code == 429  # the address's
        prefix = settings.CACHES["default"]["KEY_PREFIX"]
        keys = server.keys(f"{prefix}:*:ratelimit:*")
        # one address counter and three token counters (the participant's and two guesses); the guess
        # refused by the address limit left no counter of its own
        assert len(keys) == 4 and all(0 < server.ttl(k) <= 61 for k in keys)
        assert int(server.get(next(k for k in keys if b":ip:" in k))) == 7
    finally:
        for key in server.keys(f"{settings.CACHES['default']['KEY_PREFIX']}:*"):
            server.delete(key)
        caches["default"].close()


@pytest.mark.redis
def test_the_rate_limits_build_one_redis_client_per_cache_backend_not_one_per_request(settings):
    url = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/10")
    settings.CACHES = {"default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": url}}
    first = ratelimit._redis()[1]
    assert ratelimit._redis()[1] is first
    # Changed settings bring a new backend, with pools of its own: its client is a new one.
    settings.CACHES = {"default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": url,
                                   "KEY_PREFIX": "other"}}
    assert ratelimit._redis()[1] is not first
