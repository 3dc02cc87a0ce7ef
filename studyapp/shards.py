"""A stimulus job sharded over the GPU workers: the coordinator splits the activation pass into
`StimulusShard` rows, each run by its own task (`stimuli.shards.extract_shard`), and the callback merges
the shards, runs the rest of the pipeline and imports the artifact.

Every step may be delivered twice (a worker killed before it acknowledged, a coordinator that ran
again): a shard whose file is written does nothing, a callback waits for a live one and finds a
complete artifact already there, and the import replaces the job's units. The job's status is the one
switch: a shard that starts or reports progress while its job is not running (cancel requested,
failed) stops, and the callback records the cancellation.

Before the shards are sent, the coordinator scans a folder's images once and writes the listing the
shards and the callback take their image set from (`stimuli.shards.write_listing`), so they all number
the images as the folder was then. Shard files and the listing live in the job's private folder under
ARTIFACT_ROOT (never MEDIA_ROOT), removed once the artifact is imported; a cancelled or failed job keeps
them, so launching it again reuses the listing and the shards that were complete.
"""
import logging
import math
import shutil
import socket
from collections.abc import Callable
from functools import partial
from pathlib import Path

from django.conf import settings
from django.db import transaction
from django.db.models import Avg, OuterRef, Subquery
from django.db.models.functions import Coalesce
from django.utils import timezone

from . import jobs, lifecycle
from .artifacts import artifact_dir
from .models import Job, StimulusJob, StimulusShard

log = logging.getLogger(__name__)


class ShardsPending(lifecycle.JobBusy):
    """The callback came before every shard was done (a shard's message delivered twice counts twice
    towards the chord): look again later."""


def shards_dir(job: StimulusJob) -> Path:
    """The job's private folder of shard files."""
    return Path(settings.ARTIFACT_ROOT) / "shards" / f"job-{job.pk}"


def result_backend_missing() -> bool:
    """True where tasks go to a broker but no result backend is configured: Celery cannot run a chord,
    so stimulus jobs run as one task each."""
    return not settings.CELERY_TASK_ALWAYS_EAGER and not settings.CELERY_RESULT_BACKEND


def planned_shards(job: StimulusJob) -> int:
    """How many shards the job's activation pass is split into: its parameters' "shards", else one per
    STIMULUS_SHARD_IMAGES images (0: never), and never more than it has batches."""
    from stimuli.shards import count_images, shard_count

    wanted = jobs.requested_shards(job)
    if wanted is None:
        if settings.STIMULUS_SHARD_IMAGES <= 0:
            return 1
    elif wanted == 1:
        return 1
    config = jobs.pipeline_config(job)
    n_images = count_images(config)
    if wanted is None:
        wanted = math.ceil(n_images / settings.STIMULUS_SHARD_IMAGES)
    return shard_count(n_images, config.activations.batch_size, wanted)


def start_job(job_id: int, send_shards: Callable[[int, int], object]) -> int | None:
    """The coordinator: claim the job; with one shard, run it whole here as an unsharded job runs;
    otherwise set up its shards, leave it running and hand the shards to `send_shards(job_id,
    n_shards)`, which runs them and then `finish_job`. The units imported, or None when the job was
    handed on (or had already finished)."""
    job = lifecycle.claim(StimulusJob, job_id)
    if job is None:
        return None
    try:
        n_shards = planned_shards(job)
        if n_shards > 1 and result_backend_missing():
            log.warning("stimulus job %s runs as one task, not %d shards: CELERY_RESULT_BACKEND is not set",
                        job.pk, n_shards)
            n_shards = 1
    except Exception as exc:
        lifecycle.fail(job, exc)
        raise
    if n_shards == 1:
        return lifecycle.carry_out(job, jobs.generate_and_import)
    try:
        prepare(job, n_shards)
    except lifecycle.JobCancelled:
        lifecycle.finish(job, Job.Status.CANCELLED)
        log.info("stimulus job %s cancelled while its images were listed", job.pk)
        return None
    except Exception as exc:
        lifecycle.fail(job, exc)
        raise
    try:
        send_shards(job.pk, n_shards)
    except Exception as exc:
        if job_running(job.pk):  # not failed already by a shard that ran in this process
            lifecycle.fail(job, exc, f"the {n_shards} shards could not be started: ")
        raise
    log.info("stimulus job %s handed to %d shards", job.pk, n_shards)
    return None


def prepare(job: StimulusJob, n_shards: int) -> None:
    """The job's shard rows for this run, queued; its image listing written (`write_listing`); and the
    job released to the shards at stage "activations". A shard still marked running is left as it is:
    its worker, or its redelivered message, decides. Raises lifecycle.JobCancelled when a cancel is
    requested while the images are listed."""
    with transaction.atomic():
        StimulusJob.objects.select_for_update().filter(pk=job.pk).first()  # one coordinator at a time
        rows = StimulusShard.objects.filter(job=job)
        if rows.count() != n_shards:
            rows.delete()
            shutil.rmtree(shards_dir(job), ignore_errors=True)
            StimulusShard.objects.bulk_create([StimulusShard(job=job, index=i) for i in range(n_shards)])
        else:
            rows.exclude(status=Job.Status.RUNNING).update(status=Job.Status.QUEUED, stage="", progress=0, error="",
                                                           finished=None)
    write_listing(job)
    StimulusJob.objects.filter(pk=job.pk).update(stage="activations", progress=0)
    lifecycle.release(job)


