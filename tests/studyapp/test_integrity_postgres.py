"""Data a researcher can trust, on PostgreSQL (the production database and its one-statement answer
path): the times that decide exclusions are the server's, automation and inattention are flagged and
exported, bad input is refused with the API's JSON error and cannot break the export or the admin, and
every error under /api/ has the documented shape (docs/contracts.md §2 and §3)."""
import json
import re
import uuid

import pandas as pd
import pytest
from django.db import connection
from django.test import Client

from studyapp import participation
from studyapp.export import response_frame
from studyapp.models import Participant, Trial
from tests.studyapp.helpers import api, arrive, make_job, make_study

pytestmark = [pytest.mark.postgres, pytest.mark.django_db]


def play(client, clock, study, *, reading_ms=20000, reading_s=None, answer_s=3.0, interaction=None):
    """One participant through the API with the server's clock moving `reading_s` (default: the claimed
    reading time) before the instructions' end and `answer_s` before each answer; `interaction(i)` gives
    the fields the i-th answer reports about the browser."""
    participant = arrive(client, study, pid=str(uuid.uuid4()))
    assert api(client, participant, "consent", {"consent": True})[0] == 200
    clock.advance(reading_ms / 1000 + 0.5 if reading_s is None else reading_s)
    assert api(client, participant, "instructions", {"reading_ms": reading_ms})[0] == 200
    i = 0
    while True:
        trials = api(client, participant, "trials?limit=50")[1]["trials"]
        if not trials:
            break
        for shown in trials:
            clock.advance(answer_s)
            body = {"trial": shown["id"], "idempotency_key": str(uuid.uuid4()),
                    "choice": Trial.objects.get(pk=shown["id"]).correct_query, "confidence": 2,
                    "rt_ms": 900.0, **(interaction(i) if interaction else {})}
            status, reply = api(client, participant, "responses", body)
            assert status == 201, reply
            i += 1
    assert api(client, participant, "questionnaire", {"answers": {"strategy": "shapes"}})[0] == 200
    return participant


def verdicts(study, participant):
    frame = response_frame(study)
    rows = frame[frame["participant"] == participant.pseudonym]
    assert len(rows) and (rows.nunique(dropna=False)[["excluded", "flagged"]] == 1).all()
    return rows.iloc[0], rows


# ------------------------------------------------------------------------------- server-side timing
def test_a_participant_who_fakes_reading_ms_is_caught_by_the_servers_clock(client, clock):
    study = make_study(make_job(), min_instructions_seconds=15)
    honest = play(client, clock, study, reading_ms=20000)
    faker = play(client, clock, study, reading_ms=20000, reading_s=0.4)

    row, _ = verdicts(study, faker)
    assert row["instructions_ms"] == 20000  # the client's figure stays, as a secondary column
    assert row["server_instructions_ms"] == pytest.approx(400, abs=1)
    assert row["excl_instructions_time"] == True and row["excluded"] == True  # noqa: E712
    assert row["flag_client_time"] == True and row["flagged"] == True  # noqa: E712
    row, _ = verdicts(study, honest)
    assert row["server_instructions_ms"] == pytest.approx(20500, abs=1)
    assert row["excl_instructions_time"] == False and row["excluded"] == False  # noqa: E712
    assert row["flagged"] == False  # noqa: E712


def test_answers_faster_than_the_response_lock_exclude_and_each_arrival_is_the_servers(client, clock):
    study = make_study(make_job(), response_lock_ms=1500)
    script = play(client, clock, study, answer_s=0.2)
    person = play(client, clock, study, answer_s=2.5)
    row, rows = verdicts(study, script)
    assert row["excl_answer_interval"] == True and row["excluded"] == True  # noqa: E712
    assert rows["server_interval_ms"].dropna().round().eq(200).all()
    assert rows["server_interval_ms"].isna().sum() == 1  # the first answer has no previous one
    row, rows = verdicts(study, person)
    assert row["excl_answer_interval"] == False and row["excluded"] == False  # noqa: E712
    assert rows["trial_served"].notna().all()
    # The threshold is a study setting: a longer minimum interval catches the slower one too.
    study.min_answer_interval_ms = 3000
    study.save()
    assert verdicts(study, person)[0]["excl_answer_interval"] == True  # noqa: E712


