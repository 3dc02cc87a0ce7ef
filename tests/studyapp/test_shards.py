"""A sharded stimulus job's bookkeeping: how many shards, a folder's images listed once by the coordinator
for every shard and the callback, the shards run in process where there is no broker, progress as their
mean, cancel and failure reaching every shard, redelivered shards and callbacks doing nothing twice, and
the chord a broker gets. The shard pass and the pipeline are replaced by fakes here, except in the tests
that run them for real; the Celery workers run them in
tests/integration/test_shards.py."""
from types import SimpleNamespace

import numpy as np
import pytest
from django.core.checks import run_checks
from django.test import override_settings
from django.utils import timezone
from PIL import Image

import stimuli.datasets
import stimuli.shards
from stimuli import pipeline
from studyapp import jobs, lifecycle, shards, tasks
from studyapp.artifacts import artifact_dir
from studyapp.models import ImageSet, Network, StimulusJob, StimulusShard, Unit
from tests.studyapp.helpers import write_artifact


@pytest.fixture
def storage(tmp_path):
    with override_settings(MEDIA_ROOT=tmp_path / "media", ARTIFACT_ROOT=tmp_path / "artifacts"):
        yield tmp_path


def make_job(**parameters):
    network, _ = Network.objects.get_or_create(name="demo")
    image_set, _ = ImageSet.objects.get_or_create(name="digits")
    return StimulusJob.objects.create(network=network, image_set=image_set, layer="conv2", bases="neuron,pca",
                                      parameters=parameters)


@pytest.fixture
def job(db, storage):
    return make_job(shards=3)


class FakePass:
    """stimuli.shards' extract_shard and merge_shards, and pipeline.run: a shard reports progress and
    writes a file; `during(shard_index, job)` runs inside a shard's pass, between two progress reports."""

    def __init__(self, monkeypatch):
        self.shards_run, self.merged, self.pipeline_runs, self.images_given = [], [], [], []
        self.during = lambda index, job_id: None
        monkeypatch.setattr(stimuli.shards, "extract_shard", self.extract_shard)
        monkeypatch.setattr(stimuli.shards, "merge_shards", self.merge_shards)
        monkeypatch.setattr(pipeline, "run", self.run)

    def extract_shard(self, config, index, n_shards, folder, progress=None):
        self.shards_run.append(index)
        progress("network", 1.0)
        progress("activations", 0.5)
        self.during(index, StimulusShard.objects.get(index=index).job_id)
        progress("activations", 1.0)
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"shard-{index}-of-{n_shards}.npz"
        path.write_bytes(b"rows")
        return path

    def merge_shards(self, folder, n_shards, config=None):
        self.merged.append(sorted(p.name for p in folder.iterdir()))
        return "merged activations"

    def run(self, config, out_dir, progress=None, activations=None, images=None):
        self.pipeline_runs.append(activations)
        self.images_given.append(images)
        return write_artifact(out_dir, bases=tuple(config.bases.names), progress=progress)


@pytest.fixture
def fake(monkeypatch):
    return FakePass(monkeypatch)


def launch(job):
    """The coordinator's task, as the embedded default runs it: in this process."""
    return tasks.generate_stimuli.apply(args=[job.pk]).get()


def states(job):
    return list(job.shards.values_list("index", "status", "progress", "attempts"))


def test_the_shard_count_follows_the_setting_and_the_jobs_own_parameter(db, settings):
    settings.STIMULUS_SHARD_IMAGES = 0
    assert shards.planned_shards(make_job()) == 1
    assert shards.planned_shards(make_job(shards=3)) == 3
    settings.STIMULUS_SHARD_IMAGES = 10000
    assert shards.planned_shards(make_job()) == 1  # the 1,797 digits
    settings.STIMULUS_SHARD_IMAGES = 600
    assert shards.planned_shards(make_job()) == 3
    assert shards.planned_shards(make_job(shards=1)) == 1
    assert shards.planned_shards(make_job(max_images=500)) == 1
    # never more shards than batches: 1,797 images in batches of 256 are 8
    assert shards.planned_shards(make_job(shards=50, batch_size=256)) == 8
    for bad in (0, -2, 1.5, "4", True):
        with pytest.raises(ValueError, match="shards must be a positive integer"):
            jobs.pipeline_config(make_job(shards=bad))
    assert "shards" not in jobs.pipeline_config(make_job(shards=3)).to_dict()


