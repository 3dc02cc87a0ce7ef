"""Running a study on Prolific from launch to payment: six simulated participants with known Prolific ids,
`prolific_review`'s decisions and bonuses from Prolific's export, and the same through a local fake of
Prolific's API (tests/studyapp/prolific_fake.py), with faults between bonus set-up, payment and record."""

import csv
import io
import uuid
from datetime import timedelta
from decimal import Decimal

import pytest
from django.core.management import CommandError, call_command
from django.utils import timezone

from studyapp import assignment, prolific, prolific_api
from studyapp.models import Participant, ProlificAction, Response, Trial
from tests.studyapp.helpers import api, make_study, through_instructions
from tests.studyapp.prolific_fake import FORBIDDEN_TOKEN, TOKEN, FakeProlific

PROLIFIC_STUDY = "64f0c0ffee0000000000aaaa"
PIDS = {
    "good": "5f1a00000000000000000001",
    "catch": "5f1a00000000000000000002",
    "flagged": "5f1a00000000000000000003",
    "timeout": "5f1a00000000000000000004",
    "screened": "5f1a00000000000000000005",
    "absent": "5f1a00000000000000000006",
}
SUBMISSIONS = {who: f"sub-{who}" for who in PIDS}
PROLIFIC_STATUS = {
    "good": "AWAITING REVIEW",
    "catch": "AWAITING REVIEW",
    "flagged": "AWAITING REVIEW",
    "timeout": "ACTIVE",
    "screened": "AWAITING REVIEW",
    "absent": "AWAITING REVIEW",
}
PER_CORRECT, CAP = Decimal("0.05"), Decimal("0.30")


def _arrive(client, study, who):
    response = client.post(
        f"/s/{study.slug}/start",
        {"PROLIFIC_PID": PIDS[who], "STUDY_ID": PROLIFIC_STUDY, "SESSION_ID": SUBMISSIONS[who]},
    )
    assert response.status_code == 302, response.content
    return Participant.objects.get(token=response["Location"].rstrip("/").split("/")[-1])


def _play(client, participant, choose, webdriver=False):
    """Answer every trial, `choose(trial)` giving the choice, then send the questionnaire."""
    through_instructions(client, participant)
    while True:
        _, batch = api(client, participant, "trials?limit=6")
        if not batch["trials"]:
            break
        for payload in batch["trials"]:
            trial = Trial.objects.get(pk=payload["id"])
            status, _ = api(
                client,
                participant,
                "responses",
                {
                    "trial": trial.pk,
                    "idempotency_key": str(uuid.uuid4()),
                    "choice": choose(trial),
                    "confidence": 2,
                    "rt_ms": 900.0,
                    "webdriver": webdriver,
                },
            )
            assert status == 201
    assert api(client, participant, "questionnaire", {"answers": {}})[0] == 200


def _wrong(trial):
    return "b" if trial.correct_query == "a" else "a"


@pytest.fixture
def six(client, job):
    """The study and its six people: one completes well, one fails the catch trials, one is flagged (a
    browser driven by automation), one times out, one is screened out, one never arrives."""
    study = make_study(
        job,
        recruitment="prolific",
        n_main=9,
        catch_ratio=1 / 9,
        bonus_per_correct=PER_CORRECT,
        bonus_cap=CAP,
        screen_out_code="SCREENOUT1",
        screen_out_url="https://app.prolific.com/submissions/complete?cc={code}",
        # the simulated people answer at machine speed and read no instructions: only the
        # rules under test apply
        min_instructions_seconds=0,
        max_fast_answer_share=None,
        flag_client_time=False,
    )
    people = {}
    people["good"] = _arrive(client, study, "good")
    _play(client, people["good"], lambda t: t.correct_query)
    people["catch"] = _arrive(client, study, "catch")
    _play(client, people["catch"], lambda t: _wrong(t) if t.kind == "catch" else t.correct_query)
    people["flagged"] = _arrive(client, study, "flagged")
    _play(client, people["flagged"], lambda t: t.correct_query, webdriver=True)
    people["timeout"] = _arrive(client, study, "timeout")
    through_instructions(client, people["timeout"])
    Participant.objects.filter(pk=people["timeout"].pk).update(
        started_at=timezone.now() - timedelta(minutes=study.time_limit_minutes + 1)
    )
    assert assignment.expire_stale_participants(study) == 1
    people["screened"] = _arrive(client, study, "screened")
    api(client, people["screened"], "consent", {"consent": True})
    status, session = api(client, people["screened"], "screen-out", {"reason": "window_too_small"})
    assert status == 200 and session["phase"] == "screened_out"
    assert session["screen_out"]["url"] == "https://app.prolific.com/submissions/complete?cc=SCREENOUT1"
    for p in people.values():
        p.refresh_from_db()
    return study, people


