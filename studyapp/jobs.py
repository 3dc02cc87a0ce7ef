"""Running a stimulus job: the job row → a pipeline config → an artifact → Unit rows.

Called by the Celery task (a GPU worker) and, in the embedded default with no broker, in process.
"""
import logging
import shutil
import threading
import time
import traceback

from django.conf import settings
from django.db import close_old_connections, transaction
from django.utils import timezone
from kombu.exceptions import OperationalError as BrokerError

from .artifacts import artifact_dir, import_artifact
from .models import StimulusJob

log = logging.getLogger(__name__)
PROGRESS_INTERVAL_S = 0.5


class JobCancelled(Exception):
    pass


class JobBusy(Exception):
    """Another worker is alive and running this job (the broker handed its message out again)."""


class Heartbeat:
    """Touches the job row every STIMULUS_HEARTBEAT_SECONDS while the pipeline runs, also through long stages that
    report no progress, so a redelivered message can tell a live worker from a dead one."""

    def __init__(self, job_id):
        self.job_id = job_id
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._beat, name=f"heartbeat-{job_id}", daemon=True)

    def _beat(self):
        try:
            while not self.stopped.wait(settings.STIMULUS_HEARTBEAT_SECONDS):
                StimulusJob.objects.filter(pk=self.job_id).update(heartbeat=timezone.now())
        finally:
            close_old_connections()

    def __enter__(self):
        StimulusJob.objects.filter(pk=self.job_id).update(heartbeat=timezone.now())
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stopped.set()
        self.thread.join()


def pipeline_config(job):
    from stimuli.config import StimulusConfig

    network = job.network
    image_set = job.image_set
    values = {
        "network": network.name if network.source != network.Source.CHECKPOINT else network.checkpoint,
        "dataset": "digits" if image_set.source == image_set.Source.BUILTIN else image_set.path,
        "layers": [job.layer],
        "bases": job.basis_list,
        "n_units": job.n_units,
        "seed": job.seed,
        **job.parameters,
    }
    if network.source == network.Source.TORCHVISION and network.weights:
        values["weights"] = network.weights
    if network.source == network.Source.CHECKPOINT:
        values["architecture"] = job.parameters.get("architecture", network.name)
    return StimulusConfig.from_dict(values)


class ProgressReporter:
    """Writes the stage and percentage to the job row at most every PROGRESS_INTERVAL_S, and stops the
    pipeline when a researcher has asked to cancel."""

    def __init__(self, job_id):
        self.job_id = job_id
        self.last_write = 0.0
        self.last_stage = None

    def __call__(self, stage, fraction):
        now = time.monotonic()
        if stage == self.last_stage and fraction < 1.0 and now - self.last_write < PROGRESS_INTERVAL_S:
            return
        self.last_stage, self.last_write = stage, now
        StimulusJob.objects.filter(pk=self.job_id).update(stage=stage, progress=round(100 * min(max(fraction, 0), 1), 1))
        status = StimulusJob.objects.filter(pk=self.job_id).values_list("status", flat=True).first()
        if status == StimulusJob.Status.CANCEL_REQUESTED:
            raise JobCancelled()


def _claim(job_id):
    """Mark the job running; None when it is finished or cancelled (a redelivered message after a
    completed run does nothing)."""
    with transaction.atomic():
        job = StimulusJob.objects.select_for_update().get(pk=job_id)
        if job.status in (StimulusJob.Status.SUCCEEDED, StimulusJob.Status.CANCELLED):
            return None
        if job.status == StimulusJob.Status.CANCEL_REQUESTED:
            _finish(job, StimulusJob.Status.CANCELLED)
            return None
        if job.status == StimulusJob.Status.RUNNING and job.heartbeat is not None and \
                (timezone.now() - job.heartbeat).total_seconds() < settings.STIMULUS_STALE_AFTER_SECONDS:
            raise JobBusy(f"job {job.pk} is running on a live worker")
        job.status = StimulusJob.Status.RUNNING
        job.attempts += 1
        job.started = job.started or timezone.now()
        job.error = ""
        job.save(update_fields=["status", "attempts", "started", "error"])
        return job


