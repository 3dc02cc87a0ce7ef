"""The job's admin page shows where its time went (the manifest's timings)."""

import logging


def test_job_page_shows_the_stage_times(admin_client, job):
    job.summary = {
        "layers": [],
        "timings": {
            "stages": {"network": 1.5, "activations": 2.25, "measures": 6.0},
            "measures": {"decisions": 4.0, "completeness": 1.75},
            "total": 10.0,
        },
    }
    job.save()
    page = admin_client.get(f"/admin/studyapp/stimulusjob/{job.pk}/change/").content.decode()
    # in the pipeline's order, though PostgreSQL's jsonb stores the keys sorted otherwise
    assert (
        page.index("<td>network</td><td>1.50</td><td>15 %</td>")
        < page.index("<td>activations</td><td>2.25</td><td>23 %</td>")
        < page.index("<td>measures</td><td>6.00</td><td>60 %</td>")
    )
    assert "<th>total</th><th>10.00</th>" in page
    assert "decisions 4.00 s, completeness 1.75 s" in page


def test_a_job_without_timings_says_so_and_broken_timings_fail_loudly(admin_client, job, caplog):
    job.summary = {"layers": []}
    job.save()
    page = admin_client.get(f"/admin/studyapp/stimulusjob/{job.pk}/change/").content.decode()
    assert "— (not recorded)" in page
    job.summary = {"layers": [], "timings": {"stages": {"network": 1.0}, "measures": {}}}
    job.save()
    with caplog.at_level(logging.ERROR, logger="studyapp.admin"):
        page = admin_client.get(f"/admin/studyapp/stimulusjob/{job.pk}/change/").content.decode()
    assert "cannot be read: the manifest&#x27;s timings has no &#x27;total&#x27;" in page
    assert "timings has no 'total'" in caplog.text
