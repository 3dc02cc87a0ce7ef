"""Celery tasks. Thin: load the row, call one function, record the outcome (in `jobs`)."""
from celery import shared_task
from django.conf import settings

from . import jobs, regions


# acks_late with reject_on_worker_lost: a worker that dies mid-job leaves the message unacknowledged,
# so the broker hands it to another worker; the artifact is renamed into place only when complete, so
# the retry either finds nothing or a whole artifact.
@shared_task(bind=True, acks_late=True, reject_on_worker_lost=True, queue="gpu", max_retries=None)
def generate_stimuli(self, job_id):
    try:
        return jobs.run_job(job_id)
    except jobs.JobBusy as exc:
        # The broker handed the message out again while its first worker still runs the job: look
        # again once that worker has had time to finish or to fall silent.
        raise self.retry(exc=exc, countdown=settings.STIMULUS_STALE_AFTER_SECONDS)


# Deterministic from its seed and overwriting its own result, so a redelivered message just runs again.
@shared_task(acks_late=True, reject_on_worker_lost=True, queue="gpu")
def analyse_regions(analysis_id):
    return regions.run_analysis(analysis_id)
