"""Sign-in lockout for the researcher's door (the admin), by django-axes.

django-axes records every failed sign-in as an `AccessAttempt` row (its admin lists them, with the
successful sign-ins in `AccessLog`), refuses a locked-out sign-in in its authentication backend before
any password is checked, and clears a pair's failures on a successful sign-in. The settings
(studyapp/settings/base.py) lock a (username, client address) pair out for `LOGIN_LOCKOUT_SECONDS` after
`LOGIN_LOCKOUT_ATTEMPTS` failures. A username alone is never locked: someone guessing the researcher's
password from elsewhere locks out themselves, not the researcher. Attempts made while locked out are not
recorded, so a lockout ends on time.

What this module adds to django-axes:
- a ceiling per client address, whatever the usernames (`LOGIN_LOCKOUT_ADDRESS_ATTEMPTS`): axes has one
  failure limit for all its lockout parameters, so `LockoutHandler` counts the address's failures
  against a limit of its own;
- usernames compared case-folded, and the client address read as the rate limits read it
  (`TRUSTED_PROXY_COUNT`, ratelimit.client_address);
- the admin's login form saying why signing in fails, and for how long.

The counts live in the database, not in the cache: a Redis outage locks no one out and lets no one
guess more often.
"""
import math
from datetime import timedelta

from axes.attempts import get_cool_off_threshold
from axes.handlers.database import AxesDatabaseHandler
from axes.handlers.proxy import AxesProxyHandler
from axes.helpers import get_client_username, get_cool_off
from axes.models import AccessAttempt
from django.conf import settings
from django.contrib.admin.forms import AdminAuthenticationForm
from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.db.models import Max, QuerySet, Sum
from django.http import HttpRequest, HttpResponse
from django.utils import timezone


def failure_limit(request: HttpRequest, credentials: dict | None) -> int:
    """AXES_FAILURE_LIMIT: failures of one (username, address) pair before it is locked out."""
    return settings.LOGIN_LOCKOUT_ATTEMPTS


def cool_off(request: HttpRequest | None) -> timedelta:
    """AXES_COOLOFF_TIME: how long a lockout lasts after the failure that caused it."""
    return timedelta(seconds=settings.LOGIN_LOCKOUT_SECONDS)


def username(request: HttpRequest, credentials: dict | None) -> str | None:
    """AXES_USERNAME_CALLABLE: the username tried, case-folded, so `Researcher` and `researcher` count
    as one."""
    field = get_user_model().USERNAME_FIELD
    value = credentials.get(field) if credentials else request.POST.get(field)
    return None if value is None else str(value).casefold()


def lockout_response(request: HttpRequest, original_response: HttpResponse, credentials: dict | None
                     ) -> HttpResponse:
    """AXES_LOCKOUT_CALLABLE: the admin's login page as Django rendered it, whose form says why
    (`LockoutAdminAuthenticationForm`), rather than axes' bare 429 page."""
    return original_response


class LockoutHandler(AxesDatabaseHandler):
    """django-axes' database handler, with a second limit for an address whatever the usernames.

    Axes compares `get_failures` with its one failure limit; here a pair counts its own failures, and an
    address that has reached `LOGIN_LOCKOUT_ADDRESS_ATTEMPTS` counts as at the limit for every username.
    `AXES_LOCKOUT_PARAMETERS` names the pair only, so a successful sign-in clears that pair's failures and
    not those of the other usernames tried from its address."""

    def _recent(self, request: HttpRequest) -> QuerySet:
        """The failures from the request's address that still count (within the cool-off)."""
        attempts = AccessAttempt.objects.filter(ip_address=request.axes_ip_address)
        return attempts.filter(attempt_time__gte=get_cool_off_threshold(request))

    def get_failures(self, request: HttpRequest, credentials: dict | None = None) -> int:
        address = self._recent(request)
        pair = address.filter(username=get_client_username(request, credentials))
        pair_failures = pair.aggregate(n=Sum("failures_since_start"))["n"] or 0
        address_failures = address.aggregate(n=Sum("failures_since_start"))["n"] or 0
        if address_failures >= settings.LOGIN_LOCKOUT_ADDRESS_ATTEMPTS:
            return max(pair_failures, settings.LOGIN_LOCKOUT_ATTEMPTS)
        return pair_failures

    def locked_for(self, request: HttpRequest, credentials: dict | None) -> float:
        """Seconds until this username may sign in again from this address; 0 when it may."""
        address = self._recent(request)
        pair = address.filter(username=get_client_username(request, credentials))
        ends = []
        for attempts, limit in ((pair, settings.LOGIN_LOCKOUT_ATTEMPTS),
                                (address, settings.LOGIN_LOCKOUT_ADDRESS_ATTEMPTS)):
            row = attempts.aggregate(n=Sum("failures_since_start"), last=Max("attempt_time"))
            if (row["n"] or 0) >= limit:
                ends.append(row["last"] + get_cool_off(request))
        return max([(end - timezone.now()).total_seconds() for end in ends] + [0.0])


def message(seconds: float) -> str:
    minutes = max(1, math.ceil(seconds / 60))
    return (f"Too many failed sign-in attempts. Signing in from this network is blocked for "
            f"{minutes} more minute{'s' if minutes != 1 else ''}; please try again later.")


class LockoutAdminAuthenticationForm(AdminAuthenticationForm):
    """The admin's login form, telling a locked-out user why signing in fails."""

    def clean(self) -> dict:
        try:
            return super().clean()
        except ValidationError:
            if self.request is not None:
                AxesProxyHandler.update_request(self.request)
                credentials = {get_user_model().USERNAME_FIELD: self.cleaned_data.get("username")}
                wait = AxesProxyHandler.get_implementation().locked_for(self.request, credentials)
                if wait > 0:
                    raise ValidationError(message(wait), code="locked_out") from None
            raise
