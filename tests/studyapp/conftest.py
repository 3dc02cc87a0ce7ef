"""Fixtures of the web app's tests; what they build comes from tests/studyapp/helpers.py."""
import time
from types import SimpleNamespace

import pytest

from tests.studyapp.helpers import Clock, make_job, make_study


@pytest.fixture
def job(db):
    return make_job()


@pytest.fixture
def study(job):
    return make_study(job)


@pytest.fixture
def clock(monkeypatch):
    from django.utils import timezone

    fake = Clock()
    monkeypatch.setattr(timezone, "now", fake)
    return fake


@pytest.fixture
def one_rate_window(monkeypatch):
    """The rate limits count per wall-clock window (ratelimit.over_limit): the clock they read stands at
    a window's start, so that a test's requests never straddle a window's end however slowly they run."""
    from studyapp import ratelimit

    start = 3600.0 * 500_000  # a multiple of every window length the tests use
    monkeypatch.setattr(ratelimit, "time", SimpleNamespace(time=lambda: start, monotonic=time.monotonic))
    return start


@pytest.fixture(params=["one_statement", "orm"])
def answer_path(request, monkeypatch):
    """Storing an answer has two implementations: one statement on PostgreSQL (the hot path) and the ORM
    in several statements elsewhere (the embedded demo's SQLite); a test taking this fixture runs through
    each."""
    from django.db import connection

    from studyapp import participation

    if request.param == "one_statement" and connection.vendor != "postgresql":
        pytest.skip("the one-statement path is PostgreSQL's")
    monkeypatch.setattr(participation, "_answers_in_one_statement", lambda: request.param == "one_statement")
    return request.param
