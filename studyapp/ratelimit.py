"""Request limits on the participant's pages and API, counted in Django's cache.

Every view whose URL carries a participant token (the experiment page and the JSON API) is limited per
token and per client address, in fixed windows: a request over either limit is answered 429 with
Retry-After before the view, the CSRF check or the database are touched. The limits are far above what
a participant clicking through trials needs (an answer every second or two is one request, a batch of
trials another), so they bind only on scripts: token guessing, a stuck retry loop, a flood.

With several web processes the counters must live in a shared cache (Redis through CACHE_URL); with
the local-memory default each process counts on its own, so the effective limits are that many times
higher.

The limits fail open: when the cache cannot be reached, requests go through uncounted (with a warning in
the log) rather than failing, since a participant half-way through a study must not lose it to a cache
outage; for `CACHE_RETRY_SECONDS` after an error this process does not try the cache again, so a hung
Redis costs one socket timeout per process, not one per request.
"""
import hashlib
import logging
import math
import time
import weakref
from collections.abc import Callable, Sequence

import redis
from django.conf import settings
from django.core.cache import cache, caches
from django.core.cache.backends.redis import RedisCache
from django.http import HttpRequest, HttpResponse, JsonResponse
from redis.commands.core import Script

from .middleware import API_PREFIX

log = logging.getLogger(__name__)
KEY_PREFIX = "ratelimit"
# What Django's Redis cache raises when the server is down, hung or refusing.
CACHE_ERRORS = (redis.RedisError, OSError)
CACHE_RETRY_SECONDS = 5.0
_cache_down_until = 0.0


def cache_available() -> bool:
    """False for a while after a cache error in this process (see `cache_failed`)."""
    return time.monotonic() >= _cache_down_until


def cache_failed(exc: BaseException, consequence: str) -> None:
    global _cache_down_until
    _cache_down_until = time.monotonic() + CACHE_RETRY_SECONDS
    log.warning("the cache cannot be reached (%s: %s); %s for the next %.0f s", type(exc).__name__, exc,
                consequence, CACHE_RETRY_SECONDS)


def client_address(request: HttpRequest) -> str:
    """The address a request came from. Each trusted proxy appends the address it received the request
    from to X-Forwarded-For, so with `TRUSTED_PROXY_COUNT` proxies in front the client is that many
    entries from the right; anything further left is whatever the client chose to send."""
    proxies = getattr(settings, "TRUSTED_PROXY_COUNT", 0)
    if proxies > 0:
        forwarded = [a.strip() for a in request.META.get("HTTP_X_FORWARDED_FOR", "").split(",") if a.strip()]
        if forwarded:
            return forwarded[-min(proxies, len(forwarded))]
    return request.META.get("REMOTE_ADDR", "")


def _digest(value: str) -> str:
    # Tokens are credentials and forwarded addresses are client-chosen text: neither goes into a key raw.
    return hashlib.blake2b(value.encode("utf-8", "surrogatepass"), digest_size=16).hexdigest()


def _key(scope: str, ident: str, index: int) -> str:
    return f"{KEY_PREFIX}:{scope}:{_digest(ident)}:{index}"