# ------------------------------------------------------------------------------------ the flags
@pytest.mark.parametrize("path", ["one_statement", "orm"])
def test_interaction_data_and_webdriver_are_stored_and_flag_the_participant(client, clock, monkeypatch, path):
    if path == "orm":
        monkeypatch.setattr(participation, "_answers_in_one_statement", lambda: False)
    study = make_study(make_job(), max_focus_losses=2, max_fullscreen_exits=0)
    hider = play(client, clock, study, interaction=lambda i: {"focus_losses": 1 if i in (4, 6, 8) else 0,
                                                              "fullscreen_exits": 0, "webdriver": False})
    robot = play(client, clock, study, interaction=lambda i: {"focus_losses": 0, "fullscreen_exits": 0,
                                                              "webdriver": True})
    leaver = play(client, clock, study, interaction=lambda i: {"fullscreen_exits": int(i == 5),
                                                               "focus_losses": 0, "webdriver": False})
    calm = play(client, clock, study, interaction=lambda i: {"focus_losses": 0, "fullscreen_exits": 0,
                                                             "webdriver": False})

    row, rows = verdicts(study, hider)
    assert rows["focus_losses"].sum() == 3
    assert row["flag_focus_loss"] == True and row["flagged"] == True  # noqa: E712
    assert row["flag_webdriver"] == False and row["excl_flagged"] == True  # noqa: E712
    row, rows = verdicts(study, robot)
    assert rows["webdriver"].all() and row["flag_webdriver"] == True  # noqa: E712
    assert verdicts(study, leaver)[0]["flag_fullscreen_exit"] == True  # noqa: E712
    row, _ = verdicts(study, calm)
    assert row["flagged"] == False and row["excluded"] == False  # noqa: E712

    # Flagged, not dropped: a study that keeps flagged participants still shows the flags.
    study.exclude_flagged = False
    study.save()
    row, _ = verdicts(study, robot)
    assert row["flagged"] == True and pd.isna(row["excl_flagged"]) and row["excluded"] == False  # noqa: E712


def test_the_monitor_and_the_participant_page_show_each_flagged_participant(admin_client, client, clock):
    study = make_study(make_job())
    robot = play(client, clock, study, interaction=lambda i: {"webdriver": True})
    calm = play(client, clock, study)
    page = admin_client.get(f"/admin/studyapp/study/{study.pk}/monitor/").content.decode()
    table = page.split('id="monitor-participants"')[1]
    assert f'data-participant="{robot.pseudonym}" data-flagged="true"' in table
    assert calm.pseudonym not in table
    change = admin_client.get(f"/admin/studyapp/participant/{robot.pk}/change/").content.decode()
    assert "flag_webdriver" in change and "webdriver: yes" in change


# ------------------------------------------------------------------------------------ bad input
def _deep(levels):
    return "[" * levels + "1" + "]" * levels


def test_a_deeply_nested_questionnaire_is_refused_and_a_stored_one_breaks_nothing(admin_client, client, clock):
    study = make_study(make_job())
    participant = play(client, clock, study)
    fresh = arrive(client, study, pid="deep-1")
    url = f"/api/p/{fresh.token}/questionnaire"
    for levels in (930, 940):
        body = '{"answers": {"q": ' + _deep(levels) + "}}"
        refused = client.post(url, body, content_type="application/json")
        assert refused.status_code == 400 and refused.json()["error"] == "bad_request"
    for answers in ({"q": {"nested": 1}}, {"q": [1]}, {"k" * 65: "x"}, {"q": "x" * 2001},
                    {f"q{i}": 1 for i in range(21)}):
        status, reply = api(client, fresh, "questionnaire", {"answers": answers})
        assert status == 400 and reply["error"] == "bad_request" and reply["detail"]

    # A row stored before these limits: the export and the admin read around it.
    with connection.cursor() as cursor:
        cursor.execute(f"UPDATE {Participant._meta.db_table} SET questionnaire = %s::jsonb WHERE id = %s",
                       ['{"q": ' + _deep(930) + "}", participant.pk])
    exported = admin_client.post("/admin/studyapp/study/", {"action": "export_csv", "_selected_action": [study.pk]})
    assert exported.status_code == 200 and participant.pseudonym in exported.content.decode()
    change = admin_client.get(f"/admin/studyapp/participant/{participant.pk}/change/")
    assert change.status_code == 200 and b"cannot be read back" in change.content
    assert admin_client.get("/admin/studyapp/participant/").status_code == 200


