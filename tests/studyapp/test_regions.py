"""A Sobol region analysis launched from the admin runs (in process here) and shows its pictures."""
import pytest
from django.test import override_settings

from studyapp.models import ImageSet, Network, SobolAnalysis


@pytest.fixture
def media(tmp_path, monkeypatch):
    monkeypatch.setenv("STIMULI_CACHE_DIR", str(tmp_path / "cache"))
    with override_settings(MEDIA_ROOT=tmp_path / "media", ARTIFACT_ROOT=tmp_path / "artifacts"):
        yield tmp_path / "artifacts"


def add_analysis(admin_client, monkeypatch, **fields):
    """Add an analysis through the admin form, its task run right here instead of on a background
    thread, so the test can read the outcome."""
    from studyapp import dispatch

    monkeypatch.setattr(dispatch, "send", lambda task, row_id, **kwargs: task.apply(args=[row_id], throw=False))
    form = {"network": Network.objects.create(name="demo").pk, "image_set": ImageSet.objects.create(name="digits").pk,
            "grid": 2, "n_samples": 32, "seed": 0, **fields}
    assert admin_client.post("/admin/studyapp/sobolanalysis/add/", form).status_code == 302
    return SobolAnalysis.objects.get()


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_an_analysis_added_in_the_admin_runs_and_shows_its_indices(admin_client, media, monkeypatch):
    from studyapp import tasks

    analysis = add_analysis(admin_client, monkeypatch, image_index=3, perturbation="inpaint-blur")
    assert analysis.status == "succeeded" and analysis.progress == 100
    assert len(analysis.result["ST"]) == 4 and analysis.result["label"] == 3
    assert (media / analysis.overlay).is_file() and (media / analysis.image).is_file()
    page = admin_client.get(f"/admin/studyapp/sobolanalysis/{analysis.pk}/change/").content.decode()
    url = f"/admin/studyapp/stimulusjob/pictures/{analysis.overlay}"
    assert url in page and "interaction share" in page
    assert admin_client.get(url).status_code == 200
    assert tasks.analyse_regions.name.endswith("analyse_regions")


@pytest.mark.django_db(transaction=True)
def test_a_failing_analysis_shows_its_error(admin_client, media, monkeypatch):
    analysis = add_analysis(admin_client, monkeypatch, image_index=99999, perturbation="mean")
    assert analysis.status == "failed" and "out of range" in analysis.error


@pytest.mark.django_db(transaction=True)
def test_an_analysis_whose_queue_is_down_is_marked_failed_with_the_reason(admin_client, media, monkeypatch, settings):
    from kombu.exceptions import OperationalError

    from studyapp import tasks

    def broker_down(*args, **kwargs):
        raise OperationalError("Error 111 connecting to redis:6379. Connection refused.")

    settings.CELERY_TASK_ALWAYS_EAGER = False
    monkeypatch.setattr(tasks.analyse_regions, "delay", broker_down)
    form = {"network": Network.objects.create(name="demo").pk, "image_set": ImageSet.objects.create(name="digits").pk,
            "grid": 2, "n_samples": 32, "seed": 0, "image_index": 0, "perturbation": "mean"}
    response = admin_client.post("/admin/studyapp/sobolanalysis/add/", form)
    assert response.status_code == 503 and "task queue could not be reached" in response.content.decode()
    analysis = SobolAnalysis.objects.get()
    assert analysis.status == "failed" and "Connection refused" in analysis.error
    assert "queued; its progress" not in admin_client.get("/admin/studyapp/sobolanalysis/").content.decode()
