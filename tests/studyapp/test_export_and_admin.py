import csv
import io
import re
import uuid

import pandas as pd
import pytest

from studyapp.export import COLUMNS, write_export
from studyapp.models import StimulusJob, Study
from tests.studyapp.helpers import answer, api, arrive, correct_choice, through_instructions


def run_participant(client, study, n_answers):
    participant = arrive(client, study, pid=str(uuid.uuid4()))
    through_instructions(client, participant)
    trials = api(client, participant, f"trials?limit={n_answers}")[1]["trials"]
    for trial in trials:
        answer(client, participant, trial["id"], correct_choice(trial["id"]))
    return participant


@pytest.mark.django_db
def test_export_has_the_contract_columns_and_one_row_per_response(client, study, tmp_path):
    run_participant(client, study, 5)
    run_participant(client, study, 4)
    path = tmp_path / "out.csv"
    assert write_export(study, path, "csv") == 9
    frame = pd.read_csv(path)
    assert list(frame.columns) == COLUMNS
    assert len(frame) == 9 and frame["correct"].eq(1).all()
    assert (frame["trial_kind"] == "practice").sum() == 6 and set(frame["trial_kind"]) <= {"practice", "main", "catch"}
    assert set(frame["condition"]) == {"neuron", "pca"}
    assert frame["unit"].str.match(r"^conv2:(neuron|pca):\d+$").all()
    assert frame["participant"].str.match(r"^P\d{5}$").all()
    parquet = tmp_path / "out.parquet"
    write_export(study, parquet, "parquet")
    assert len(pd.read_parquet(parquet)) == 9


@pytest.mark.django_db
def test_export_command_names_known_studies_when_the_slug_is_wrong(study):
    from django.core.management import CommandError, call_command

    with pytest.raises(CommandError, match=study.slug):
        call_command("export_responses", "nope")


@pytest.mark.django_db
def test_admin_pages_open_for_every_model(admin_client, client, study):
    run_participant(client, study, 2)
    for name in ("network", "imageset", "stimulusjob", "unit", "study", "participant", "response"):
        response = admin_client.get(f"/admin/studyapp/{name}/")
        assert response.status_code == 200, name
    job = StimulusJob.objects.first()
    assert admin_client.get(f"/admin/studyapp/stimulusjob/{job.pk}/change/").status_code == 200
    assert admin_client.get(f"/admin/studyapp/study/{study.pk}/change/").status_code == 200
    unit_page = admin_client.get("/admin/studyapp/unit/").content.decode()
    assert re.search(r"<img src='/media/[0-9a-f]{20}\.png'", unit_page)  # exemplar thumbnails


@pytest.mark.django_db
def test_admin_export_action_downloads_the_csv(admin_client, client, study):
    run_participant(client, study, 3)
    response = admin_client.post("/admin/studyapp/study/", {"action": "export_csv", "_selected_action": [study.pk]})
    assert response["Content-Type"] == "text/csv"
    rows = list(csv.DictReader(io.StringIO(response.content.decode())))
    assert len(rows) == 3 and rows[0]["study"] == study.slug


@pytest.mark.django_db
def test_admin_lifecycle_actions(admin_client, study):
    admin_client.post("/admin/studyapp/study/", {"action": "pause", "_selected_action": [study.pk]})
    study.refresh_from_db()
    assert study.status == Study.Status.PAUSED


@pytest.mark.django_db
def test_admin_cancel_marks_running_jobs(admin_client, job):
    StimulusJob.objects.filter(pk=job.pk).update(status=StimulusJob.Status.RUNNING)
    admin_client.post("/admin/studyapp/stimulusjob/", {"action": "cancel", "_selected_action": [job.pk]})
    job.refresh_from_db()
    assert job.status == StimulusJob.Status.CANCEL_REQUESTED


