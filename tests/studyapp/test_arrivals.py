"""Arrivals at `/s/<slug>/start` (issue 13): a scripted flood must leave the quota open for real
participants. The start form is rate limited per address and per study, a study's recruitment platform is
enforced, slots never consented come back after a short grace, a resume by recruitment id needs the
platform's session id, the monitor shows it all per minute, and arrivals do not queue on one lock."""
import threading
from datetime import timedelta

import psycopg
import pytest
from django.core.cache import cache
from django.db import connection
from django.test import Client
from django.utils import timezone

from studyapp import arrivals, participation
from studyapp.models import Participant, Study
from studyapp.recruitment import Arrival
from tests.studyapp.helpers import make_job, make_study

pytestmark = pytest.mark.postgres


@pytest.fixture(autouse=True)
def fresh_cache():
    cache.clear()
    yield
    cache.clear()


def start(client, study, address="10.0.0.1", **params):
    return client.post(f"/s/{study.slug}/start", params, REMOTE_ADDR=address)


def prolific(pid, session="sess-1"):
    return {"PROLIFIC_PID": pid, "STUDY_ID": "prolific-study", "SESSION_ID": session}


@pytest.mark.django_db
def test_a_flood_from_one_address_is_refused_and_the_quota_stays_open(settings, one_rate_window):
    """Issue 13: 34 POSTs in 2.5 s, dropping the resume cookie each time, filled the demo study."""
    settings.ARRIVAL_RATE_LIMIT_PER_IP = 5
    study = make_study(recruitment=Study.Recruitment.PROLIFIC, participants_per_condition=10)
    statuses = [start(Client(), study, "198.51.100.9", **prolific(f"bot-{i}", f"s{i}")).status_code
                for i in range(40)]
    assert statuses[:5] == [302] * 5 and set(statuses[5:]) == {429}
    refused = start(Client(), study, "198.51.100.9", **prolific("bot-x", "sx"))
    assert refused["Retry-After"].isdigit() and 0 < int(refused["Retry-After"]) <= 60
    assert b"Please try again in" in refused.content
    # A genuine Prolific arrival from elsewhere still gets a slot: 15 of 20 are free.
    assert start(Client(), study, "203.0.113.5", **prolific("genuine", "g1")).status_code == 302
    assert Participant.objects.filter(study=study).count() == 6


@pytest.mark.django_db
def test_a_flood_from_many_addresses_meets_the_per_study_ceiling(settings, one_rate_window):
    settings.ARRIVAL_RATE_LIMIT_PER_STUDY = 4
    study = make_study(participants_per_condition=10)
    statuses = [start(Client(), study, f"10.1.0.{i}").status_code for i in range(6)]
    assert statuses == [302] * 4 + [429] * 2


@pytest.mark.django_db
def test_a_prolific_study_requires_the_prolific_parameters():
    """Issue 13: a Prolific study accepted plain-link arrivals without any recruitment id."""
    study = make_study(recruitment=Study.Recruitment.PROLIFIC)
    plain = start(Client(), study)
    assert plain.status_code == 403 and b"through Prolific only" in plain.content
    incomplete = start(Client(), study, PROLIFIC_PID="p1", STUDY_ID="s")
    assert incomplete.status_code == 400 and b"SESSION_ID" in incomplete.content
    mturk = start(Client(), study, workerId="w1", assignmentId="a1", hitId="h1")
    assert mturk.status_code == 403
    assert not Participant.objects.exists()
    assert start(Client(), study, **prolific("p1")).status_code == 302
    # A plain link only where the study allows it (as the demo does).
    Study.objects.filter(pk=study.pk).update(allow_plain_link=True)
    assert start(Client(), study).status_code == 302


@pytest.mark.django_db
def test_an_mturk_study_needs_an_accepted_assignment():
    study = make_study(recruitment=Study.Recruitment.MTURK)
    preview = start(Client(), study, workerId="w1", assignmentId="ASSIGNMENT_ID_NOT_AVAILABLE", hitId="h1")
    assert preview.status_code == 403 and b"accept the HIT" in preview.content
    assert start(Client(), study, workerId="w1", assignmentId="a1", hitId="h1").status_code == 302


@pytest.mark.django_db
def test_slots_never_consented_come_back_after_the_grace():
    """Issue 13: a flood's slots stayed taken for the whole 60-minute time limit."""
    study = make_study(participants_per_condition=1, consent_grace_minutes=5, time_limit_minutes=60)
    squatters = [participation.start(study, Arrival("link", None, {})) for _ in range(2)]
    with pytest.raises(participation.ParticipationError, match="full"):
        participation.start(study, Arrival("link", None, {}))
    # One of them consented: theirs is a real participation and keeps its slot past the grace.
    participation.give_consent(squatters[0], True)
    Participant.objects.filter(pk__in=[p.pk for p in squatters]).update(
        started_at=timezone.now() - timedelta(minutes=6))
    late = participation.start(study, Arrival("link", None, {}))
    assert late.condition_id == squatters[1].condition_id
    squatters[0].refresh_from_db(), squatters[1].refresh_from_db()
    assert squatters[0].status == "started" and squatters[1].status == "timed_out"
    with pytest.raises(participation.ParticipationError, match="full"):
        participation.start(study, Arrival("link", None, {}))
    assert sum(row["released"] for row in arrivals.per_minute(study)) == 1


