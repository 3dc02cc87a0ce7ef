"""Waiting for a stimulus job on the command line, with its stage and percentage as a tqdm bar."""
import time

from django.core.management.base import CommandError
from tqdm import tqdm

from studyapp.models import StimulusJob

POLL_SECONDS = 0.3


def wait_for_job(job, timeout=None):
    """Block until the job succeeds; CommandError when it fails, is cancelled or `timeout` passes."""
    shown = None
    deadline = None if timeout is None else time.monotonic() + timeout
    with tqdm(total=100, unit="%", desc="queued", bar_format="{desc:<12} {bar} {n:.0f}%") as bar:
        while True:
            job.refresh_from_db()
            if (job.stage, job.progress) != shown:
                shown = (job.stage, job.progress)
                bar.set_description_str(job.stage or job.status, refresh=False)
                bar.n = job.progress
                bar.refresh()
            if job.status == StimulusJob.Status.SUCCEEDED:
                return job
            if job.status in (StimulusJob.Status.FAILED, StimulusJob.Status.CANCELLED):
                first_line = job.error.splitlines()[0] if job.error else ""
                raise CommandError(f"stimulus job {job.pk} {job.status}: {first_line}")
            if deadline is not None and time.monotonic() > deadline:
                raise CommandError(f"stimulus job {job.pk} still {job.status} after {timeout} s")
            time.sleep(POLL_SECONDS)
