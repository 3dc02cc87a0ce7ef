"""The job's admin page shows the artifact's curves (SVG figures) and superpixel Sobol regions."""
import pytest
from django.test import override_settings


@pytest.fixture
def artifacts(tmp_path):
    with override_settings(MEDIA_ROOT=tmp_path / "media", ARTIFACT_ROOT=tmp_path / "artifacts"):
        yield tmp_path / "artifacts"



def test_job_page_shows_the_figures_and_superpixel_regions(admin_client, job, artifacts):
    job.artifact = f"job-{job.pk}"
    job.summary = {
        "layers": [],
        "figures": [{"layer": "conv2", "kind": "essence", "title": "conv2: essence of the class",
                     "file": "figures/conv2-essence.svg"},
                    {"layer": "conv2", "kind": "surrogate", "title": "conv2: surrogate fidelity",
                     "file": "figures/conv2-surrogate.svg"}],
        "sobol": {"grid": None, "regions": "superpixels", "n_samples": 64,
                  "interaction_share": {"n_images": 1, "mean": 0.2, "median": 0.2, "sd": 0.0},
                  "images": [{"image": "images/a.png", "target_class": 3, "interaction_share": 0.2,
                              "ST": [0.5, 0.25, 0.125]}]},
    }
    job.save()
    page = admin_client.get(f"/admin/studyapp/stimulusjob/{job.pk}/change/").content.decode()
    url = f"/admin/studyapp/stimulusjob/pictures/job-{job.pk}/figures/conv2-essence.svg"
    assert f"<img src='{url}'" in page
    assert f"/admin/studyapp/stimulusjob/pictures/job-{job.pk}/figures/conv2-surrogate.svg" in page
    assert "conv2: surrogate fidelity</figcaption>" in page
    assert "SLIC superpixels" in page and "0.125" in page
    # the figures come from the private artifact store, through the researchers' picture view only
    (artifacts / job.artifact / "figures").mkdir(parents=True)
    (artifacts / job.artifact / "figures" / "conv2-essence.svg").write_text("<svg xmlns='http://www.w3.org/2000/svg'/>")
    response = admin_client.get(url)
    assert response.status_code == 200 and b"<svg" in b"".join(response.streaming_content)
    assert admin_client.get(f"/admin/studyapp/stimulusjob/pictures/job-{job.pk}/manifest.json").status_code == 404
