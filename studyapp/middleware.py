"""A database that is briefly away (a restart, a failover) answers 503 with Retry-After, so the
participant's page retries instead of showing a server error, and the request is not half-done: each
answer is written in one transaction that either committed or did not. A task queue that cannot be
reached answers the researcher who launched a job with a page that says so. Sessions, users and
messages are the browser pages' and the admin's: the participant API goes around them."""
import logging

from django.contrib.auth.middleware import AuthenticationMiddleware
from django.contrib.messages.middleware import MessageMiddleware
from django.contrib.sessions.middleware import SessionMiddleware
from django.db import InterfaceError, OperationalError
from django.http import JsonResponse
from django.shortcuts import render

from .dispatch import QueueUnavailable

log = logging.getLogger(__name__)
RETRY_AFTER_SECONDS = 5
API_PREFIX = "/api/"


class DatabaseUnavailableMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        return self.get_response(request)

    def process_exception(self, request, exception):
        if not isinstance(exception, (OperationalError, InterfaceError)):
            return None
        log.warning("database unavailable for %s %s: %s", request.method, request.path, exception)
        detail = "The server is busy for a moment. Your answers are safe; please try again in a few seconds."
        if request.path_info.startswith(API_PREFIX):
            response = JsonResponse({"error": "unavailable", "detail": detail}, status=503)
        else:
            response = render(request, "studyapp/message.html", {"title": "One moment", "message": detail},
                              status=503)
        response["Retry-After"] = str(RETRY_AFTER_SECONDS)
        return response


class QueueUnavailableMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        return self.get_response(request)

    def process_exception(self, request, exception):
        if not isinstance(exception, QueueUnavailable):
            return None
        return render(request, "studyapp/message.html", {"title": "The task queue cannot be reached",
                                                          "message": str(exception)}, status=503)


class _NotOnParticipantAPI:
    """The participant API is authenticated by the token in its URL and its POSTs by the CSRF cookie and
    header; it reads no session, user or message, so the answer path does not pay for setting them up.
    Subclasses of Django's own classes, so that the admin's checks still find them in MIDDLEWARE."""

    def __call__(self, request):
        if request.path_info.startswith(API_PREFIX):
            return self.get_response(request)
        return super().__call__(request)


class BrowserSessionMiddleware(_NotOnParticipantAPI, SessionMiddleware):
    pass


class BrowserAuthenticationMiddleware(_NotOnParticipantAPI, AuthenticationMiddleware):
    pass


class BrowserMessageMiddleware(_NotOnParticipantAPI, MessageMiddleware):
    pass


class APIErrorShapeMiddleware:
    """Every error under /api/ in the API's JSON shape (docs/contracts.md, section 3), whatever produced
    it: an unknown token or route (Http404), a wrong method (require_POST's 405), a body over Django's
    upload limit (400 from RequestDataTooBig), a server error. The views answer their own refusals in
    that shape already; this catches what Django answers before or around them, keeping its headers
    (Allow, Retry-After)."""

    CODES = {400: "bad_request", 403: "forbidden", 404: "not_found", 405: "method_not_allowed",
             413: "too_large", 415: "unsupported_media_type", 429: "rate_limited", 500: "server_error",
             503: "unavailable"}
    DETAILS = {
        400: "The request could not be read.",
        403: "This request is not allowed.",
        404: "There is nothing here. Please check the link.",
        405: "This address does not accept this method.",
        413: "The request body is too large.",
        500: "Something went wrong on our side. Your answers so far are safe; please try again.",
    }

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        response = self.get_response(request)
        if (response.status_code < 400 or not request.path_info.startswith(API_PREFIX)
                or response.get("Content-Type", "").startswith("application/json")):
            return response
        status = response.status_code
        shaped = JsonResponse({"error": self.CODES.get(status, f"http_{status}"),
                               "detail": self.DETAILS.get(status, "The request was refused.")}, status=status)
        for header in ("Allow", "Retry-After"):
            if header in response:
                shaped[header] = response[header]
        return shaped
