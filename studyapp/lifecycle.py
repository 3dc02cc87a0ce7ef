"""The one runner of a background job's lifecycle (`models.Job`): claim the row, keep its heartbeat,
report progress, honour a cancel request, and record success, failure or cancellation.

Each kind of job supplies only its work, `work(job, progress) -> value`, where `progress(stage, fraction)`
writes to the row and raises JobCancelled once a researcher has asked the job to stop.
"""
import logging
import threading
import time
import traceback
from collections.abc import Callable
from typing import Self, TypeVar

from django.conf import settings
from django.db import close_old_connections, transaction
from django.db.models import QuerySet
from django.utils import timezone

from .models import Job

log = logging.getLogger(__name__)
PROGRESS_INTERVAL_S = 0.5

J = TypeVar("J", bound=Job)  # a kind of job: StimulusJob, or another model on Job
T = TypeVar("T")


class JobCancelled(Exception):
    pass


class JobBusy(Exception):
    """Another worker is alive and running this job (the broker handed its message out again)."""


class Heartbeat:
    """Touches the job row every STIMULUS_HEARTBEAT_SECONDS while the work runs, also through long stages
    that report no progress, so a redelivered message can tell a live worker from a dead one."""

    def __init__(self, model: type[Job], job_id: int) -> None:
        self.rows = model.objects.filter(pk=job_id)
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._beat, name=f"heartbeat-{model.__name__}-{job_id}", daemon=True)

    def _beat(self) -> None:
        try:
            while not self.stopped.wait(settings.STIMULUS_HEARTBEAT_SECONDS):
                self.rows.update(heartbeat=timezone.now())
        finally:
            close_old_connections()

    def __enter__(self) -> Self:
        self.rows.update(heartbeat=timezone.now())
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stopped.set()
        self.thread.join()


class ProgressReporter:
    """Writes the stage and percentage to the job row at most every PROGRESS_INTERVAL_S, and stops the
    work when a researcher has asked to cancel. A part of a job (a shard) overrides `write` and
    `stopped` to report to, and listen to, the job it belongs to."""

    def __init__(self, model: type[Job], job_id: int) -> None:
        self.rows = model.objects.filter(pk=job_id)
        self.last_write = 0.0
        self.last_stage: str | None = None

    def __call__(self, stage: str, fraction: float) -> None:
        now = time.monotonic()
        if stage == self.last_stage and fraction < 1.0 and now - self.last_write < PROGRESS_INTERVAL_S:
            return
        self.last_stage, self.last_write = stage, now
        self.write(stage, min(max(fraction, 0), 1))
        if self.stopped():
            raise JobCancelled()

    def write(self, stage: str, fraction: float) -> None:
        self.rows.update(stage=stage, progress=round(100 * fraction, 1))

    def stopped(self) -> bool:
        return self.rows.values_list("status", flat=True).first() == Job.Status.CANCEL_REQUESTED


# `work(job, progress)`: what a kind of job does, reporting through `progress(stage, fraction)`.
Work = Callable[[J, ProgressReporter], T]


def _live(job: Job) -> bool:
    return job.status == Job.Status.RUNNING and job.heartbeat is not None and \
        (timezone.now() - job.heartbeat).total_seconds() < settings.STIMULUS_STALE_AFTER_SECONDS


def claim(model: type[J], job_id: int, handed_over: bool = False) -> J | None:
    """Mark the job running; None when it is finished or cancelled (a redelivered message after a
    completed run does nothing). Raises JobBusy when another live worker holds it. The claim's heartbeat
    holds the job until the runner's own takes over, so two redelivered messages cannot both take it.

    With `handed_over`, the job is taken up where other tasks left it running (a sharded job's callback,
    after its shards): it must still be running, and no new attempt is counted."""
    with transaction.atomic():
        job = model.objects.select_for_update().get(pk=job_id)
        if job.status in (Job.Status.SUCCEEDED, Job.Status.CANCELLED):
            return None
        if job.status == Job.Status.CANCEL_REQUESTED:
            finish(job, Job.Status.CANCELLED)
            return None
        if _live(job):
            raise JobBusy(f"{model._meta.verbose_name} {job.pk} is running on a live worker")
        job.heartbeat = timezone.now()
        if handed_over:
            if job.status != Job.Status.RUNNING:  # failed meanwhile, or queued again for a new run
                return None
            job.save(update_fields=["heartbeat"])
            return job
        job.status = Job.Status.RUNNING
        job.attempts += 1
        job.started = job.started or timezone.now()
        job.error = ""
        job.save(update_fields=["status", "attempts", "started", "error", "heartbeat"])
        return job


def release(job: Job) -> None:
    """Leave a claimed job running with no worker holding it: its work goes on in other tasks (a
    sharded job's shards), and the task that takes it up next (their callback) need not wait for this
    claim's heartbeat to go stale."""
    type(job).objects.filter(pk=job.pk).update(heartbeat=None)


def finish(job: Job, status: str, error: str = "") -> None:
    # A failed or cancelled job keeps the progress its row holds; `job` may be an older copy.
    done = {"progress": 100.0} if status == Job.Status.SUCCEEDED else {}
    type(job).objects.filter(pk=job.pk).update(status=status, error=error, finished=timezone.now(), **done)


def fail(job: Job, exc: BaseException, context: str = "") -> None:
    """Record `exc`, being handled now, as the job's failure; `context` leads the error's first line."""
    detail = "".join(traceback.format_exception_only(type(exc), exc)).strip()
    finish(job, Job.Status.FAILED, error=f"{context}{detail}\n\n{traceback.format_exc()[-4000:]}")
    log.exception("%s %s failed", job._meta.verbose_name, job.pk)


def requeue(queryset: QuerySet[J]) -> list[J]:
    """Put finished, failed or cancelled jobs back in the queue's starting state; running ones are left
    alone. Returns the jobs to send."""
    jobs = list(queryset.exclude(status=Job.Status.RUNNING))
    queryset.model.objects.filter(pk__in=[job.pk for job in jobs]).update(
        status=Job.Status.QUEUED, progress=0, stage="", error="")
    return jobs


def request_cancel(queryset: QuerySet[Job]) -> int:
    """Ask queued and running jobs to stop; the runner stops at the next progress report. Returns how many."""
    return queryset.filter(status__in=[Job.Status.QUEUED, Job.Status.RUNNING]).update(
        status=Job.Status.CANCEL_REQUESTED)


def run(model: type[J], job_id: int, work: Work[J, T], reporter: type[ProgressReporter] = ProgressReporter
        ) -> T | None:
    """Run `work(job, progress)` through the job's lifecycle; its value, or None when the job had already
    finished or was cancelled."""
    job = claim(model, job_id)
    if job is None:
        return None
    return carry_out(job, work, reporter)


def carry_out(job: J, work: Work[J, T], reporter: type[ProgressReporter] = ProgressReporter) -> T | None:
    """The lifecycle of a claimed job: `work(job, progress)` under its heartbeat, then success,
    cancellation or failure recorded; the work's value, or None when it was cancelled."""
    model = type(job)
    try:
        with Heartbeat(model, job.pk):
            value = work(job, reporter(model, job.pk))
    except JobCancelled:
        finish(job, Job.Status.CANCELLED)
        log.info("%s %s cancelled", model._meta.verbose_name, job.pk)
        return None
    except Exception as exc:
        fail(job, exc)
        raise
    finish(job, Job.Status.SUCCEEDED)
    return value