def write_listing(job: StimulusJob) -> None:
    """The job's image listing in its shard folder, under the claim's heartbeat (a large folder's scan
    opens every file's header, minutes for 100,000 images) and reporting the scan at stage "listing";
    kept when one is already there for the job's configuration."""
    from stimuli.shards import write_listing as write

    progress = lifecycle.ProgressReporter(StimulusJob, job.pk)
    with lifecycle.Heartbeat(StimulusJob, job.pk):
        write(jobs.pipeline_config(job), shards_dir(job), progress=lambda fraction: progress("listing", fraction))


class ShardProgress(lifecycle.ProgressReporter):
    """A shard's progress on its row, and the job's as the mean over its shards; stops the shard as soon
    as its job is no longer running (a cancel requested, another shard failed)."""

    def __init__(self, model: type[StimulusShard], shard_id: int) -> None:
        super().__init__(model, shard_id)
        self.job_id = model.objects.values_list("job_id", flat=True).get(pk=shard_id)

    def write(self, stage: str, fraction: float) -> None:
        # Loading the network is not part of the pass the job's progress counts.
        self.rows.update(stage=stage, progress=round(100 * fraction, 1) if stage == "activations" else 0.0)
        update_job_progress(self.job_id)

    def stopped(self) -> bool:
        return not job_running(self.job_id)


def job_running(job_id: int) -> bool:
    return StimulusJob.objects.filter(pk=job_id, status=Job.Status.RUNNING).exists()


def update_job_progress(job_id: int) -> None:
    """The job's progress, while its shards run: the mean of theirs, in one statement."""
    mean = StimulusShard.objects.filter(job=OuterRef("pk")).values("job").annotate(m=Avg("progress")).values("m")
    StimulusJob.objects.filter(pk=job_id, status=Job.Status.RUNNING, stage="activations").update(
        progress=Coalesce(Subquery(mean), 0.0))


def run_shard(job_id: int, index: int, n_shards: int, worker: str = "") -> str | None:
    """One shard's task on `worker` (the Celery worker's name; this host's where there is no broker): its
    activation pass written to the job's shard folder; the file's path, or None when there was nothing
    to do (the shard was done, or the job is no longer running). A shard that fails fails the job with
    its error. Raises lifecycle.JobBusy when a live worker runs this shard."""
    shard = StimulusShard.objects.select_related("job").filter(job_id=job_id, index=index).first()
    if shard is None or StimulusShard.objects.filter(job_id=job_id).count() != n_shards:
        log.info("shard %d of %d of stimulus job %s belongs to an earlier run; skipped", index + 1, n_shards, job_id)
        return None
    if not job_running(job_id):
        StimulusShard.objects.filter(pk=shard.pk, status=Job.Status.QUEUED).update(status=Job.Status.CANCELLED,
                                                                                   finished=timezone.now())
        return None
    try:
        return lifecycle.run(StimulusShard, shard.pk, partial(_extract, n_shards=n_shards,
                                                              worker=worker or socket.gethostname()),
                             reporter=ShardProgress)
    except lifecycle.JobBusy:
        raise
    except Exception as exc:
        lifecycle.fail(shard.job, exc, f"shard {index + 1} of {n_shards} failed: ")
        raise
    finally:
        update_job_progress(job_id)


def _extract(shard: StimulusShard, progress: lifecycle.ProgressReporter, n_shards: int, worker: str) -> str:
    from stimuli.shards import extract_shard

    StimulusShard.objects.filter(pk=shard.pk).update(worker=worker)
    job = shard.job
    return str(extract_shard(jobs.pipeline_config(job), shard.index, n_shards, shards_dir(job), progress=progress))


def finish_job(job_id: int, n_shards: int) -> int | None:
    """The callback, once the shards are done: merge them, run the rest of the pipeline, import the
    artifact and remove the shard files; the units imported, or None when the job had already finished,
    was cancelled (recorded here) or failed. Raises ShardsPending while a shard is still to run, and
    lifecycle.JobBusy while another callback holds the job."""
    from stimuli.artifact import MANIFEST

    job = StimulusJob.objects.filter(pk=job_id).first()
    if job is None:
        return None
    if job.status == Job.Status.RUNNING and not (artifact_dir(job) / MANIFEST).exists():
        shards = list(job.shards.all())
        if len(shards) != n_shards:
            log.info("the callback of %d shards of stimulus job %s belongs to an earlier run; skipped", n_shards,
                     job_id)
            return None
        pending = [s for s in shards if s.status in (Job.Status.QUEUED, Job.Status.RUNNING)]
        if pending:
            raise ShardsPending(f"stimulus job {job_id}: shard {pending[0].index + 1} of {n_shards} is not done")
        lost = [s for s in shards if s.status != Job.Status.SUCCEEDED]
        if lost:
            lifecycle.finish(job, Job.Status.FAILED,
                             error=f"shard {lost[0].index + 1} of {n_shards} ended {lost[0].status}: {lost[0].error}")
            return None
    job = lifecycle.claim(StimulusJob, job_id, handed_over=True)
    if job is None:
        return None
    return lifecycle.carry_out(job, partial(_merge_generate_import, n_shards=n_shards))


def _merge_generate_import(job: StimulusJob, progress: lifecycle.ProgressReporter, n_shards: int) -> int:
    from stimuli.shards import listed_images, merge_shards

    folder = shards_dir(job)
    n_units = jobs.generate_and_import(job, progress, given=lambda config: {
        "images": listed_images(config, folder), "activations": merge_shards(folder, n_shards, config)})
    shutil.rmtree(folder, ignore_errors=True)
    return n_units
