"""Settings for the test suite.

The suite runs on PostgreSQL, the production database, whenever one answers (DATABASE_URL, or
TEST_DATABASE_URL, default the local server with database `test`); otherwise on SQLite, and the tests
marked `postgres` skip and say why.
"""
import socket
from urllib.parse import urlparse

from .base import *  # noqa: F401,F403
from .base import env


def _answers(url, timeout=0.5):
    parsed = urlparse(url)
    try:
        with socket.create_connection((parsed.hostname or "127.0.0.1", parsed.port or 5432), timeout=timeout):
            return True
    except OSError:
        return False


if "DATABASE_URL" not in env.ENVIRON:
    _postgres = env("TEST_DATABASE_URL", default="postgres://postgres@127.0.0.1:5432/test")
    if _postgres and _answers(_postgres):
        DATABASES = {"default": env.db_url_config(_postgres)}  # noqa: F811

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
}
CELERY_TASK_ALWAYS_EAGER = True
CELERY_BROKER_URL = ""
# Every test-client request comes from 127.0.0.1 and local-memory counters outlive a test, so the suite
# as a whole would trip the per-address limit; the rate-limit tests turn the limits on for themselves.
PARTICIPANT_RATE_LIMIT_PER_TOKEN = 0
PARTICIPANT_RATE_LIMIT_PER_IP = 0
ARRIVAL_RATE_LIMIT_PER_IP = 0
ARRIVAL_RATE_LIMIT_PER_STUDY = 0
