"""Which condition a new participant joins: the one furthest below its quota.

A slot counts while its participant is active or has completed. A participant who returned, who has not
consented within the study's grace, or who has not finished within its time limit, frees the slot
(Pavlovia's shelf works the same way).

A launch brings hundreds of arrivals a minute, so they must not queue on one lock. Each condition's row
is the lock for its own slots, held only while its slots are counted and the participant row inserted
(the trial list is stored after it): an arrival takes the neediest condition whose lock is free and
falls back to waiting only when every one is taken. The counting under the condition's lock keeps each
quota exact; balance across conditions is that of the moment's counts.
"""
from datetime import timedelta

from django.db import transaction
from django.db.models import Count, Q
from django.utils import timezone

from .models import Condition, Participant

OCCUPYING = (Participant.Status.STARTED, Participant.Status.COMPLETED)


class StudyFull(Exception):
    """Every condition has its quota of participants."""


def expire_stale_participants(study, now=None):
    """Release the slots of participants past the time limit, or past the consent grace without having
    consented; returns how many."""
    now = now or timezone.now()
    deadline = now - timedelta(minutes=study.time_limit_minutes)
    grace = now - timedelta(minutes=study.consent_grace_minutes)
    return Participant.objects.filter(
        Q(started_at__lt=deadline) | Q(consented_at__isnull=True, started_at__lt=grace),
        study=study, status=Participant.Status.STARTED,
    ).update(status=Participant.Status.TIMED_OUT, finished_at=now)


def occupied(conditions):
    """Condition pk → occupied slots, in one grouped query."""
    rows = (Participant.objects.filter(condition__in=conditions, status__in=OCCUPYING, is_preview=False)
            .values("condition_id").annotate(n=Count("pk")).order_by())
    return {row["condition_id"]: row["n"] for row in rows}


def reserve(study, create):
    """Call `create(condition)` (which inserts the participant row) for the neediest condition with a
    free slot, under that condition's row lock, in a transaction of its own. Raises StudyFull."""
    conditions = list(study.conditions.all())
    if not conditions:
        raise StudyFull("the study has no conditions")
    counts = occupied(conditions)
    candidates = sorted((c for c in conditions if counts.get(c.pk, 0) < study.participants_per_condition),
                        key=lambda c: (counts.get(c.pk, 0), c.pk))
    # First pass: only conditions whose lock is free (skip_locked); second: wait for each in turn.
    for wait in (False, True):
        for condition in candidates:
            with transaction.atomic():
                locked = Condition.objects.select_for_update(skip_locked=not wait).filter(pk=condition.pk).first()
                if locked is None:
                    continue
                n = Participant.objects.filter(condition=locked, status__in=OCCUPYING, is_preview=False).count()
                if n < study.participants_per_condition:
                    return create(locked)
    raise StudyFull("every condition has its quota of participants")
