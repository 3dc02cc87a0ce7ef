"""The stimulus job's bookkeeping around the pipeline: claim, progress, cancel, failure, retry, import.
The pipeline itself is replaced by a writer of a small artifact; the real one runs in the integration
tests through a Celery worker."""
import json
import re

import pytest
from django.test import override_settings

from stimuli import pipeline
from studyapp import jobs, lifecycle
from studyapp.artifacts import ArtifactError, import_artifact, published_name
from studyapp.models import Exemplar, ImageSet, Network, StimulusJob, Unit
from tests.studyapp.helpers import write_artifact


@pytest.fixture
def media(tmp_path):
    with override_settings(MEDIA_ROOT=tmp_path / "media", ARTIFACT_ROOT=tmp_path / "artifacts"):
        yield tmp_path / "media"


@pytest.fixture
def artifacts(media, tmp_path):
    return tmp_path / "artifacts"


def published(name):
    """Where the importer publishes the image the fake artifact writes at `name`."""
    return published_name(name.encode())


@pytest.fixture
def new_job(db):
    network = Network.objects.create(name="demo")
    image_set = ImageSet.objects.create(name="digits")
    return StimulusJob.objects.create(network=network, image_set=image_set, layer="conv2", bases="neuron,pca")


@pytest.fixture
def fake_pipeline(monkeypatch):
    calls = []

    def run(config, out_dir, progress=None):
        calls.append(config)
        return write_artifact(out_dir, bases=tuple(config.bases.names), progress=progress)

    monkeypatch.setattr(pipeline, "run", run)
    return calls


def test_a_job_runs_the_pipeline_and_imports_units_and_exemplars(media, new_job, fake_pipeline):
    assert jobs.run_job(new_job.pk) == 4
    new_job.refresh_from_db()
    assert new_job.status == "succeeded" and new_job.progress == 100 and new_job.attempts == 1
    assert fake_pipeline[0].activations.layers == ["conv2"] and fake_pipeline[0].bases.names == ["neuron", "pca"]
    assert Unit.objects.filter(job=new_job).count() == 4
    assert Exemplar.objects.filter(unit__job=new_job).count() == 4 * 26
    assert new_job.summary["layers"][0]["cumulative_explained_variance"] == [0.4, 0.7, 0.9, 1.0]
    image = Exemplar.objects.first().image
    # Published flat under the content's hash; the artifact with its manifest stays out of MEDIA_ROOT.
    assert re.fullmatch(r"[0-9a-f]{20}\.png", image) and (media / image).is_file()
    assert sorted(p.name for p in media.iterdir()) == sorted({e.image for e in Exemplar.objects.all()})
    assert new_job.artifact == f"job-{new_job.pk}"


def test_a_redelivered_job_reuses_the_complete_artifact_and_leaves_no_duplicates(media, new_job, fake_pipeline):
    jobs.run_job(new_job.pk)
    # As if the worker died after importing and before acknowledging: silent, still marked running.
    StimulusJob.objects.filter(pk=new_job.pk).update(status="running", heartbeat=None)
    jobs.run_job(new_job.pk)
    assert len(fake_pipeline) == 1
    assert Unit.objects.filter(job=new_job).count() == 4
    new_job.refresh_from_db()
    assert new_job.attempts == 2 and new_job.status == "succeeded"


def test_a_half_written_folder_from_a_crash_is_regenerated(artifacts, new_job, fake_pipeline):
    leftover = artifacts / f"job-{new_job.pk}"
    leftover.mkdir(parents=True)
    (leftover / "stray.png").write_bytes(b"x")
    jobs.run_job(new_job.pk)
    assert not (leftover / "stray.png").exists() and (leftover / "manifest.json").exists()


def test_a_finished_job_is_not_run_again(media, new_job, fake_pipeline):
    jobs.run_job(new_job.pk)
    assert jobs.run_job(new_job.pk) is None
    assert len(fake_pipeline) == 1


def test_a_failing_pipeline_marks_the_job_failed_with_the_error(media, new_job, monkeypatch):
    def broken(config, out_dir, progress=None):
        raise ValueError("layer 'conv9' is not in the network")

    monkeypatch.setattr(pipeline, "run", broken)
    with pytest.raises(ValueError):
        jobs.run_job(new_job.pk)
    new_job.refresh_from_db()
    assert new_job.status == "failed" and new_job.error.startswith("ValueError: layer 'conv9'")


def test_cancelling_stops_the_pipeline_at_its_next_progress_report(media, new_job, monkeypatch):
    def slow(config, out_dir, progress=None):
        StimulusJob.objects.filter(pk=new_job.pk).update(status="cancel_requested")
        progress("activations", 0.5)
        raise AssertionError("the pipeline should have been stopped")

    monkeypatch.setattr(pipeline, "run", slow)
    assert jobs.run_job(new_job.pk) is None
    new_job.refresh_from_db()
    assert new_job.status == "cancelled" and not Unit.objects.filter(job=new_job).exists()


def test_an_artifact_with_a_missing_image_is_refused_whole(artifacts, new_job):
    folder = write_artifact(artifacts / "x")
    next(folder.glob("images/*.png")).unlink()
    with pytest.raises(ArtifactError, match="missing"):
        import_artifact(new_job, folder)
    assert not Unit.objects.filter(job=new_job).exists()


def test_an_unknown_manifest_version_is_refused(artifacts, new_job):
    folder = write_artifact(artifacts / "y")
    manifest = json.loads((folder / "manifest.json").read_text())
    (folder / "manifest.json").write_text(json.dumps({**manifest, "schema_version": 99}))
    with pytest.raises(ArtifactError, match="schema_version 99"):
        import_artifact(new_job, folder)


