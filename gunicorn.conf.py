"""gunicorn's settings for the web app: the Docker image, docker-compose.yml and the load benchmark
(bench/bench_load.py) all start gunicorn with `-c gunicorn.conf.py`, so the benchmark measures what is
deployed. The command line and GUNICORN_CMD_ARGS override any of them (e.g. --bind, --workers)."""
import os

bind = ["0.0.0.0:8000"]

# Sync workers, one request at a time each. An answer costs its worker about as long waiting for
# PostgreSQL as computing, so two workers per core (plus one) keep the cores busy while some wait. The
# cores are those this process may run on (a cpuset, taskset). Each worker keeps a PostgreSQL
# connection, and PostgreSQL allows 100 by default, shared with the Celery workers and the shell: past
# 9 workers, set WEB_CONCURRENCY and max_connections (or a pooler) together.
workers = int(os.environ.get("WEB_CONCURRENCY", min(2 * len(os.sched_getaffinity(0)) + 1, 9)))
# Django and the app are imported once, before the workers fork: a worker (re)starts in milliseconds and
# the workers share the imported code's memory. Database connections are opened per worker, later.
preload_app = True
# A participant's answer is small and quick; a request still running after this long is stuck.
timeout = 30
# Connections that arrive while every worker is busy wait in the kernel's queue rather than being
# refused (a Prolific launch arrives in a burst); net.core.somaxconn caps it.
backlog = 2048
# The heartbeat each worker writes goes to memory, not to a container's overlay disk, where a slow
# write can get a busy worker killed as unresponsive.
if os.path.isdir("/dev/shm"):
    worker_tmp_dir = "/dev/shm"

# One line per request on stdout (docker compose logs) unless GUNICORN_ACCESS_LOG names a file, or is
# empty to turn it off where the proxy in front keeps the access log.
accesslog = os.environ.get("GUNICORN_ACCESS_LOG", "-") or None
