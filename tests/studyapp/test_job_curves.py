"""The job's admin page shows the artifact's curves (SVG figures) and superpixel Sobol regions."""
import logging

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
    assert f'<img src="{url}"' in page
    assert f"/admin/studyapp/stimulusjob/pictures/job-{job.pk}/figures/conv2-surrogate.svg" in page
    assert "conv2: surrogate fidelity</figcaption>" in page
    assert "SLIC superpixels" in page and "0.125" in page
    # the figures come from the private artifact store, through the researchers' picture view only
    (artifacts / job.artifact / "figures").mkdir(parents=True)
    (artifacts / job.artifact / "figures" / "conv2-essence.svg").write_text("<svg xmlns='http://www.w3.org/2000/svg'/>")
    response = admin_client.get(url)
    assert response.status_code == 200 and b"<svg" in b"".join(response.streaming_content)
    assert admin_client.get(f"/admin/studyapp/stimulusjob/pictures/job-{job.pk}/manifest.json").status_code == 404


@pytest.mark.parametrize("key", ["n_components", "cumulative_explained_variance"])
def test_a_summary_missing_a_key_fails_loudly_on_the_job_page(admin_client, job, artifacts, key, caplog):
    """The admin reads the job's summary through stimuli.artifact's typed accessors only: a key the contract
    requires and the summary lacks is an error that names it, never an empty cell."""
    entry = {"layer": "conv2", "basis": "pca", "n_components": 4, "cumulative_explained_variance": [0.5, 0.8, 0.9, 1.0],
             "completeness": {"k": [1, 2], "accuracy": [0.4, 0.7]}}
    job.artifact = f"job-{job.pk}"
    job.summary = {"layers": [entry]}
    job.save()
    page = admin_client.get(f"/admin/studyapp/stimulusjob/{job.pk}/change/").content.decode()
    assert "<td>conv2</td><td>pca</td><td>4</td><td>0.50, 0.80, 0.90, 1.00</td><td>—</td><td>1: 0.40, 2: 0.70</td>" in page
    del entry[key]
    job.summary = {"layers": [entry]}
    job.save()
    with caplog.at_level(logging.ERROR, logger="studyapp.admin"):
        page = admin_client.get(f"/admin/studyapp/stimulusjob/{job.pk}/change/").content.decode()
    assert f"The artifact's summary cannot be read: layer entry 0 (conv2/pca) has no &#x27;{key}&#x27;" in page
    assert f"has no '{key}'" in caplog.text