def test_the_admin_form_refuses_a_bad_shard_count(admin_client, db):
    network, image_set = Network.objects.create(name="demo"), ImageSet.objects.create(name="digits")
    page = admin_client.post("/admin/studyapp/stimulusjob/add/", {
        "network": network.pk, "image_set": image_set.pk, "layer": "conv2", "bases": "neuron", "n_units": 2,
        "seed": 0, "parameters": '{"shards": 0}'})
    assert page.status_code == 200 and "shards must be a positive integer" in page.content.decode()
    assert not StimulusJob.objects.exists()


def folder_job(root, **parameters):
    network, _ = Network.objects.get_or_create(name="demo")
    image_set = ImageSet.objects.create(name=root.name, source=ImageSet.Source.FOLDER, path=str(root))
    return StimulusJob.objects.create(network=network, image_set=image_set, layer="conv1", bases="neuron,pca",
                                      parameters={"shards": 3, "batch_size": 2, "num_workers": 0, **parameters})


def image_folder(root, n=10):
    rng = np.random.default_rng(0)
    for i in range(n):
        (root / f"class{i % 2}").mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (12, 12, 3), dtype=np.uint8)).save(root / f"class{i % 2}" / f"{i:02d}.png")
    return root


def ids(images):
    return [images.image_id(i) for i in range(len(images))]


def test_the_coordinator_lists_a_folders_images_once_for_every_shard_and_the_callback(db, storage, fake,
                                                                                      monkeypatch):
    root = image_folder(storage / "imgs")
    job = folder_job(root)
    at_start = ids(stimuli.datasets.FolderImageSet(root))
    headers_read, stages, seen = [], [], {}
    readable = stimuli.datasets._readable
    monkeypatch.setattr(stimuli.datasets, "_readable", lambda path: headers_read.append(path) or readable(path))
    progress = lifecycle.ProgressReporter.write
    monkeypatch.setattr(lifecycle.ProgressReporter, "write",
                        lambda self, stage, fraction: stages.append(stage) or progress(self, stage, fraction))

    def during(index, job_id):
        if index == 0:  # a file added while the shards run: no shard and not the callback see it
            (root / "class0" / "0.png").write_bytes((root / "class0" / "00.png").read_bytes())
        config = jobs.pipeline_config(StimulusJob.objects.get(pk=job_id))
        seen[index] = ids(stimuli.shards.listed_images(config, shards.shards_dir(job)))

    fake.during = during
    launch(job)
    job.refresh_from_db()
    assert job.status == "succeeded", job.error
    assert len(headers_read) == 10  # one scan, by the coordinator
    assert stages[0] == "listing"  # the scan shows on the job page
    assert seen == {0: at_start, 1: at_start, 2: at_start} and ids(fake.images_given[0]) == at_start
    assert len(stimuli.datasets.FolderImageSet(root)) == 11
    assert not shards.shards_dir(job).exists()  # the listing went with the shard files


def test_a_shard_or_callback_without_the_listing_fails_the_job_with_a_clear_error(db, storage, monkeypatch):
    monkeypatch.setattr(tasks, "send_shards", lambda job_id, n: None)  # the coordinator only
    job = folder_job(image_folder(storage / "imgs"))
    launch(job)
    listing = shards.shards_dir(job) / stimuli.shards.LISTING
    assert listing.is_file()
    listing.unlink()
    with pytest.raises(stimuli.shards.ListingError):
        shards.run_shard(job.pk, 0, 3)
    job.refresh_from_db()
    assert job.status == "failed"
    assert job.error.startswith("shard 1 of 3 failed: stimuli.shards.ListingError: no image listing at ")
    assert "the job's coordinator writes it before the shards run" in job.error.splitlines()[0]

    # the shards done, the listing gone: the callback refuses too, rather than scanning the folder again
    StimulusJob.objects.filter(pk=job.pk).update(status="running", error="", heartbeat=None)
    job.shards.update(status="succeeded")
    with pytest.raises(stimuli.shards.ListingError, match="no image listing"):
        shards.finish_job(job.pk, 3)
    job.refresh_from_db()
    assert job.status == "failed" and "ListingError: no image listing" in job.error
    assert not job.units.exists()