def _finish(job, status, error=""):
    # A failed or cancelled job keeps the progress its row holds; `job` may be an older copy.
    done = {"progress": 100.0} if status == StimulusJob.Status.SUCCEEDED else {}
    StimulusJob.objects.filter(pk=job.pk).update(status=status, error=error, finished=timezone.now(), **done)


def run_job(job_id):
    """Generate (unless a complete artifact is already in place from an earlier attempt) and import.
    Raises JobBusy when another live worker holds the job."""
    job = _claim(job_id)
    if job is None:
        return None
    out_dir = artifact_dir(job)
    try:
        with Heartbeat(job.pk):
            _generate_and_import(job, out_dir)
    except JobCancelled:
        _finish(job, StimulusJob.Status.CANCELLED)
        log.info("stimulus job %s cancelled", job.pk)
        return None
    except Exception as exc:
        detail = "".join(traceback.format_exception_only(type(exc), exc)).strip()
        _finish(job, StimulusJob.Status.FAILED, error=f"{detail}\n\n{traceback.format_exc()[-4000:]}")
        log.exception("stimulus job %s failed", job.pk)
        raise
    _finish(job, StimulusJob.Status.SUCCEEDED)
    n_units = job.units.count()
    log.info("stimulus job %s imported %d units", job.pk, n_units)
    return n_units


def _generate_and_import(job, out_dir):
    from stimuli import pipeline
    from stimuli.artifact import MANIFEST

    if not (out_dir / MANIFEST).exists():
        if out_dir.exists():
            shutil.rmtree(out_dir)
        out_dir.parent.mkdir(parents=True, exist_ok=True)
        # A worker killed mid-job leaves its temporary folder behind; the artifact itself never is half.
        for stale in out_dir.parent.glob(f".{out_dir.name}.tmp-*"):
            shutil.rmtree(stale, ignore_errors=True)
        pipeline.run(pipeline_config(job), out_dir, progress=ProgressReporter(job.pk))
    StimulusJob.objects.filter(pk=job.pk).update(stage="import")
    import_artifact(job, out_dir)


class QueueUnavailable(Exception):
    """The broker could not be reached, so a task was not queued."""


def send(task, row_id, on_unavailable=None):
    """Send a task for a row to its queue; with no broker configured, run it on a background thread so
    the admin page that launched it can show its progress. Either happens once the caller's transaction
    (the admin's, which saves the row) has committed: sent earlier, a worker could look for the row before
    it exists. When the broker cannot be reached, `on_unavailable(detail)` records it and
    QueueUnavailable is raised for the page to explain."""
    if not settings.CELERY_TASK_ALWAYS_EAGER:
        transaction.on_commit(lambda: _publish(task, row_id, on_unavailable))
        return

    def run_in_process():
        try:
            task.apply(args=[row_id])
        finally:
            close_old_connections()

    transaction.on_commit(threading.Thread(target=run_in_process, name=f"{task.name}-{row_id}", daemon=True).start)


def _publish(task, row_id, on_unavailable):
    try:
        task.delay(row_id)
    except BrokerError as exc:  # raised once kombu's own retries are spent
        detail = f"The task queue could not be reached ({exc}), so this was not started. Launch it again once " \
                 "the queue (Redis) is back."
        log.warning("%s for row %s not queued: %s", task.name, row_id, exc)
        if on_unavailable is not None:
            on_unavailable(detail)
        raise QueueUnavailable(detail) from exc


def enqueue(job):
    from .tasks import generate_stimuli

    send(generate_stimuli, job.pk,
         on_unavailable=lambda detail: _finish(job, StimulusJob.Status.FAILED, error=detail))