def _browser_with_token(study, pid):
    """A browser as the participant page leaves it: the CSRF cookie set, the token from the page."""
    browser = Client(enforce_csrf_checks=True)
    landing = browser.get(f"/s/{study.slug}/?PROLIFIC_PID={pid}")
    token = re.search(rb'name="csrfmiddlewaretoken" value="([^"]+)"', landing.content).group(1).decode()
    start = browser.post(f"/s/{study.slug}/start", {"PROLIFIC_PID": pid, "csrfmiddlewaretoken": token})
    page = browser.get(start["Location"])
    config = json.loads(re.search(rb'<script id="study-config" type="application/json">(.*?)</script>',
                                  page.content, re.S).group(1))
    return browser, config


@pytest.mark.parametrize("name", ["consent", "instructions", "responses", "questionnaire"])
def test_a_form_body_to_the_api_is_unsupported_media_type_not_a_server_error(name):
    study = make_study(make_job())
    browser, config = _browser_with_token(study, f"form-{name}")
    url = f"{config['api_base']}{name}"
    form = browser.post(url, {"consent": "true", "csrfmiddlewaretoken": config["csrf_token"]},
                        HTTP_X_CSRFTOKEN=config["csrf_token"])
    assert form.status_code == 415 and form["Content-Type"] == "application/json"
    assert form.json()["error"] == "unsupported_media_type" and form.json()["detail"]
    text = browser.post(url, "consent=true", content_type="text/plain", HTTP_X_CSRFTOKEN=config["csrf_token"])
    assert text.status_code == 415 and text.json()["error"] == "unsupported_media_type"


def test_every_error_under_the_api_is_the_documented_json_shape(client):
    study = make_study(make_job())
    participant = arrive(client, study, pid="shape-1")
    base = f"/api/p/{participant.token}/"
    cases = {
        "unknown token": client.get("/api/p/" + "x" * 32 + "/session"),
        "token of the wrong shape": client.get("/api/p/not!a!token/session"),
        "unknown route": client.get(base + "nothing"),
        "unknown API path": client.get("/api/nothing"),
        "GET on a POST route": client.get(base + "consent"),
        "POST on a GET route": client.post(base + "session", "{}", content_type="application/json"),
        "over the upload limit": client.post(base + "consent", '{"consent": true, "pad": "%s"}' % ("x" * 3_000_000),
                                             content_type="application/json"),
        "over the upload limit, as a form": client.post(base + "consent", {"pad": "x" * 3_000_000}),
    }
    for what, response in cases.items():
        assert 400 <= response.status_code < 500, what
        assert response["Content-Type"] == "application/json", what
        body = response.json()
        assert set(body) == {"error", "detail"} and body["error"] and body["detail"], what
    assert cases["unknown token"].status_code == 404 and cases["unknown token"].json()["error"] == "not_found"
    assert cases["GET on a POST route"].status_code == 405 and cases["GET on a POST route"]["Allow"] == "POST"
    assert cases["GET on a POST route"].json()["error"] == "method_not_allowed"
    # Outside the API Django's own pages stay.
    assert client.get("/s/no-such-study/").status_code == 404
    assert not client.get("/s/no-such-study/")["Content-Type"].startswith("application/json")