def test_a_folder_that_cannot_be_listed_or_a_cancel_while_listing_ends_the_job_before_any_shard(db, storage,
                                                                                              monkeypatch):
    sent = []
    monkeypatch.setattr(tasks, "send_shards", lambda job_id, n: sent.append(job_id))
    empty = storage / "empty"
    (empty / "class0").mkdir(parents=True)
    (empty / "class0" / "a.png").write_text("not an image")
    (empty / "class0" / "b.png").write_text("not an image")
    job = folder_job(empty, batch_size=1, shards=2)
    with pytest.raises(ValueError, match="no readable images"):
        launch(job)
    job.refresh_from_db()
    assert job.status == "failed" and "no readable images" in job.error

    job = folder_job(image_folder(storage / "imgs"))
    write = stimuli.shards.write_listing

    def cancelled_midway(config, folder, progress=None):
        lifecycle.request_cancel(StimulusJob.objects.filter(pk=job.pk))
        return write(config, folder, progress=progress)

    monkeypatch.setattr(stimuli.shards, "write_listing", cancelled_midway)
    assert launch(job) is None
    job.refresh_from_db()
    assert job.status == "cancelled" and job.stage == "listing" and sent == []


def test_without_a_broker_the_shards_run_in_process_then_the_callback_imports(job, fake, storage):
    assert launch(job) is None  # the coordinator hands the job on
    job.refresh_from_db()
    assert job.status == "succeeded" and job.progress == 100 and job.attempts == 1
    assert fake.shards_run == [0, 1, 2]
    assert fake.merged == [[f"shard-{i}-of-3.npz" for i in range(3)]]
    assert fake.pipeline_runs == ["merged activations"]
    assert states(job) == [(i, "succeeded", 100.0, 1) for i in range(3)]
    assert Unit.objects.filter(job=job).count() == 4
    # the shard files are gone once the artifact is imported; the artifact stays
    assert not shards.shards_dir(job).exists() and (artifact_dir(job) / "manifest.json").is_file()
    assert shards.shards_dir(job).parent == storage / "artifacts" / "shards"


def test_one_shard_is_the_unsharded_path(db, storage, fake):
    job = make_job(shards=1)
    assert launch(job) == 4
    job.refresh_from_db()
    assert job.status == "succeeded" and not job.shards.exists()
    assert fake.shards_run == [] and fake.pipeline_runs == [None]


def test_the_jobs_progress_is_the_mean_of_its_shards(job, fake):
    seen = {}

    def during(index, job_id):
        row = StimulusJob.objects.get(pk=job_id)
        seen[index] = (row.stage, row.progress)

    fake.during = during
    launch(job)
    # shard 2 half done, shard 1 done, shard 3 not started: (100 + 50 + 0) / 3
    assert seen == {0: ("activations", pytest.approx(50 / 3)), 1: ("activations", pytest.approx(50.0)),
                    2: ("activations", pytest.approx(250 / 3))}


def test_a_cancel_stops_the_running_shard_and_the_queued_ones_do_nothing(job, fake):
    def during(index, job_id):
        if index == 1:
            lifecycle.request_cancel(StimulusJob.objects.filter(pk=job_id))

    fake.during = during
    launch(job)
    job.refresh_from_db()
    assert job.status == "cancelled" and job.finished is not None
    assert fake.shards_run == [0, 1]  # the third shard started after the cancel and did nothing
    assert [(i, status, attempts) for i, status, _, attempts in states(job)] == [
        (0, "succeeded", 1), (1, "cancelled", 1), (2, "cancelled", 0)]
    assert fake.pipeline_runs == [] and not Unit.objects.filter(job=job).exists()
    # the shards that were done stay for a launch again, which runs the job to the end
    assert shards.shards_dir(job).is_dir()
    fake.during = lambda index, job_id: None
    for queued in lifecycle.requeue(StimulusJob.objects.filter(pk=job.pk)):
        launch(queued)
    job.refresh_from_db()
    assert job.status == "succeeded" and job.attempts == 2
    assert [(i, status) for i, status, _, _ in states(job)] == [(0, "succeeded"), (1, "succeeded"), (2, "succeeded")]


def test_a_shard_that_fails_fails_the_job_with_its_error(job, fake):
    def during(index, job_id):
        if index == 1:
            raise RuntimeError("CUDA out of memory")

    fake.during = during
    with pytest.raises(RuntimeError, match="CUDA out of memory"):
        launch(job)
    job.refresh_from_db()
    assert job.status == "failed" and job.error.startswith("shard 2 of 3 failed: RuntimeError: CUDA out of memory")
    assert [(i, status) for i, status, _, _ in states(job)] == [(0, "succeeded"), (1, "failed"), (2, "queued")]
    # the third shard's message, delivered after the failure, does nothing; the callback neither
    assert shards.run_shard(job.pk, 2, 3) is None
    assert shards.finish_job(job.pk, 3) is None
    assert job.shards.get(index=2).status == "cancelled" and fake.shards_run == [0, 1]
    job.refresh_from_db()
    assert job.status == "failed" and fake.pipeline_runs == []


