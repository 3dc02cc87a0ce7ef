from django.conf import settings
from django.contrib import admin
from django.urls import include, path, re_path

from . import api, views
from .artifacts import PUBLISHED_NAME

app_name = "studyapp"

participant_api = [
    path("session", api.session, name="api-session"),
    path("consent", api.consent, name="api-consent"),
    path("instructions", api.instructions, name="api-instructions"),
    path("trials", api.trial_list, name="api-trials"),
    path("responses", api.respond, name="api-responses"),
    path("questionnaire", api.questionnaire, name="api-questionnaire"),
    path("screen-out", api.screen_out, name="api-screen-out"),
    path("calibration", api.calibration, name="api-calibration"),
]

studyapp_patterns = [
    path("s/<slug:slug>/", views.landing, name="landing"),
    path("s/<slug:slug>/start", views.start, name="start"),
    # Tokens are token_urlsafe strings: anything else is not found before it reaches a query.
    path("p/<slug:token>/", views.experiment, name="experiment"),
    path("api/p/<slug:token>/", include(participant_api)),
    path("api/openapi.json", api.openapi_schema, name="openapi"),
    re_path(rf"^{settings.MEDIA_URL.lstrip('/')}(?P<name>{PUBLISHED_NAME})$", views.media, name="media"),
]

urlpatterns = [
    path("admin/", admin.site.urls),
    path("", include((studyapp_patterns, "studyapp"))),
]
