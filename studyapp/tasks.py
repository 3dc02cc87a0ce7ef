"""Celery tasks. Thin: load the row, call one function, record the outcome (in `jobs`)."""
from celery import shared_task

from . import jobs


# acks_late with reject_on_worker_lost: a worker that dies mid-job leaves the message unacknowledged,
# so the broker hands it to another worker; the artifact is renamed into place only when complete, so
# the retry either finds nothing or a whole artifact.
@shared_task(bind=True, acks_late=True, reject_on_worker_lost=True, queue="gpu")
def generate_stimuli(self, job_id):
    return jobs.run_job(job_id)