def test_a_job_held_by_a_live_worker_is_not_taken_over(media, new_job, fake_pipeline):
    from django.utils import timezone

    StimulusJob.objects.filter(pk=new_job.pk).update(status="running", heartbeat=timezone.now())
    with pytest.raises(lifecycle.JobBusy):
        jobs.run_job(new_job.pk)
    assert not fake_pipeline


def test_a_job_whose_worker_fell_silent_is_taken_over(artifacts, new_job, fake_pipeline):
    from datetime import timedelta

    from django.conf import settings
    from django.utils import timezone

    silent_since = timezone.now() - timedelta(seconds=settings.STIMULUS_STALE_AFTER_SECONDS + 1)
    StimulusJob.objects.filter(pk=new_job.pk).update(status="running", heartbeat=silent_since, attempts=1)
    leftover = artifacts / f".job-{new_job.pk}.tmp-abc"
    leftover.mkdir(parents=True)
    assert jobs.run_job(new_job.pk) == 4
    new_job.refresh_from_db()
    assert new_job.status == "succeeded" and new_job.attempts == 2 and not leftover.exists()


@pytest.mark.django_db(transaction=True)
def test_the_heartbeat_beats_through_a_long_silent_stage(media, settings, monkeypatch):
    import time

    # The heartbeat writes from its own thread and connection, so the job must be committed.
    new_job = StimulusJob.objects.create(network=Network.objects.create(name="demo"),
                                         image_set=ImageSet.objects.create(name="digits"), layer="conv2")

    settings.STIMULUS_HEARTBEAT_SECONDS = 0.05
    beats = []

    def silent(config, out_dir, progress=None):
        # No progress report: only the heartbeat thread can move the stamp. Poll for it with a deadline.
        start = StimulusJob.objects.get(pk=new_job.pk).heartbeat
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if StimulusJob.objects.get(pk=new_job.pk).heartbeat > start:
                beats.append(True)
                break
            time.sleep(0.02)
        return write_artifact(out_dir)

    monkeypatch.setattr(pipeline, "run", silent)
    jobs.run_job(new_job.pk)
    assert beats == [True]


def test_the_job_page_shows_the_measures_per_basis(admin_client, media, new_job, fake_pipeline):
    jobs.run_job(new_job.pk)
    page = admin_client.get(f"/admin/studyapp/stimulusjob/{new_job.pk}/change/").content.decode()
    assert "cumulative explained variance" in page and "0.40, 0.70, 0.90, 1.00" in page


def _with_images(folder, names):
    for name in names:
        (folder / name).write_bytes(name.encode())
    return names


def test_every_ordered_strip_and_overlay_of_a_unit_is_imported_in_its_order(artifacts, new_job):
    folder = write_artifact(artifacts / "z", bases=("neuron",), n_units=1)
    manifest = json.loads((folder / "manifest.json").read_text())
    unit = manifest["layers"][0]["units"][0]
    unit["strips"] = [_with_images(folder, [f"images/s{k}-{i}.png" for i in range(5)]) for k in range(3)]
    unit["strip"] = unit["strips"][0]
    unit["attribution_overlays_max"] = _with_images(folder, [f"images/o{i}.png" for i in range(9)])
    (folder / "manifest.json").write_text(json.dumps(manifest))
    import_artifact(new_job, folder)

    from studyapp.models import Condition, Study

    study = Study.objects.create(slug="s", title="s")
    condition = Condition.objects.create(study=study, name="n", job=new_job, layer="conv2", basis="neuron")
    (imported,) = condition.unit_exemplars()
    assert imported.strips == [[published(name) for name in strip] for strip in unit["strips"]]
    assert imported.overlays_max == [published(name) for name in unit["attribution_overlays_max"]]


def test_an_artifact_with_a_single_strip_still_imports_it(artifacts, new_job):
    folder = write_artifact(artifacts / "w", bases=("neuron",), n_units=1)
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["layers"][0]["units"][0]["strip"] = _with_images(folder, [f"images/s{i}.png" for i in range(5)])
    (folder / "manifest.json").write_text(json.dumps(manifest))
    import_artifact(new_job, folder)
    strip = Exemplar.objects.filter(unit__job=new_job, role=Exemplar.Role.STRIP)
    assert list(strip.values_list("group", "position")) == [(0, i) for i in range(5)]


@pytest.mark.slow
def test_a_real_job_with_sobol_images_shows_the_region_indices_on_its_page(admin_client, artifacts):
    """The real pipeline on the demo network, so the manifest's `sobol` entry is what the page reads."""
    job = StimulusJob.objects.create(
        network=Network.objects.create(name="demo"), image_set=ImageSet.objects.create(name="digits"),
        layer="conv1", bases="neuron", n_units=2,
        parameters={"sobol_images": 3, "sobol_n_samples": 32, "sobol_grid": 2, "n_strips": 2})
    assert jobs.run_job(job.pk) == 2
    job.refresh_from_db()
    sobol = job.summary["sobol"]
    assert len(sobol["images"]) == 3 and sobol["grid"] == [2, 2]
    page = admin_client.get(f"/admin/studyapp/stimulusjob/{job.pk}/change/").content.decode()
    assert "Interaction share" in page and f"over 3 images: mean {sobol['interaction_share']['mean']:.3f}" in page
    for image in sobol["images"]:
        url = f"/admin/studyapp/stimulusjob/pictures/{job.artifact}/{image['image']}"
        assert url in page and (artifacts / job.artifact / image["image"]).is_file()
        assert admin_client.get(url).status_code == 200
    assert page.count("background:rgba(180,60,0,") == 3 * 4  # one cell per region of each image