def test_a_redelivered_callback_makes_no_second_artifact_and_no_duplicate_units(job, fake):
    launch(job)
    manifest = (artifact_dir(job) / "manifest.json").stat().st_mtime_ns
    assert shards.finish_job(job.pk, 3) is None  # after success: nothing
    # As if the callback's worker died after importing and before recording success.
    StimulusJob.objects.filter(pk=job.pk).update(status="running", heartbeat=None)
    assert shards.finish_job(job.pk, 3) == 4
    job.refresh_from_db()
    assert job.status == "succeeded" and Unit.objects.filter(job=job).count() == 4
    assert len(fake.pipeline_runs) == 1 and (artifact_dir(job) / "manifest.json").stat().st_mtime_ns == manifest


def test_a_callback_while_a_live_one_holds_the_job_or_a_shard_is_not_done_waits(job, fake, monkeypatch):
    monkeypatch.setattr(tasks, "send_shards", lambda job_id, n: None)  # the coordinator only
    launch(job)
    job.refresh_from_db()
    assert job.status == "running" and job.stage == "activations" and job.heartbeat is None
    with pytest.raises(shards.ShardsPending):
        shards.finish_job(job.pk, 3)
    for index in range(3):
        shards.run_shard(job.pk, index, 3)
    StimulusJob.objects.filter(pk=job.pk).update(heartbeat=timezone.now())
    with pytest.raises(lifecycle.JobBusy):
        shards.finish_job(job.pk, 3)
    StimulusJob.objects.filter(pk=job.pk).update(heartbeat=None)
    assert shards.finish_job(job.pk, 3) == 4
    # a message of an earlier run (another shard count) is ignored
    assert shards.run_shard(job.pk, 0, 2) is None and shards.finish_job(job.pk, 2) is None


def test_a_redelivered_shard_waits_for_a_live_worker_and_takes_over_from_a_dead_one(job, fake, monkeypatch, settings):
    from datetime import timedelta

    monkeypatch.setattr(tasks, "send_shards", lambda job_id, n: None)
    launch(job)
    StimulusShard.objects.filter(job=job, index=0).update(status="running", heartbeat=timezone.now(), attempts=1)
    with pytest.raises(lifecycle.JobBusy):
        shards.run_shard(job.pk, 0, 3)
    silent = timezone.now() - timedelta(seconds=settings.STIMULUS_STALE_AFTER_SECONDS + 1)
    StimulusShard.objects.filter(job=job, index=0).update(heartbeat=silent)
    assert shards.run_shard(job.pk, 0, 3).endswith("shard-0-of-3.npz")
    assert job.shards.get(index=0).attempts == 2 and job.shards.get(index=0).status == "succeeded"
    assert shards.run_shard(job.pk, 0, 3) is None  # done: a third delivery does nothing
    assert fake.shards_run == [0]


def test_a_redelivered_coordinator_resets_no_running_shard(job, fake, monkeypatch):
    monkeypatch.setattr(tasks, "send_shards", lambda job_id, n: None)
    launch(job)
    shards.run_shard(job.pk, 0, 3)
    StimulusShard.objects.filter(job=job, index=1).update(status="running", heartbeat=timezone.now(), progress=40)
    launch(job)  # its first worker died after sending the shards, before acknowledging
    job.refresh_from_db()
    assert job.attempts == 2 and job.status == "running"
    assert [(i, status, progress) for i, status, progress, _ in states(job)] == [
        (0, "queued", 0.0), (1, "running", 40.0), (2, "queued", 0.0)]


def test_with_a_broker_the_coordinator_sends_a_chord_of_shards_on_the_gpu_queue(job, fake, settings, monkeypatch):
    from celery import current_app

    settings.CELERY_TASK_ALWAYS_EAGER = False
    settings.CELERY_RESULT_BACKEND = "redis://127.0.0.1:6379/2"
    sent, build = [], tasks.shard_chord

    def capture(job_id, n_shards):
        sent.append(build(job_id, n_shards))
        return SimpleNamespace(apply_async=lambda: None)

    monkeypatch.setattr(tasks, "shard_chord", capture)
    launch(job)
    [canvas] = sent
    assert [(s.task, s.args, s.immutable) for s in canvas.tasks] == [
        ("studyapp.tasks.extract_stimulus_shard", (job.pk, i, 3), True) for i in range(3)]
    assert (canvas.body.task, canvas.body.args) == ("studyapp.tasks.finish_stimulus_shards", (job.pk, 3))
    router = current_app.amqp.router
    for task in (tasks.extract_stimulus_shard, tasks.finish_stimulus_shards):
        assert router.route({}, task.name)["queue"].name == "gpu" and task.queue == "gpu"
        assert task.acks_late and task.reject_on_worker_lost
    assert not tasks.extract_stimulus_shard.ignore_result  # the chord counts the shards' results
    job.refresh_from_db()
    assert job.status == "running" and fake.shards_run == []
    assert states(job) == [(i, "queued", 0.0, 0) for i in range(3)]


