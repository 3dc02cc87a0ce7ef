"""Participant pages: the landing page behind the recruitment link, and the page that runs the
jsPsych experiment. The landing page starts nothing on GET, so a chat app's link preview cannot
consume a participation."""
import re

from django.conf import settings
from django.http import Http404
from django.middleware.csrf import get_token
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_GET, require_POST, require_safe
from django.views.static import serve

from . import arrivals, participation
from .models import Participant, Study
from .recruitment import parse_arrival

RESUME_COOKIE = "studyapp_resume_{}"
RECRUITMENT_FIELDS = ("PROLIFIC_PID", "STUDY_ID", "SESSION_ID", "workerId", "assignmentId", "hitId", "turkSubmitTo")
# The media files are content-addressed: a name never points at other bytes, so caches may keep them.
MEDIA_CACHE_SECONDS = 365 * 24 * 3600


def _unavailable(request, study, title, message, status):
    return render(request, "studyapp/message.html", {"study": study, "title": title, "message": message},
                  status=status)


@require_GET
def landing(request, slug):
    study = get_object_or_404(Study, slug=slug)
    if study.status != Study.Status.LIVE and not request.user.is_staff:
        return _unavailable(request, study, "Not open", "This study is not accepting participants at the moment.", 403)
    resume = None
    token = request.COOKIES.get(RESUME_COOKIE.format(study.pk))
    # Only a token's alphabet reaches the query: a hand-made cookie can carry NUL, which PostgreSQL refuses.
    if token and re.fullmatch(r"[-\w]+", token, re.ASCII):
        resume = Participant.objects.filter(token=token, study=study, status=Participant.Status.STARTED).first()
    hidden = {k: request.GET[k] for k in RECRUITMENT_FIELDS if request.GET.get(k)}
    return render(request, "studyapp/landing.html", {"study": study, "hidden": hidden, "resume": resume})


@require_POST
def start(request, slug):
    study = get_object_or_404(Study, slug=slug)
    arrivals.record(study, "arrived")
    wait = arrivals.limited(request, study)
    if wait:
        arrivals.record(study, "refused")
        response = _unavailable(request, study, "Please wait", "Too many people are starting this study right now. "
                                f"Please try again in {wait} seconds.", 429)
        response["Retry-After"] = str(wait)
        return response
    try:
        arrival = parse_arrival(request.POST)
        # PostgreSQL text cannot hold NUL, which a hand-made request can put in a header.
        user_agent = request.META.get("HTTP_USER_AGENT", "").replace("\x00", "")
        participant = participation.start(study, arrival, user_agent,
                                          resume_token=request.COOKIES.get(RESUME_COOKIE.format(study.pk)))
    except ValueError as exc:
        arrivals.record(study, "refused")
        return _unavailable(request, study, "Link not valid", f"The study link is not valid: {exc}.", 400)
    except participation.AlreadyParticipated:
        arrivals.record(study, "refused")
        return _unavailable(request, study, "Thank you", "You have already taken part in this study, so you "
                            "cannot take part again. Thank you for your interest.", 403)
    except participation.ParticipationError as exc:
        arrivals.record(study, "refused")
        return _unavailable(request, study, "Not available", exc.detail, exc.status)
    response = redirect("studyapp:experiment", token=participant.token)
    response.set_cookie(RESUME_COOKIE.format(study.pk), participant.token, max_age=7 * 24 * 3600,
                        httponly=True, samesite="Lax", secure=settings.RESUME_COOKIE_SECURE)
    return response


@require_GET
def experiment(request, token):
    participant = get_object_or_404(Participant.objects.select_related("study"), token=token)
    config = {"token": participant.token, "api_base": f"/api/p/{participant.token}/", "csrf_token": get_token(request)}
    return render(request, "studyapp/experiment.html", {"study": participant.study, "config": config})


@require_safe
def media(request, name):
    """A published stimulus image (studyapp.artifacts): the URL pattern admits content names alone, so no
    folder, listing or other file of MEDIA_ROOT's is reachable."""
    if not settings.SERVE_MEDIA:
        raise Http404("media are served by the proxy")
    response = serve(request, name, document_root=settings.MEDIA_ROOT)
    response["Cache-Control"] = f"public, max-age={MEDIA_CACHE_SECONDS}, immutable"
    # Every published file has the same time, and its name is the URL's: the headers would only repeat them.
    del response["Last-Modified"]
    del response["Content-Disposition"]
    return response
