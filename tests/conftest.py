"""Markers that name an outside service skip, with the reason, where the service cannot be had."""
import shutil
import socket

import pytest


def _port_open(port, host="127.0.0.1"):
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def _is_postgres():
    from django.conf import settings

    return settings.DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql"


def pytest_collection_modifyitems(config, items):
    reasons = {}
    if any("postgres" in item.keywords for item in items) and not _is_postgres():
        reasons["postgres"] = "no PostgreSQL server answers on 127.0.0.1:5432 (set DATABASE_URL or TEST_DATABASE_URL)"
    if not _port_open(6379):
        reasons["redis"] = "no Redis server answers on 127.0.0.1:6379"
    if not shutil.which("chromium"):
        reasons["browser"] = "Debian's chromium is not installed (make browser installs it)"
    for item in items:
        for marker, reason in reasons.items():
            if marker in item.keywords:
                item.add_marker(pytest.mark.skip(reason=reason))