@pytest.mark.django_db
def test_monitor_counts_participants_per_condition(admin_client, client, study):
    run_participant(client, study, 12)
    participant = arrive(client, study)
    api(client, participant, "consent", {"consent": False})
    page = admin_client.get(f"/admin/studyapp/study/{study.pk}/monitor/")
    assert page.status_code == 200
    from studyapp.monitor import study_monitor

    rows = {r["condition"]: r for r in study_monitor(study)}
    assert sum(r["started"] for r in rows.values()) == 2
    assert sum(r["returned"] for r in rows.values()) == 1
    assert sum(r["active"] for r in rows.values()) == 1


@pytest.mark.django_db
def test_monitor_sets_people_s_main_accuracy_beside_the_machine_prediction(admin_client, client, study):
    from studyapp.models import Trial, Unit
    from studyapp.monitor import study_monitor

    for unit in Unit.objects.filter(basis="neuron"):
        unit.measures = {"mis": 0.6 + 0.1 * unit.index}  # 0.6, 0.7, 0.8
        unit.save()
    study.conditions.filter(basis="pca").update(reference_type="none")
    before = {r["condition"]: r for r in study_monitor(study)}
    assert before["neuron"]["machine_accuracy"] == pytest.approx(0.7)  # known before anyone takes part
    assert before["neuron"]["main_accuracy"] is None
    assert before["pca"]["machine_accuracy"] is None  # the machine simulates natural references only

    participant = run_participant(client, study, 12)  # 3 practice, then 9 main and catch trials, all right
    main = Trial.objects.filter(participant=participant, kind="main").count()
    condition = participant.condition.name
    row = {r["condition"]: r for r in study_monitor(study)}[condition]
    assert main > 0 and row["main_accuracy"] == 1.0
    page = admin_client.get(f"/admin/studyapp/study/{study.pk}/monitor/").content.decode()
    assert "machine score (mean MIS)" in page and "70 %" in page


@pytest.mark.django_db
def test_preview_walks_a_condition_without_taking_a_slot_or_reaching_the_export(admin_client, client, study, tmp_path):
    from studyapp.models import Participant

    page = admin_client.get(f"/admin/studyapp/study/{study.pk}/preview/")
    assert page.status_code == 200 and not Participant.objects.exists()  # a GET starts nothing
    condition = study.conditions.last()
    assert f'<option value="{condition.pk}"' in page.content.decode()
    response = admin_client.post(f"/admin/studyapp/study/{study.pk}/preview/", {"condition": condition.pk})
    assert response.status_code == 302 and response["Location"].startswith("/p/")
    preview = Participant.objects.get()
    assert preview.condition == condition
    assert preview.is_preview and preview.trial_count == 12
    through_instructions(client, preview)
    trial = api(client, preview, "trials?limit=1")[1]["trials"][0]
    answer(client, preview, trial["id"])
    assert write_export(study, tmp_path / "x.csv", "csv") == 0


@pytest.mark.django_db
def test_admin_refuses_a_job_the_pipeline_would_refuse_and_queues_a_good_one(admin_client, monkeypatch):
    from studyapp import tasks
    from studyapp.models import ImageSet, Network

    queued = []
    monkeypatch.setattr(tasks, "launch", queued.append)
    network = Network.objects.create(name="demo")
    image_set = ImageSet.objects.create(name="digits")
    form = {"network": network.pk, "image_set": image_set.pk, "layer": "conv2", "bases": "neuron,pca",
            "n_units": 4, "seed": 0, "parameters": '{"pooling": "median"}'}
    response = admin_client.post("/admin/studyapp/stimulusjob/add/", form)
    assert response.status_code == 200 and b"pooling" in response.content
    assert not StimulusJob.objects.exists()
    response = admin_client.post("/admin/studyapp/stimulusjob/add/", {**form, "parameters": '{"pooling": "max"}'})
    assert response.status_code == 302
    assert [job.parameters for job in queued] == [{"pooling": "max"}]