def _export_csv(headers="prolific"):
    """Prolific's submissions export, with its web app's headers or the API's snake_case names."""
    names = (
        [
            "Submission id",
            "Participant id",
            "Status",
            "Custom study tncs accepted at",
            "Started at",
            "Completed at",
            "Reviewed at",
            "Archived at",
            "Time taken",
            "Completion code",
            "Total approvals",
        ]
        if headers == "prolific"
        else ["id", "participant_id", "status", "started_at", "completed_at", "study_code"]
    )
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(names)
    for who in PIDS:
        row = {
            "Submission id": SUBMISSIONS[who],
            "id": SUBMISSIONS[who],
            "Participant id": PIDS[who],
            "participant_id": PIDS[who],
            "Status": PROLIFIC_STATUS[who],
            "status": PROLIFIC_STATUS[who],
            "Started at": "2026-12-07 10:00:00.000000",
            "started_at": "2026-12-07T10:00:00Z",
            "Completion code": "C0DE",
            "study_code": "C0DE",
        }
        writer.writerow([row.get(n, "") for n in names])
    return out.getvalue()


def _correct_main(participant):
    return Response.objects.filter(participant=participant, trial__kind="main", correct=True).count()


def expected(people):
    good_bonus = min(CAP, PER_CORRECT * _correct_main(people["good"]))
    return {
        "good": ("approve", good_bonus),
        "catch": ("reject", Decimal(0)),
        "flagged": ("review", Decimal(0)),
        "timeout": ("return", Decimal(0)),
        "screened": ("review", Decimal(0)),
        "absent": ("review", Decimal(0)),
    }


