"""The job's admin page shows the artifact's curves (SVG figures) and superpixel Sobol regions."""


def test_job_page_shows_the_figures_and_superpixel_regions(admin_client, job):
    job.artifact = f"artifacts/job-{job.pk}"
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
    assert f"<img src='/media/artifacts/job-{job.pk}/figures/conv2-essence.svg'" in page
    assert f"/media/artifacts/job-{job.pk}/figures/conv2-surrogate.svg" in page
    assert "conv2: surrogate fidelity</figcaption>" in page
    assert "SLIC superpixels" in page and "0.125" in page
