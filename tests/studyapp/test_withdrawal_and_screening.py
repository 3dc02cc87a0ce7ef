"""Withdrawal by recruitment id (delete_participant, the admin's search) and the screening API (screen-out,
virtual-chinrest measures, the image's visual angle)."""

import io
import math

import pytest
from django.core.management import CommandError, call_command

from studyapp import screening
from studyapp.export import response_frame
from studyapp.models import Participant, ProlificAction, Response, StudyChange, Trial
from studyapp.monitor import study_monitor
from tests.studyapp.helpers import api, arrive, make_study, play_to_the_questionnaire


def _counts():
    return (
        Participant.objects.count(),
        Trial.objects.count(),
        Response.objects.count(),
        ProlificAction.objects.count(),
    )


@pytest.mark.django_db
def test_delete_participant_removes_every_row_of_that_person_and_nothing_else(client, job):
    study = make_study(job, recruitment="prolific")
    gone = play_to_the_questionnaire(client, study, pid="withdraws")
    stays = play_to_the_questionnaire(client, study, pid="stays")
    for p in (gone, stays):
        ProlificAction.objects.create(
            study=study, kind="approve", submission_id=p.recruitment_info["SESSION_ID"], state="done"
        )
    # The test client's links give both the same SESSION_ID: give the one who stays their own.
    stays.recruitment_info = {**stays.recruitment_info, "SESSION_ID": "other"}
    stays.save(update_fields=["recruitment_info"])
    ProlificAction.objects.filter(pk=ProlificAction.objects.order_by("pk").last().pk).update(submission_id="other")
    setup = ProlificAction.objects.create(
        study=study,
        kind="bonus_setup",
        bulk_id="b1",
        state="done",
        request={
            "body": {"study_id": "s1", "csv_bonuses": "x,0.10\nother,0.20"},
            "bonuses": {"x": "0.10", "other": "0.20"},
        },
    )
    before = {
        "stays": (Trial.objects.filter(participant=stays).count(), Response.objects.filter(participant=stays).count())
    }
    n_gone = (Trial.objects.filter(participant=gone).count(), Response.objects.filter(participant=gone).count())
    total = _counts()
    with pytest.raises(CommandError, match="no participant"):
        call_command("delete_participant", study.slug, "--prolific-pid", "nobody", stdout=io.StringIO())
    with pytest.raises(CommandError, match="no participant"):
        call_command("delete_participant", study.slug, "--worker-id", "withdraws", stdout=io.StringIO())
    assert _counts() == total
    call_command("delete_participant", study.slug, "--prolific-pid", "withdraws", stdout=io.StringIO())
    assert not Participant.objects.filter(pk=gone.pk).exists()
    assert not Trial.objects.filter(participant_id=gone.pk).exists()
    assert not Response.objects.filter(participant_id=gone.pk).exists()
    assert _counts() == (total[0] - 1, total[1] - n_gone[0], total[2] - n_gone[1], total[3] - 1)
    assert (
        Trial.objects.filter(participant=stays).count(),
        Response.objects.filter(participant=stays).count(),
    ) == before["stays"]
    assert ProlificAction.objects.filter(submission_id="other").exists()
    setup.refresh_from_db()
    assert setup.request["bonuses"] == {"other": "0.20"} and setup.request["body"]["csv_bonuses"] == "other,0.20"
    (audit,) = StudyChange.objects.filter(study=study, field="withdrawal")
    assert "withdraws" not in audit.new + audit.old and "deleted" in audit.new
    assert set(response_frame(study)["participant"]) == {stays.pseudonym}
    assert sum(row["started"] for row in study_monitor(study)) == 1


@pytest.mark.django_db
def test_the_admin_finds_a_participant_by_recruitment_id_and_withdraws_them(admin_client, client, job):
    study = make_study(job, recruitment="prolific")
    wanted = arrive(client, study, pid="5f1a-find-me")
    arrive(client, study, pid="5f1a-someone-else")
    page = admin_client.get("/admin/studyapp/participant/", {"q": "5f1a-find-me"}).content.decode()
    assert wanted.pseudonym in page and page.count("P0") >= 1
    assert Participant.objects.exclude(pk=wanted.pk).get().pseudonym not in page
    response = admin_client.post(
        "/admin/studyapp/participant/", {"action": "withdraw", "_selected_action": [wanted.pk]}
    )
    assert response.status_code == 302
    assert not Participant.objects.filter(pk=wanted.pk).exists() and Participant.objects.count() == 1
    assert StudyChange.objects.filter(study=study, field="withdrawal").count() == 1


@pytest.mark.django_db
def test_the_chinrest_measures_are_stored_exported_and_a_distance_out_of_range_screens_out(client, job):
    study = make_study(
        job,
        recruitment="prolific",
        virtual_chinrest=True,
        min_viewing_distance_cm=40,
        max_viewing_distance_cm=90,
        screen_out_code="SO",
        image_visual_angle_deg=4,
        screen_out_url="https://app.prolific.com/submissions/complete?cc={code}",
    )
    near = arrive(client, study, pid="near")
    api(client, near, "consent", {"consent": True})
    status, session = api(client, near, "calibration", {"px_per_cm": 37.8, "viewing_distance_cm": 25})
    assert status == 200 and session["phase"] == "screened_out"
    assert session["screen_out"] == {
        "url": "https://app.prolific.com/submissions/complete?cc=SO",
        "code": "SO",
        "reason": "chinrest_failed",
    }
    assert api(client, near, "calibration", {"px_per_cm": 37.8, "viewing_distance_cm": 60})[0] == 400

    fine = play_to_the_questionnaire(client, study, pid="fine")
    size = screening.pixels_for_angle(4, 37.8, 60)
    status, session = api(client, fine, "calibration", {"px_per_cm": 37.8, "viewing_distance_cm": 60, "image_px": size})
    assert status == 200 and session["calibration"] == {"px_per_cm": 37.8, "viewing_distance_cm": 60}
    assert session["screening"]["image_visual_angle_deg"] == 4
    frame = response_frame(study)
    assert set(frame["px_per_cm"]) == {37.8} and set(frame["viewing_distance_cm"]) == {60}
    assert math.isclose(frame["image_size_deg"].iloc[0], 4, rel_tol=1e-9)
    # 2·atan(w / 2d): a 1 cm wide image at 57.3 cm subtends about 1°
    assert math.isclose(screening.visual_angle_deg(37.8, 37.8, 57.29), 1.0, rel_tol=1e-3)


@pytest.mark.django_db
def test_screen_out_refuses_a_reason_the_study_does_not_check_and_a_participant_in_the_main_trials(client, job):
    study = make_study(job, recruitment="prolific", screen_out_code="SO")
    p = arrive(client, study, pid="phone")
    status, body = api(client, p, "screen-out", {"reason": "mobile_device"})
    assert status == 409 and "admits phones" in body["detail"]
    assert api(client, p, "screen-out", {"reason": "bored"})[0] == 400
    assert api(client, p, "screen-out", {"reason": {"nested": 1}})[0] == 400
    done = play_to_the_questionnaire(client, study, pid="late")
    assert api(client, done, "screen-out", {"reason": "window_too_small"})[0] == 409
    assert Participant.objects.filter(status="screened_out").count() == 0
    assert screening.is_mobile_agent("Mozilla/5.0 (iPad; CPU OS 17_0 like Mac OS X)")
    assert not screening.is_mobile_agent("Mozilla/5.0 (X11; Linux x86_64) Chrome/120.0")
