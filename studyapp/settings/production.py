"""Production: PostgreSQL, Redis-backed Celery with GPU workers, gunicorn behind a proxy that ends TLS.

`manage.py check --deploy` is clean with the variables of .env.example (tests/studyapp/test_deploy.py).
"""
from .base import *  # noqa: F401,F403
from .base import env

DEBUG = False
SECRET_KEY = env("DJANGO_SECRET_KEY")
PARTICIPANT_ID_KEY = env("PARTICIPANT_ID_KEY")
# The proxy in front ends TLS and says so in this header; it must set it (or strip a client's).
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SESSION_COOKIE_SECURE = env.bool("SESSION_COOKIE_SECURE", default=True)
CSRF_COOKIE_SECURE = env.bool("CSRF_COOKIE_SECURE", default=True)
# The resume cookie holds the participant's token, their credential for the API.
RESUME_COOKIE_SECURE = env.bool("RESUME_COOKIE_SECURE", default=True)
# Plain-HTTP requests that reach the app (the proxy forwards everything) are sent to HTTPS; the
# container's health check says it came through TLS (docker-compose.yml).
SECURE_SSL_REDIRECT = env.bool("SECURE_SSL_REDIRECT", default=True)
SECURE_HSTS_SECONDS = env.int("SECURE_HSTS_SECONDS", default=365 * 24 * 3600)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env.bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", default=True)
SECURE_HSTS_PRELOAD = env.bool("SECURE_HSTS_PRELOAD", default=False)
# Submitting a domain to the browsers' preload list is its owner's decision, not a deployment default.
SILENCED_SYSTEM_CHECKS = [] if SECURE_HSTS_PRELOAD else ["security.W021"]
