"""Request limits on the participant's pages and API, counted in Django's cache.

Every view whose URL carries a participant token (the experiment page and the JSON API) is limited per
token and per client address, in fixed windows: a request over either limit is answered 429 with
Retry-After before the view, the CSRF check or the database are touched. The limits are far above what
a participant clicking through trials needs (an answer every second or two is one request, a batch of
trials another), so they bind only on scripts: token guessing, a stuck retry loop, a flood.

With several web processes the counters must live in a shared cache (Redis through CACHE_URL); with
the local-memory default each process counts on its own, so the effective limits are that many times
higher.
"""
import hashlib
import math
import time

from django.conf import settings
from django.core.cache import cache
from django.http import HttpResponse, JsonResponse

KEY_PREFIX = "ratelimit"


def client_address(request):
    """The address a request came from. Each trusted proxy appends the address it received the request
    from to X-Forwarded-For, so with `TRUSTED_PROXY_COUNT` proxies in front the client is that many
    entries from the right; anything further left is whatever the client chose to send."""
    proxies = getattr(settings, "TRUSTED_PROXY_COUNT", 0)
    if proxies > 0:
        forwarded = [a.strip() for a in request.META.get("HTTP_X_FORWARDED_FOR", "").split(",") if a.strip()]
        if forwarded:
            return forwarded[-min(proxies, len(forwarded))]
    return request.META.get("REMOTE_ADDR", "")


def _digest(value):
    # Tokens are credentials and forwarded addresses are client-chosen text: neither goes into a key raw.
    return hashlib.blake2b(value.encode("utf-8", "surrogatepass"), digest_size=16).hexdigest()


def count(scope, ident, window, now=None):
    """Count one request for (`scope`, `ident`) in the current window; returns the count so far and
    the seconds until the window ends."""
    now = time.time() if now is None else now
    index = int(now // window)
    key = f"{KEY_PREFIX}:{scope}:{_digest(ident)}:{index}"
    try:
        n = cache.incr(key)
    except ValueError:  # no counter for this window yet
        if cache.add(key, 1, timeout=window + 1):
            n = 1
        else:
            n = cache.incr(key)
    return n, max(1, math.ceil((index + 1) * window - now))


def limited(request, token, now=None):
    """Seconds the client must wait, or 0 when the request may go on. The address is counted first,
    so a flood of guessed tokens from one address never reaches the per-token counters."""
    window = settings.PARTICIPANT_RATE_LIMIT_WINDOW
    for scope, ident, limit in (("ip", client_address(request), settings.PARTICIPANT_RATE_LIMIT_PER_IP),
                                ("token", token, settings.PARTICIPANT_RATE_LIMIT_PER_TOKEN)):
        if limit > 0:
            n, wait = count(scope, ident, window, now)
            if n > limit:
                return wait
    return 0


def too_many(request, wait):
    detail = f"Too many requests. Please wait {wait} seconds and try again."
    if request.path_info.startswith("/api/"):
        response = JsonResponse({"error": "rate_limited", "detail": detail}, status=429)
    else:
        response = HttpResponse(detail, status=429, content_type="text/plain; charset=utf-8")
    response["Retry-After"] = str(wait)
    return response


class ParticipantRateLimitMiddleware:
    """Applies `limited` to the views of the studyapp namespace that take a participant token."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        return self.get_response(request)

    def process_view(self, request, view_func, view_args, view_kwargs):
        match = request.resolver_match
        if "token" not in view_kwargs or match is None or match.namespace != "studyapp":
            return None
        wait = limited(request, str(view_kwargs["token"]))
        return too_many(request, wait) if wait else None
