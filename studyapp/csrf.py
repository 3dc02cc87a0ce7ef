"""CSRF failures on the participant API answered in the API's JSON error shape (docs/contracts.md,
section 3), so the front end can show a sentence rather than an HTML page; elsewhere Django's own page."""
from django.http import JsonResponse
from django.views.csrf import csrf_failure as django_csrf_failure

from .middleware import API_PREFIX


def csrf_failure(request, reason=""):
    if request.path_info.startswith(API_PREFIX):
        return JsonResponse({"error": "csrf_failed", "detail": "The page's security token is missing or has "
                             "expired. Please reload the page and try again."}, status=403)
    return django_csrf_failure(request, reason=reason)