def count(scope: str, ident: str, window: int, now: float | None = None) -> tuple[int, int]:
    """Count one request for (`scope`, `ident`) in the current window; returns the count so far and
    the seconds until the window ends."""
    now = time.time() if now is None else now
    index = int(now // window)
    key = _key(scope, ident, index)
    try:
        n = cache.incr(key)
    except ValueError:  # no counter for this window yet
        if cache.add(key, 1, timeout=window + 1):
            n = 1
        else:
            n = cache.incr(key)
    return n, max(1, math.ceil((index + 1) * window - now))


# The counters in order, in one round trip: each is counted only while those before it are within
# their limits, so a flood of guessed tokens from one address never creates per-token counters.
# KEYS: the counters; ARGV: each counter's limit, then the seconds a counter lives. Returns the
# 1-based position of the first counter over its limit, or 0.
_COUNT_IN_ORDER = """
for i, key in ipairs(KEYS) do
    local n = redis.call('INCR', key)
    if n == 1 then redis.call('EXPIRE', key, ARGV[#KEYS + 1]) end
    if n > tonumber(ARGV[i]) then return i end
end
return 0
"""
_script: Script | None = None
# One client per cache backend (Django keeps a backend per thread), made on its first request: Django's
# `get_client` builds a new redis.Redis on every call, and building one (its table of some 170 response
# callbacks) cost 67 us, a twentieth of an answer's web CPU. The client holds no connection of its own:
# it takes one from the backend's pool for each command, and the pool is replaced, with a new client,
# only when the backend is.
_clients: "weakref.WeakKeyDictionary[RedisCache, redis.Redis]" = weakref.WeakKeyDictionary()


def _redis() -> tuple[Script, redis.Redis] | None:
    """(the counting script, a client of the cache's Redis), or None when the cache is not Django's Redis
    cache. Django's cache API needs an EXISTS and an INCR per counter, two counters per request: as
    much web CPU as the whole answer path, so Redis gets the script instead."""
    global _script
    backend = caches["default"]  # `cache` is a proxy, which isinstance cannot see through
    if not isinstance(backend, RedisCache):
        return None
    client = _clients.get(backend)
    if client is None:
        # `_cache` is the backend's client wrapper: Django's public cache API runs no scripts.
        client = _clients[backend] = backend._cache.get_client(write=True)
    if _script is None:
        # The script object holds only the script's hash and reloads the script after a Redis restart.
        _script = client.register_script(_COUNT_IN_ORDER)
    return _script, client


def over_limit(counters: Sequence[tuple[str, str, int]], window: int, now: float | None = None) -> int:
    """Count a request on each of `counters` ((scope, ident, limit), checked in order); returns the
    seconds until the window ends when one is over its limit, else 0."""
    now = time.time() if now is None else now
    index = int(now // window)
    wait = max(1, math.ceil((index + 1) * window - now))
    redis_ = _redis()
    if redis_ is not None:
        script, client = redis_
        keys = [cache.make_and_validate_key(_key(scope, ident, index)) for scope, ident, _ in counters]
        over = script(keys=keys, args=[limit for _, _, limit in counters] + [window + 1], client=client)
        return wait if over else 0
    for scope, ident, limit in counters:
        n, _ = count(scope, ident, window, now)
        if n > limit:
            return wait
    return 0


def limited(request: HttpRequest, token: str, now: float | None = None) -> int:
    """Seconds the client must wait, or 0 when the request may go on (also when the cache cannot be
    reached). The address is counted first, so a flood of guessed tokens from one address never
    reaches the per-token counters."""
    counters = [(scope, ident, limit) for scope, ident, limit in (
        ("ip", client_address(request), settings.PARTICIPANT_RATE_LIMIT_PER_IP),
        ("token", token, settings.PARTICIPANT_RATE_LIMIT_PER_TOKEN),
    ) if limit > 0]
    if not counters or not cache_available():
        return 0
    try:
        return over_limit(counters, settings.PARTICIPANT_RATE_LIMIT_WINDOW, now)
    except CACHE_ERRORS as exc:
        cache_failed(exc, "participant requests are not rate limited")
        return 0


def too_many(request: HttpRequest, wait: int) -> HttpResponse:
    detail = f"Too many requests. Please wait {wait} seconds and try again."
    if request.path_info.startswith(API_PREFIX):
        response = JsonResponse({"error": "rate_limited", "detail": detail}, status=429)
    else:
        response = HttpResponse(detail, status=429, content_type="text/plain; charset=utf-8")
    response["Retry-After"] = str(wait)
    return response


class ParticipantRateLimitMiddleware:
    """Applies `limited` to the views of the studyapp namespace that take a participant token."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        return self.get_response(request)

    def process_view(self, request: HttpRequest, view_func: Callable, view_args: tuple, view_kwargs: dict
                     ) -> HttpResponse | None:
        match = request.resolver_match
        if "token" not in view_kwargs or match is None or match.namespace != "studyapp":
            return None
        wait = limited(request, str(view_kwargs["token"]))
        return too_many(request, wait) if wait else None
