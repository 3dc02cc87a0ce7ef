"""Which condition a new participant joins: the one furthest below its quota.

A slot counts while its participant is active or has completed. A participant who returned, or who has
not finished within the study's time limit, frees the slot (Pavlovia's shelf works the same way). The
study row is locked while counting, so simultaneous arrivals on PostgreSQL queue up instead of all
joining the same condition.
"""
from datetime import timedelta

from django.db.models import Count, Q
from django.utils import timezone

from .models import Participant, Study


class StudyFull(Exception):
    """Every condition has its quota of participants."""


def expire_stale_participants(study, now=None):
    now = now or timezone.now()
    deadline = now - timedelta(minutes=study.time_limit_minutes)
    return Participant.objects.filter(
        study=study, status=Participant.Status.STARTED, started_at__lt=deadline,
    ).update(status=Participant.Status.TIMED_OUT, finished_at=now)


def choose_condition(study):
    """The condition with the fewest occupied slots; ties go to the earliest condition. Call inside a
    transaction that holds the study row (`select_for_update`)."""
    occupied = Q(participants__status__in=[Participant.Status.STARTED, Participant.Status.COMPLETED],
                 participants__is_preview=False)
    conditions = list(study.conditions.annotate(n=Count("participants", filter=occupied)).order_by("n", "pk"))
    if not conditions:
        raise StudyFull("the study has no conditions")
    best = conditions[0]
    if best.n >= study.participants_per_condition:
        raise StudyFull("every condition has its quota of participants")
    return best


def lock_study(study_id):
    return Study.objects.select_for_update().get(pk=study_id)
