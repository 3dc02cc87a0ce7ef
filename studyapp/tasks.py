"""Celery tasks, thin: each runs one job's work through `lifecycle`; and `launch`, the one way to queue
a job row for its task."""
from celery import shared_task
from django.conf import settings

from . import dispatch, jobs, lifecycle, regions
from .models import Job, SobolAnalysis, StimulusJob


def _run(task, runner, row_id):
    try:
        return runner(row_id)
    except lifecycle.JobBusy as exc:
        # The broker handed the message out again while its first worker still runs the job: look
        # again once that worker has had time to finish or to fall silent.
        raise task.retry(exc=exc, countdown=settings.STIMULUS_STALE_AFTER_SECONDS)


# acks_late with reject_on_worker_lost: a worker that dies mid-job leaves the message unacknowledged,
# so the broker hands it to another worker; the artifact is renamed into place only when complete, so
# the retry either finds nothing or a whole artifact.
@shared_task(bind=True, acks_late=True, reject_on_worker_lost=True, queue="gpu", max_retries=None)
def generate_stimuli(self, job_id):
    return _run(self, jobs.run_job, job_id)


# Deterministic from its seed and overwriting its own result, so a redelivered message just runs again.
@shared_task(bind=True, acks_late=True, reject_on_worker_lost=True, queue="gpu", max_retries=None)
def analyse_regions(self, analysis_id):
    return _run(self, regions.run_analysis, analysis_id)


TASKS = {StimulusJob: generate_stimuli, SobolAnalysis: analyse_regions}


def launch(job):
    """Queue the job row for its task once the caller's transaction commits; a broker that cannot be
    reached marks the job failed with the reason and raises dispatch.QueueUnavailable."""
    dispatch.send(TASKS[type(job)], job.pk,
                  on_unavailable=lambda detail: lifecycle.finish(job, Job.Status.FAILED, error=detail))
