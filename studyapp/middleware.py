"""A database that is briefly away (a restart, a failover) answers 503 with Retry-After, so the
participant's page retries instead of showing a server error, and the request is not half-done: each
answer is written in one transaction that either committed or did not."""
import logging

from django.db import InterfaceError, OperationalError
from django.http import JsonResponse
from django.shortcuts import render

log = logging.getLogger(__name__)
RETRY_AFTER_SECONDS = 5


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
        if request.path.startswith("/api/"):
            response = JsonResponse({"error": "unavailable", "detail": detail}, status=503)
        else:
            response = render(request, "studyapp/message.html", {"title": "One moment", "message": detail},
                              status=503)
        response["Retry-After"] = str(RETRY_AFTER_SECONDS)
        return response
