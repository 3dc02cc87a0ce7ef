"""Fixtures of the integration tests; the helpers they share are in participant.py and stack.py."""
import os
from pathlib import Path

import pytest

from .participant import CHROMIUM, CHROMIUM_ARGS
from .stack import Stack


@pytest.fixture(scope="session")
def stack(tmp_path_factory):
    """PostgreSQL + Redis + a celery worker + gunicorn, with the demo study set up through the worker."""
    stack = Stack(tmp_path_factory.mktemp("stack")).up()
    try:
        stack.demo_output = stack.manage("demo", "--base-url", f"http://127.0.0.1:{stack.port}", timeout=900).stdout
        stack.start_web()
        yield stack
    finally:
        stack.down()


@pytest.fixture
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        yield browser
        browser.close()


@pytest.fixture
def shots(tmp_path):
    folder = Path(os.environ.get("SCREENSHOT_DIR", tmp_path / "screenshots"))
    folder.mkdir(parents=True, exist_ok=True)
    return folder
