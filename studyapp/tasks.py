"""Celery tasks, thin: each runs one job's work through `lifecycle`; and `launch`, the one way to queue
a job row for its task."""
from functools import partial

from celery import chord, group, shared_task
from django.conf import settings

from . import dispatch, lifecycle, regions, shards
from .models import Job, SobolAnalysis, StimulusJob


def _run(task, runner, row_id):
    try:
        return runner(row_id)
    except lifecycle.JobBusy as exc:
        # The broker handed the message out again while its first worker still runs the job: look
        # again once that worker has had time to finish or to fall silent.
        raise task.retry(exc=exc, countdown=settings.STIMULUS_STALE_AFTER_SECONDS) from exc


# acks_late with reject_on_worker_lost: a worker that dies mid-job leaves the message unacknowledged,
# so the broker hands it to another worker; the artifact is renamed into place only when complete, so
# the retry either finds nothing or a whole artifact. The tasks the web app sends keep no result: sending
# them then never touches the result backend.
@shared_task(bind=True, acks_late=True, reject_on_worker_lost=True, queue="gpu", max_retries=None,
             ignore_result=True)
def generate_stimuli(self, job_id):
    return _run(self, partial(shards.start_job, send_shards=send_shards), job_id)


# A shard's file is written whole or not at all, and a shard whose file is there does nothing, so a
# redelivered shard costs a look. Its result is kept: the chord counts the shards by their results.
@shared_task(bind=True, acks_late=True, reject_on_worker_lost=True, queue="gpu", max_retries=None)
def extract_stimulus_shard(self, job_id, index, n_shards):
    return _run(self, partial(shards.run_shard, index=index, n_shards=n_shards, worker=self.request.hostname or ""),
                job_id)


@shared_task(bind=True, acks_late=True, reject_on_worker_lost=True, queue="gpu", max_retries=None,
             ignore_result=True)
def finish_stimulus_shards(self, job_id, n_shards):
    return _run(self, partial(shards.finish_job, n_shards=n_shards), job_id)


def shard_chord(job_id, n_shards):
    """The shards of a job's activation pass as a group on the gpu queue, and the callback that
    finishes the job once every one is done."""
    return chord(group(extract_stimulus_shard.si(job_id, index, n_shards) for index in range(n_shards)),
                 finish_stimulus_shards.si(job_id, n_shards))


def send_shards(job_id, n_shards):
    """Start a job's shards: the chord, or with no broker all of it here."""
    if settings.CELERY_TASK_ALWAYS_EAGER:
        # No broker: the shards one after another in this process, then the callback, as the chord would.
        for index in range(n_shards):
            shards.run_shard(job_id, index, n_shards)
        shards.finish_job(job_id, n_shards)
    else:
        shard_chord(job_id, n_shards).apply_async()


# Deterministic from its seed and overwriting its own result, so a redelivered message just runs again.
@shared_task(bind=True, acks_late=True, reject_on_worker_lost=True, queue="gpu", max_retries=None,
             ignore_result=True)
def analyse_regions(self, analysis_id):
    return _run(self, regions.run_analysis, analysis_id)


TASKS = {StimulusJob: generate_stimuli, SobolAnalysis: analyse_regions}


def launch(job):
    """Queue the job row for its task once the caller's transaction commits; a broker that cannot be
    reached marks the job failed with the reason and raises dispatch.QueueUnavailable."""
    dispatch.send(TASKS[type(job)], job.pk,
                  on_unavailable=lambda detail: lifecycle.finish(job, Job.Status.FAILED, error=detail))
