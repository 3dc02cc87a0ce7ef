"""Sending a task for a row to its queue, or, with no broker configured, running it in process."""
import logging
import threading

from django.conf import settings
from django.db import close_old_connections, transaction
from kombu.exceptions import OperationalError as BrokerError

log = logging.getLogger(__name__)


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