@pytest.mark.django_db
def test_a_resume_by_recruitment_id_needs_the_same_platform_session():
    """Issue 13: knowing someone's Prolific ID was enough to take over their unfinished session."""
    study = make_study(recruitment=Study.Recruitment.PROLIFIC)
    owner = Client()
    first = start(owner, study, **prolific("victim", "their-session"))
    assert first.status_code == 302
    thief = start(Client(), study, **prolific("victim", "guessed-session"))
    assert thief.status_code == 403 and b"another session" in thief.content
    assert "Location" not in thief
    # The same platform session resumes, from any browser; the browser holding it resumes anyway.
    assert start(Client(), study, **prolific("victim", "their-session"))["Location"] == first["Location"]
    assert start(owner, study, **prolific("victim", "new-session"))["Location"] == first["Location"]
    assert Participant.objects.count() == 1


@pytest.mark.django_db
def test_the_monitor_shows_arrivals_refusals_and_releases_per_minute(admin_client, settings):
    settings.ARRIVAL_RATE_LIMIT_PER_IP = 2
    study = make_study(participants_per_condition=10)
    for _ in range(5):
        start(Client(), study, "192.0.2.1")
    page = admin_client.get(f"/admin/studyapp/study/{study.pk}/monitor/").content.decode()
    assert "Arrivals per minute" in page
    now = arrivals.per_minute(study)[0]
    assert (now["arrived"], now["refused"], now["released"]) == (5, 3, 0)


@pytest.mark.django_db
def test_a_staff_user_without_permissions_cannot_monitor_or_preview(client, django_user_model):
    """Issue 13: any staff user could open a study's monitor and start a preview participant."""
    study = make_study()
    staff = django_user_model.objects.create_user("assistant", password="x", is_staff=True)
    client.force_login(staff)
    assert client.get(f"/admin/studyapp/study/{study.pk}/monitor/").status_code == 403
    assert client.get(f"/admin/studyapp/study/{study.pk}/preview/").status_code == 403
    condition = study.conditions.first()
    assert client.post(f"/admin/studyapp/study/{study.pk}/preview/", {"condition": condition.pk}).status_code == 403
    assert not Participant.objects.exists()
    from django.contrib.auth.models import Permission

    staff.user_permissions.add(Permission.objects.get(codename="view_study"))
    assert client.get(f"/admin/studyapp/study/{study.pk}/monitor/").status_code == 200
    assert client.get(f"/admin/studyapp/study/{study.pk}/preview/").status_code == 403
    staff.user_permissions.add(Permission.objects.get(codename="change_study"))
    assert client.post(f"/admin/studyapp/study/{study.pk}/preview/", {"condition": condition.pk}).status_code == 302


@pytest.mark.django_db(transaction=True)
def test_an_arrival_does_not_wait_for_another_arrivals_lock():
    """While other transactions hold one condition's slot lock (a slow arrival) and update the study row
    (a researcher saving it; before, every arrival locked that row), an arrival joins another condition
    at once instead of queueing behind them."""
    study = make_study(make_job(bases=("neuron", "pca")), participants_per_condition=5)
    first, second = study.conditions.order_by("pk")
    settings_db = connection.settings_dict
    conninfo = psycopg.conninfo.make_conninfo(host=settings_db["HOST"] or "127.0.0.1", port=settings_db["PORT"] or 5432,
                                              user=settings_db["USER"], dbname=settings_db["NAME"])
    with psycopg.connect(conninfo) as holder:
        holder.execute("SELECT 1 FROM studyapp_study WHERE id = %s FOR NO KEY UPDATE", (study.pk,))
        holder.execute("SELECT 1 FROM studyapp_condition WHERE id = %s FOR UPDATE", (first.pk,))
        outcome = []

        def arrive():
            try:
                with connection.cursor() as cursor:
                    cursor.execute("SET lock_timeout = '3s'")
                outcome.append(participation.start(study, Arrival("link", None, {})))
            except Exception as exc:  # a lock timeout: the arrival queued behind the holder
                outcome.append(exc)
            finally:
                connection.close()

        thread = threading.Thread(target=arrive)
        thread.start()
        # Joined while the first condition's row is still locked. The arrival cannot hang here: an arrival
        # that queued behind the lock ends with the lock timeout's error instead of a participant.
        thread.join()
        holder.rollback()
    assert isinstance(outcome[0], Participant), f"the arrival waited for the locked condition: {outcome}"
    assert outcome[0].condition_id == second.pk


@pytest.mark.django_db
def test_both_links_the_demo_prints_still_start(settings):
    from studyapp.demo import demo_study

    study = demo_study(make_job(bases=("neuron", "pca", "nmf")))
    assert study.recruitment == Study.Recruitment.PROLIFIC
    landing = Client().get(f"/s/{study.slug}/?PROLIFIC_PID=demo-1&STUDY_ID=demo&SESSION_ID=1")
    assert b'name="SESSION_ID" value="1"' in landing.content
    assert start(Client(), study, PROLIFIC_PID="demo-1", STUDY_ID="demo", SESSION_ID="1").status_code == 302
    assert start(Client(), study).status_code == 302
