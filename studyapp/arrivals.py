"""Arrivals at a study's start form: their rate limits, and the per-minute counts the monitor shows.

`POST /s/<slug>/start` reserves a slot, so a script that posts it in a loop could fill a study before
any real participant arrives. It is limited per client address (and study) and per study, with the
counters and the fail-open behaviour of studyapp.ratelimit; a refused arrival gets a page saying when
to try again, with Retry-After. The per-study ceiling is far above a real launch (Prolific sends at
most a few hundred people a minute) and bounds a flood from many addresses.

The monitor's arrivals and refusals per minute are counted in the same cache (per-process with the
local-memory default, shared with Redis); releases are read from the participant rows.
"""
import time
from datetime import UTC, datetime

from django.conf import settings
from django.core.cache import cache
from django.db.models import Count
from django.db.models.functions import TruncMinute

from . import ratelimit
from .models import Participant

EVENT_PREFIX = "arrivals"
EVENT_KINDS = ("arrived", "refused")
# Per-minute counts are kept this long: the monitor shows the last MONITOR_MINUTES.
EVENT_TTL_SECONDS = 2 * 3600
MONITOR_MINUTES = 15


def limited(request, study, now=None):
    """Seconds the client must wait before starting again, or 0 (also when the cache is down)."""
    counters = [(scope, ident, limit) for scope, ident, limit in (
        ("arrival-ip", f"{study.pk}:{ratelimit.client_address(request)}", settings.ARRIVAL_RATE_LIMIT_PER_IP),
        ("arrival-study", str(study.pk), settings.ARRIVAL_RATE_LIMIT_PER_STUDY),
    ) if limit > 0]
    if not counters or not ratelimit.cache_available():
        return 0
    try:
        return ratelimit.over_limit(counters, settings.ARRIVAL_RATE_LIMIT_WINDOW, now)
    except ratelimit.CACHE_ERRORS as exc:
        ratelimit.cache_failed(exc, "arrivals are not rate limited")
        return 0


def _event_key(study_id, kind, minute):
    return f"{EVENT_PREFIX}:{study_id}:{kind}:{minute}"


def record(study, kind, now=None):
    """Count one arrival event ("arrived" or "refused") in the current minute."""
    if not ratelimit.cache_available():
        return
    minute = int((time.time() if now is None else now) // 60)
    key = _event_key(study.pk, kind, minute)
    try:
        if not cache.add(key, 1, timeout=EVENT_TTL_SECONDS):
            try:
                cache.incr(key)
            except ValueError:  # expired between the two calls
                cache.add(key, 1, timeout=EVENT_TTL_SECONDS)
    except ratelimit.CACHE_ERRORS as exc:
        ratelimit.cache_failed(exc, "arrivals are not counted")


def per_minute(study, minutes=MONITOR_MINUTES, now=None):
    """The last `minutes` minutes, newest first: [{"minute": datetime, "arrived", "refused",
    "released"}]. Released: participants whose slot came back (returned, timed out or never consented
    within the grace) in that minute."""
    now = time.time() if now is None else now
    current = int(now // 60)
    indices = list(range(current, current - minutes, -1))
    keys = {(kind, m): _event_key(study.pk, kind, m) for kind in EVENT_KINDS for m in indices}
    counts = {}
    if ratelimit.cache_available():
        try:
            counts = cache.get_many(list(keys.values()))
        except ratelimit.CACHE_ERRORS as exc:
            ratelimit.cache_failed(exc, "arrivals are not shown")
    since = datetime.fromtimestamp(indices[-1] * 60, tz=UTC)
    released = dict(
        Participant.objects.filter(study=study, is_preview=False, finished_at__gte=since,
                                   status__in=[Participant.Status.RETURNED, Participant.Status.TIMED_OUT])
        .annotate(minute=TruncMinute("finished_at")).values("minute").annotate(n=Count("pk"))
        .values_list("minute", "n").order_by()
    )
    rows = []
    for m in indices:
        minute = datetime.fromtimestamp(m * 60, tz=UTC)
        rows.append({"minute": minute, **{kind: counts.get(keys[(kind, m)], 0) for kind in EVENT_KINDS},
                     "released": released.get(minute, 0)})
    return rows