@pytest.mark.django_db
@pytest.mark.parametrize("headers", ["prolific", "api"])
def test_prolific_review_decides_each_of_six_people_and_their_bonus(six, tmp_path, headers):
    study, people = six
    path = tmp_path / "submissions.csv"
    path.write_text(_export_csv(headers))
    out = io.StringIO()
    call_command(
        "prolific_review", study.slug, "--submissions", str(path), "--out", str(tmp_path / "review"), stdout=out
    )
    with (tmp_path / "review" / "decisions.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == prolific.DECISIONS_COLUMNS
    got = {r["participant_id"]: (r["decision"], Decimal(r["bonus"] or 0), r["reason"]) for r in rows}
    want = expected(people)
    assert want["good"][1] > 0
    for who, (decision, bonus) in want.items():
        assert got[PIDS[who]][:2] == (decision, bonus), who
    assert "catch trials 0/1 correct" in got[PIDS["catch"]][2]
    assert "flag_webdriver" in got[PIDS["flagged"]][2]
    assert got[PIDS["absent"]][2].startswith("no data")
    assert "screened out (window_too_small)" in got[PIDS["screened"]][2]
    assert (tmp_path / "review" / "approve.txt").read_text() == f"{PIDS['good']}\n"
    assert (tmp_path / "review" / "bonuses.csv").read_text().strip() == f"{PIDS['good']},{want['good'][1]:.2f}"
    # A dry run: nothing recorded, and what would be sent is printed.
    assert not ProlificAction.objects.exists()
    assert "dry run" in out.getvalue() and "would send: POST submissions/sub-good/transition/" in out.getvalue()


def _fake():
    return FakeProlific(
        [
            {
                "id": SUBMISSIONS[w],
                "participant_id": PIDS[w],
                "status": PROLIFIC_STATUS[w],
                "study_id": PROLIFIC_STUDY,
                "started_at": "2026-12-07T10:00:00Z",
            }
            for w in PIDS
        ]
    )


EXPECTED_REQUESTS = [
    ("POST", "/api/v1/submissions/sub-good/transition/"),
    ("POST", "/api/v1/submissions/sub-catch/transition/"),
    ("POST", "/api/v1/submissions/sub-timeout/request-return/"),
    ("POST", "/api/v1/submissions/bonus-payments/"),
]


def _run(fake, study, *flags, token=TOKEN, monkeypatch):
    monkeypatch.setenv("PROLIFIC_API_TOKEN", token)
    monkeypatch.setenv("PROLIFIC_API_URL", fake.base_url)
    out = io.StringIO()
    call_command("prolific_review", study.slug, "--out", str(fake.tmp / "review"), *flags, stdout=out)
    return out.getvalue()


@pytest.mark.django_db
def test_apply_and_pay_send_each_request_once_through_the_api(six, tmp_path, monkeypatch):
    study, people = six
    with _fake() as fake:
        fake.tmp = tmp_path
        fake.page_size = 4  # six submissions: two pages
        dry = _run(fake, study, monkeypatch=monkeypatch)
        assert fake.sent() == [] and "would send" in dry
        _run(fake, study, "--apply", "--pay-bonuses", monkeypatch=monkeypatch)
        sent = fake.sent()
        bulk = next(iter(fake.setups))
        assert sent == [*EXPECTED_REQUESTS, ("POST", f"/api/v1/bulk-bonus-payments/{bulk}/pay/")]
        assert len(fake.sent("GET")) == 4  # the listing, two pages, in each run
        bodies = {p: b for m, p, b in fake.requests if m == "POST"}
        reject = bodies["/api/v1/submissions/sub-catch/transition/"]
        assert reject["action"] == "REJECT" and reject["rejection_category"] == "FAILED_CHECK"
        assert len(reject["message"]) >= 100 and "0 of 1" in reject["message"]
        assert bodies["/api/v1/submissions/bonus-payments/"]["study_id"] == PROLIFIC_STUDY
        good_bonus = expected(people)["good"][1]
        assert dict(fake.paid) == {"sub-good": good_bonus}
        assert fake.submissions["sub-good"]["status"] == "APPROVED"
        assert fake.submissions["sub-catch"]["status"] == "REJECTED"
        assert fake.submissions["sub-timeout"]["return_requested"]
        # Recorded with outcomes; a rerun sends nothing again.
        assert set(ProlificAction.objects.values_list("kind", "state")) == {
            (k, "done") for k in ("approve", "reject", "return", "bonus_setup", "bonus_pay")
        }
        _run(fake, study, "--apply", "--pay-bonuses", monkeypatch=monkeypatch)
        assert fake.sent() == sent
        assert dict(fake.paid) == {"sub-good": good_bonus}


def _reviewer(study, fake, checkpoint=None, sleeps=None):
    client = prolific_api.Client(
        TOKEN, base_url=fake.base_url, sleep=(sleeps.append if sleeps is not None else lambda s: None)
    )
    kwargs = {"checkpoint": checkpoint} if checkpoint else {}
    return prolific_api.Reviewer(study, client, out=lambda line: None, **kwargs)


class Crash(Exception):
    pass


def _crash_at(name):
    def checkpoint(at):
        if at == name:
            raise Crash(at)

    return checkpoint


def _decisions(study):
    return prolific.decide(study, prolific.read_submissions(_export_csv()))


def _review(study, fake, checkpoint=None):
    reviewer = _reviewer(study, fake, checkpoint)
    decisions = _decisions(study)
    reviewer.transitions(decisions, send=True)
    reviewer.bonuses(decisions, send=True)
    return reviewer.report


@pytest.mark.django_db
def test_a_crash_between_bonus_setup_and_payment_pays_that_setup_once_on_the_rerun(six):
    study, people = six
    with _fake() as fake:
        with pytest.raises(Crash):
            _review(study, fake, _crash_at("setup_recorded"))
        assert fake.sent() == EXPECTED_REQUESTS and not fake.paid
        _review(study, fake)
        (bulk,) = fake.setups
        assert fake.sent() == [*EXPECTED_REQUESTS, ("POST", f"/api/v1/bulk-bonus-payments/{bulk}/pay/")]
        assert dict(fake.paid) == {"sub-good": expected(people)["good"][1]}
        _review(study, fake)
        assert len(fake.sent()) == 5


@pytest.mark.django_db
def test_a_crash_before_the_setup_is_recorded_sets_up_anew_and_pays_once(six):
    study, people = six
    with _fake() as fake:
        with pytest.raises(Crash):
            _review(study, fake, _crash_at("setup_sent"))
        _review(study, fake)
        assert len(fake.setups) == 2  # the first set-up's answer was lost; it is never paid
        pays = [p for _, p in fake.sent() if p.endswith("/pay/")]
        assert len(pays) == 1
        assert dict(fake.paid) == {"sub-good": expected(people)["good"][1]}
        assert ProlificAction.objects.filter(kind="bonus_setup", state="abandoned").count() == 1


@pytest.mark.django_db
@pytest.mark.parametrize("fault", ["crash_after_pay", "500_after_paying", "timeout"])
def test_a_payment_whose_outcome_is_unknown_is_never_sent_again(six, fault, monkeypatch):
    study, people = six
    with _fake() as fake:
        if fault == "crash_after_pay":
            with pytest.raises(Crash):
                _review(study, fake, _crash_at("pay_sent"))
        else:
            if fault == "500_after_paying":
                fake.fail("pay", 500, when="after")
            else:

                def no_answer(*args, **kwargs):
                    raise TimeoutError("timed out")

                real = prolific_api.urllib.request.urlopen

                def urlopen(request, timeout=None):
                    if request.full_url.endswith("/pay/"):
                        real(request, timeout=timeout).close()  # it reaches Prolific, the answer is lost
                        no_answer()
                    return real(request, timeout=timeout)

                monkeypatch.setattr(prolific_api.urllib.request, "urlopen", urlopen)
            report = _review(study, fake)
            assert len(report.unknown) == 1
        monkeypatch.undo()
        for _ in range(2):
            report = _review(study, fake)
            assert len(report.unknown) == 1 and "not sent again" in report.unknown[0][1]
        pays = [p for _, p in fake.sent() if p.endswith("/pay/")]
        assert len(pays) == 1
        assert dict(fake.paid) == {"sub-good": expected(people)["good"][1]}
        # A person checks on Prolific and records what they found; runs stop reporting it.
        (bulk,) = fake.setups
        call_command("prolific_review", study.slug, "--confirm-paid", bulk, stdout=io.StringIO())
        assert _review(study, fake).unknown == []
        assert len([p for _, p in fake.sent() if p.endswith("/pay/")]) == 1


@pytest.mark.django_db
def test_a_payment_prolific_refused_is_sent_again(six):
    study, people = six
    with _fake() as fake:
        fake.fail("pay", 400)
        report = _review(study, fake)
        assert len(report.failed) == 1 and not fake.paid
        _review(study, fake)
        assert len([p for _, p in fake.sent() if p.endswith("/pay/")]) == 2
        assert dict(fake.paid) == {"sub-good": expected(people)["good"][1]}
        assert ProlificAction.objects.filter(kind="bonus_pay").count() == 1


@pytest.mark.django_db
def test_a_429_waits_for_retry_after_and_a_5xx_on_a_transition_is_retried_on_the_next_run(six):
    study, _ = six
    with _fake() as fake:
        fake.fail("setup", 429, headers={"Retry-After": "7"})
        fake.fail("transition", 503)
        sleeps = []
        reviewer = _reviewer(study, fake, sleeps=sleeps)
        decisions = _decisions(study)
        reviewer.transitions(decisions, send=True)
        reviewer.bonuses(decisions, send=True)
        assert sleeps == [7.0]
        assert len(reviewer.report.unknown) == 1  # the first approval: 503
        assert fake.submissions["sub-good"]["status"] == "AWAITING REVIEW"
        _review(study, fake)
        assert fake.submissions["sub-good"]["status"] == "APPROVED"
        assert ProlificAction.objects.filter(kind="approve").count() == 1


@pytest.mark.django_db
@pytest.mark.parametrize("token, words", [("wrong", "401"), (FORBIDDEN_TOKEN, "403")])
def test_401_and_403_stop_with_a_clear_error(six, tmp_path, monkeypatch, token, words):
    study, _ = six
    with _fake() as fake:
        fake.tmp = tmp_path
        with pytest.raises(CommandError, match=words) as caught:
            _run(fake, study, "--apply", token=token, monkeypatch=monkeypatch)
        assert "token" in str(caught.value)
        assert not ProlificAction.objects.exists()


@pytest.mark.django_db
def test_apply_without_a_token_sends_nothing(six, tmp_path, monkeypatch):
    study, _ = six
    monkeypatch.delenv("PROLIFIC_API_TOKEN", raising=False)
    path = tmp_path / "s.csv"
    path.write_text(_export_csv())
    with pytest.raises(CommandError, match="PROLIFIC_API_TOKEN"):
        call_command("prolific_review", study.slug, "--submissions", str(path), "--apply")


def test_a_submissions_file_without_ids_is_refused():
    with pytest.raises(prolific.SubmissionsFileError, match="participant id"):
        prolific.read_submissions("Name,Status\nx,APPROVED\n")


@pytest.mark.django_db
def test_screened_out_frees_the_slot_at_once_and_the_monitor_and_export_count_it(six):
    from studyapp.export import response_frame
    from studyapp.monitor import study_monitor

    study, people = six
    screened = people["screened"]
    assert screened.status == "screened_out" and screened.screen_out_reason == "window_too_small"
    assert not Participant.objects.filter(pk=screened.pk, status__in=assignment.OCCUPYING).exists()
    assert sum(row["screened_out"] for row in study_monitor(study)) == 1
    frame = response_frame(study)
    assert {"px_per_cm", "viewing_distance_cm", "image_size_deg"} <= set(frame.columns)
