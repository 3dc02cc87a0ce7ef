"""Sign-in lockout for the researcher's door (the admin).

Failed sign-ins are counted in Django's cache per (username, client address) and per client address.
After `LOGIN_LOCKOUT_ATTEMPTS` failures within `LOGIN_LOCKOUT_WINDOW_SECONDS` for one username from one
address, that pair is refused for `LOGIN_LOCKOUT_SECONDS`, whatever the password; after
`LOGIN_LOCKOUT_ADDRESS_ATTEMPTS` failures from one address, whatever the usernames, the address is. A
username alone is never locked: someone guessing the researcher's password from elsewhere locks out
themselves, not the researcher. The authentication backend refuses before checking the password (so
any sign-in path is covered) and the admin's login form says why. Attempts made while locked out are not
counted, so a lockout ends on time. A successful sign-in clears the count of its pair.

As with the rate limits, several web processes need a shared cache (CACHE_URL) for the counts to add up,
and as they do, the lockout fails open: while the cache cannot be reached, sign-ins are checked by
password alone (with a warning in the log), so a Redis outage does not lock the researchers out of the
admin they need to see what is wrong.
"""
import hashlib
import math
import time

from django.conf import settings
from django.contrib.admin.forms import AdminAuthenticationForm
from django.contrib.auth import get_user_model
from django.contrib.auth.backends import ModelBackend
from django.contrib.auth.signals import user_logged_in, user_login_failed
from django.core.cache import cache
from django.core.exceptions import PermissionDenied, ValidationError
from django.dispatch import receiver

from .ratelimit import CACHE_ERRORS, cache_available, cache_failed, client_address

KEY_PREFIX = "lockout"


def _subjects(request, username):
    """(kind, digest, failures allowed) of each counter a sign-in attempt is counted on."""
    address = client_address(request) if request is not None else ""
    subjects = []
    if username:
        subjects.append(("user-ip", f"{str(username).casefold()}\x00{address}", settings.LOGIN_LOCKOUT_ATTEMPTS))
    if request is not None:
        subjects.append(("ip", address, settings.LOGIN_LOCKOUT_ADDRESS_ATTEMPTS))
    return [(kind, hashlib.blake2b(value.encode("utf-8", "surrogatepass"), digest_size=16).hexdigest(), limit)
            for kind, value, limit in subjects]


def _lock_key(kind, digest):
    return f"{KEY_PREFIX}:locked:{kind}:{digest}"


def _count_key(kind, digest):
    return f"{KEY_PREFIX}:failures:{kind}:{digest}"


def locked_for(request, username):
    """Seconds until sign-in is allowed again for this username or client address; 0 when it is."""
    if not cache_available():
        return 0
    keys = [_lock_key(kind, digest) for kind, digest, _ in _subjects(request, username)]
    try:
        until = max(cache.get_many(keys).values(), default=0)
    except CACHE_ERRORS as exc:
        cache_failed(exc, "sign-ins are not locked out")
        return 0
    return max(0, math.ceil(until - time.time()))


def message(seconds):
    minutes = max(1, math.ceil(seconds / 60))
    return (f"Too many failed sign-in attempts. Signing in from this network is blocked for "
            f"{minutes} more minute{'s' if minutes != 1 else ''}; please try again later.")


@receiver(user_login_failed, dispatch_uid="studyapp.lockout.count_failure")
def count_failure(sender, credentials, request=None, **kwargs):
    username = credentials.get(get_user_model().USERNAME_FIELD)
    if locked_for(request, username) or not cache_available():
        return
    try:
        _count_failure(request, username)
    except CACHE_ERRORS as exc:
        cache_failed(exc, "failed sign-ins are not counted")


def _count_failure(request, username):
    window = settings.LOGIN_LOCKOUT_WINDOW_SECONDS
    for kind, digest, limit in _subjects(request, username):
        key = _count_key(kind, digest)
        if cache.add(key, 1, timeout=window):
            failures = 1
        else:
            try:
                failures = cache.incr(key)
            except ValueError:  # expired between the two calls
                cache.add(key, 1, timeout=window)
                failures = 1
        if failures >= limit:
            duration = settings.LOGIN_LOCKOUT_SECONDS
            cache.set(_lock_key(kind, digest), time.time() + duration, timeout=duration)
            cache.delete(key)


@receiver(user_logged_in, dispatch_uid="studyapp.lockout.clear_failures")
def clear_failures(sender, request, user, **kwargs):
    if not cache_available():
        return
    try:
        cache.delete_many([_count_key(kind, digest) for kind, digest, _ in _subjects(request, user.get_username())
                           if kind == "user-ip"])
    except CACHE_ERRORS as exc:
        cache_failed(exc, "sign-in failures are not cleared")


class LockoutBackend(ModelBackend):
    """Django's model backend, refusing while the username or the client address is locked out."""

    def authenticate(self, request, username=None, password=None, **kwargs):
        if username is None:
            username = kwargs.get(get_user_model().USERNAME_FIELD)
        if locked_for(request, username):
            # PermissionDenied stops Django from trying further backends.
            raise PermissionDenied("locked out")
        return super().authenticate(request, username=username, password=password, **kwargs)


class LockoutAdminAuthenticationForm(AdminAuthenticationForm):
    """The admin's login form, telling a locked-out user why signing in fails."""

    def clean(self):
        username = self.cleaned_data.get("username")
        try:
            return super().clean()
        except ValidationError:
            wait = locked_for(self.request, username)
            if wait:
                raise ValidationError(message(wait), code="locked_out") from None
            raise
