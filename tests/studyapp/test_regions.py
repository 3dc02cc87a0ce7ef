"""A Sobol region analysis launched from the admin runs (in process here) and shows its pictures."""
import pytest
from django.test import override_settings

from studyapp.models import ImageSet, Network, SobolAnalysis


@pytest.fixture
def media(tmp_path, monkeypatch):
    monkeypatch.setenv("STIMULI_CACHE_DIR", str(tmp_path / "cache"))
    with override_settings(MEDIA_ROOT=tmp_path / "media"):
        yield tmp_path / "media"


def add_analysis(admin_client, monkeypatch, **fields):
    """Add an analysis through the admin form, its task run right here instead of on a background
    thread, so the test can read the outcome."""
    from studyapp import jobs

    monkeypatch.setattr(jobs, "send", lambda task, row_id: task.apply(args=[row_id], throw=False))
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
    assert f"/media/{analysis.overlay}" in page and "interaction share" in page
    assert tasks.analyse_regions.name.endswith("analyse_regions")


@pytest.mark.django_db(transaction=True)
def test_a_failing_analysis_shows_its_error(admin_client, media, monkeypatch):
    analysis = add_analysis(admin_client, monkeypatch, image_index=99999, perturbation="mean")
    assert analysis.status == "failed" and "out of range" in analysis.error
