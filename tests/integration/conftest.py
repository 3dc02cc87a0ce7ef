import pytest

from .stack import Stack


@pytest.fixture(scope="session")
def stack(tmp_path_factory):
    """PostgreSQL + Redis + a celery worker + gunicorn, with the demo study set up through the worker."""
    stack = Stack(tmp_path_factory.mktemp("stack")).up()
    try:
        stack.demo_output = stack.manage("demo", "--base-url", "http://127.0.0.1:%d" % stack.port, timeout=900).stdout
        stack.start_web()
        yield stack
    finally:
        stack.down()
