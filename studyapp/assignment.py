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
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime, timedelta
from typing import Any, TypeVar

from django.db import connection, transaction
from django.db.models import Count, Q
from django.utils import timezone

from . import designs
from .models import Condition, Participant, Study

OCCUPYING = (Participant.Status.STARTED, Participant.Status.COMPLETED)
P = TypeVar("P")  # what `create` makes of a slot: the participant row


class StudyFull(Exception):
    """Every condition has its quota of participants."""


def expire_stale_participants(study: Study, now: datetime | None = None) -> int:
    """Release the slots of participants past the time limit, or past the consent grace without having
    consented; returns how many."""
    now = now or timezone.now()
    deadline = now - timedelta(minutes=study.time_limit_minutes)
    grace = now - timedelta(minutes=study.consent_grace_minutes)
    return Participant.objects.filter(
        Q(started_at__lt=deadline) | Q(consented_at__isnull=True, started_at__lt=grace),
        study=study, status=Participant.Status.STARTED,
    ).update(status=Participant.Status.TIMED_OUT, finished_at=now)


def occupied(conditions: Iterable[Condition]) -> dict[int, int]:
    """Condition pk → occupied slots, in one grouped query."""
    rows = (Participant.objects.filter(condition__in=conditions, status__in=OCCUPYING, is_preview=False)
            .values("condition_id").annotate(n=Count("pk")).order_by())
    return {row["condition_id"]: row["n"] for row in rows}


def reserve(study: Study, create: Callable[[Condition], P]) -> P:
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
                # FOR NO KEY UPDATE: as exclusive among arrivals as FOR UPDATE, but it lets the trial
                # rows of other participants (whose foreign key takes KEY SHARE on this row) go in.
                locked = (Condition.objects.select_for_update(skip_locked=not wait, no_key=True)
                          .filter(pk=condition.pk).first())
                if locked is None:
                    continue
                n = Participant.objects.filter(condition=locked, status__in=OCCUPYING, is_preview=False).count()
                if n < study.participants_per_condition:
                    return create(locked)
    raise StudyFull("every condition has its quota of participants")


# Within-participant and mixed designs: the slot is a counterbalancing order, not a condition.

def condition_factors(condition: Condition, with_band: bool = True) -> dict[str, Any]:
    """A condition's factor levels as `designs` reads them. The query band reads the condition's job (its
    summary, a large row): `with_band=False` leaves it out where the design does not name it."""
    return {"name": condition.name, "reference_type": condition.reference_type,
            "n_references": condition.n_references, "min_references": condition.min_references,
            "query_band": condition.query_band() if with_band else None, "basis": condition.basis,
            "layer": condition.layer, "paradigm": condition.paradigm}


def design_of(study: Study) -> designs.Design:
    return designs.Design(
        design=study.design, between_factors=tuple(study.between_factors or ()),
        block_group_by=tuple(study.block_group_by or ()), block_alternate=study.block_alternate,
        counterbalancing=study.counterbalancing, blocks_per_condition=study.blocks_per_condition)


def study_plan(study: Study, conditions: list[Condition] | None = None
               ) -> tuple[list[Condition], list[designs.Order], list[int]]:
    """(conditions, orders, quota per order) of a within or mixed study. Raises designs.DesignError."""
    design = design_of(study)
    with_band = "query_band" in (*design.between_factors, *design.block_group_by, design.block_alternate)
    if conditions is None:
        # the job comes along only when a condition's query band is read
        conditions = list(study.conditions.select_related("job") if with_band else study.conditions.all())
    orders = designs.study_orders([condition_factors(c, with_band) for c in conditions], design)
    return conditions, orders, designs.quotas(orders, study.participants_per_condition)


def practice_condition(study: Study, conditions: Sequence[Condition], order: designs.Order) -> Condition:
    """The condition whose trials the practice shows: the study's `practice_block` where the order's
    group has it, the order's first block otherwise."""
    members = [conditions[i] for i in order.blocks]
    named = [c for c in members if c.name == study.practice_block]
    return named[0] if named else members[0]


def occupied_orders(study: Study) -> dict[int, int]:
    rows = (Participant.objects.filter(study=study, order__isnull=False, status__in=OCCUPYING, is_preview=False)
            .values("order").annotate(n=Count("pk")).order_by())
    return {row["order"]: row["n"] for row in rows}


def _lock_order(study: Study, order_index: int, wait: bool) -> bool:
    """The lock of one order's slots, held to the end of the transaction. PostgreSQL has no row per
    order to lock, so an advisory lock keyed by (study, order) stands in for it, with the same choice
    between skipping a taken lock and waiting for it. Other databases lock the study's row: SQLite
    serializes its writers anyway."""
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            if wait:
                # The waiting form returns void; it is selected alone (an expression around it may be
                # folded away by the planner without the call).
                cursor.execute("SELECT pg_advisory_xact_lock(%s, %s)", [study.pk, order_index])
                return True
            cursor.execute("SELECT pg_try_advisory_xact_lock(%s, %s)", [study.pk, order_index])
            return bool(cursor.fetchone()[0])
    return Study.objects.select_for_update().filter(pk=study.pk).exists()


def reserve_order(study: Study, create: Callable[..., P]) -> P:
    """Call `create(condition, order=…, order_slot=…)` for the neediest order with a free slot, under
    that order's lock, in a transaction of its own; `condition` is the order's practice condition.
    Raises StudyFull. The order's lowest free slot is taken, so the slots of the admitted participants
    are 0..quota-1 whatever returned in between (the disjoint allocation's rotation counts on it)."""
    try:
        conditions, orders, quota = study_plan(study)
    except designs.DesignError as exc:
        raise StudyFull(str(exc)) from exc
    counts = occupied_orders(study)
    candidates = sorted((o for o in orders if counts.get(o.index, 0) < quota[o.index]),
                        key=lambda o: (counts.get(o.index, 0) - quota[o.index], o.index))
    for wait in (False, True):
        for order in candidates:
            with transaction.atomic():
                if not _lock_order(study, order.index, wait):
                    continue
                taken = set(Participant.objects.filter(
                    study=study, order=order.index, status__in=OCCUPYING, is_preview=False,
                ).values_list("order_slot", flat=True))
                if len(taken) < quota[order.index]:
                    slot = min(set(range(quota[order.index])) - taken)
                    return create(practice_condition(study, conditions, order), order=order.index, order_slot=slot)
    raise StudyFull("every counterbalancing order has its quota of participants")


def next_arrivals(study: Study, n: int) -> list[tuple[int, int]]:
    """(order index, slot) of the next `n` arrivals of a within or mixed study, as `reserve_order` would
    give them one after another with nobody leaving: the neediest order first, its lowest free slot."""
    conditions, orders, quota = study_plan(study)
    taken = {o.index: set() for o in orders}
    for order, slot in (Participant.objects.filter(study=study, order__isnull=False, status__in=OCCUPYING,
                                                   is_preview=False).values_list("order", "order_slot")):
        taken.setdefault(order, set()).add(slot)
    out = []
    for _ in range(n):
        free = [o for o in orders if len(taken[o.index]) < quota[o.index]]
        if not free:
            break
        order = min(free, key=lambda o: (len(taken[o.index]) - quota[o.index], o.index))
        slot = min(set(range(quota[order.index])) - taken[order.index])
        taken[order.index].add(slot)
        out.append((order.index, slot))
    return out