def test_a_broker_that_cannot_take_the_shards_fails_the_job(job, fake, settings, monkeypatch):
    from kombu.exceptions import OperationalError

    settings.CELERY_TASK_ALWAYS_EAGER = False
    settings.CELERY_RESULT_BACKEND = "redis://127.0.0.1:6379/2"

    def unreachable(job_id, n_shards):
        raise OperationalError("Error 111 connecting to redis:6379. Connection refused.")

    monkeypatch.setattr(tasks, "send_shards", unreachable)
    with pytest.raises(OperationalError):
        launch(job)
    job.refresh_from_db()
    assert job.status == "failed" and job.error.startswith("the 3 shards could not be started: ")


def test_a_broker_without_a_result_backend_runs_the_job_whole_and_the_check_says_why(job, fake, settings,
                                                                                    admin_client):
    settings.CELERY_TASK_ALWAYS_EAGER = False
    settings.CELERY_RESULT_BACKEND = None
    assert launch(job) == 4
    job.refresh_from_db()
    assert job.status == "succeeded" and not job.shards.exists() and fake.pipeline_runs == [None]
    [warning] = [m for m in run_checks() if m.id == "studyapp.W001"]
    assert "CELERY_RESULT_BACKEND is not set" in warning.msg and "one task" in warning.msg
    assert "CELERY_RESULT_BACKEND is not set" in admin_client.get("/admin/studyapp/stimulusjob/").content.decode()
    settings.STIMULUS_SHARD_IMAGES = 0
    assert not [m for m in run_checks() if m.id == "studyapp.W001"]
    settings.STIMULUS_SHARD_IMAGES = 10000
    settings.CELERY_RESULT_BACKEND = "redis://127.0.0.1:6379/2"
    assert not [m for m in run_checks() if m.id == "studyapp.W001"]
    assert "CELERY_RESULT_BACKEND" not in admin_client.get("/admin/studyapp/stimulusjob/").content.decode()


def test_the_job_page_shows_each_shard(admin_client, job, fake):
    def during(index, job_id):
        if index == 1:
            raise RuntimeError("disk full")

    fake.during = during
    with pytest.raises(RuntimeError):
        launch(job)
    page = admin_client.get(f"/admin/studyapp/stimulusjob/{job.pk}/change/").content.decode()
    assert "Shards of the activation pass" in page
    rows = page.split('<tr class="shard">')[1:]
    assert len(rows) == 3
    assert "<td>1</td><td>succeeded</td><td>activations</td><td>100 %</td><td>1</td>" in rows[0]
    assert "<td>2</td><td>failed</td>" in rows[1] and "RuntimeError: disk full" in rows[1]
    assert "<td>3</td><td>queued</td>" in rows[2]


@pytest.mark.slow
def test_a_real_sharded_job_imports_what_the_unsharded_job_imports(db, storage):
    """The real shard pass and pipeline on the demo network, three shards in process against one task."""
    import json

    network, image_set = Network.objects.create(name="demo"), ImageSet.objects.create(name="digits")
    sharded, whole = (StimulusJob.objects.create(
        network=network, image_set=image_set, layer="conv1", bases="neuron,pca", n_units=2,
        parameters={"shards": n, "n_strips": 2, "completeness": False, "batch_size": 256}) for n in (3, 1))
    for job in (sharded, whole):
        launch(job)
        job.refresh_from_db()
        assert job.status == "succeeded", job.error

    def manifest(job):
        m = json.loads((artifact_dir(job) / "manifest.json").read_text())
        return {k: v for k, v in m.items() if k not in ("created", "versions", "timings")}

    assert manifest(sharded) == manifest(whole)
    assert [(s.status, s.progress) for s in sharded.shards.all()] == [("succeeded", 100.0)] * 3
    assert not shards.shards_dir(sharded).exists()

    def units(job):
        return [(u.layer, u.basis, u.index, u.measures, [e.image for e in u.exemplars.order_by("role", "group", "position")])
                for u in job.units.order_by("basis", "index")]

    assert units(sharded) == units(whole)
