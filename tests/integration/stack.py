"""The production stack as separate processes on this machine: a fresh PostgreSQL database, Redis as
the broker, a real `celery worker` on queues gpu and default, and gunicorn. The tests drive it from
outside, as a participant's browser, a researcher's shell and an analyst would."""
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import psycopg

ROOT = Path(__file__).resolve().parents[2]
PYTHON = sys.executable
POSTGRES_ADMIN_URL = os.environ.get("TEST_POSTGRES_ADMIN_URL", "postgres://postgres@127.0.0.1:5432/test")
# Each run takes its own Redis database (10-15), so two runs on one machine never share a queue.
REDIS_URL = os.environ.get("TEST_REDIS_URL", f"redis://127.0.0.1:6379/{10 + os.getpid() % 6}")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def child_pids(pid):
    """The processes whose parent is `pid`: a gunicorn master's workers."""
    children = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            # The command name, in parentheses, may itself hold spaces and parentheses.
            parent = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):  # the process ended while we looked
            continue
        if parent == pid:
            children.append(int(stat.parent.name))
    return sorted(children)


def connection_owner(pids, server_port, client_port):
    """Which of `pids` has accepted the loopback connection from `client_port` to `server_port`; None
    while the connection still waits in the listen queue (its socket belongs to no process yet)."""
    wanted = (f"0100007F:{server_port:04X}", f"0100007F:{client_port:04X}")
    inode = None
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if (fields[1], fields[2]) == wanted and fields[9] != "0":
            inode = fields[9]
    if inode is None:
        return None
    for pid in pids:
        try:
            if any(os.readlink(fd) == f"socket:[{inode}]" for fd in Path(f"/proc/{pid}/fd").iterdir()):
                return pid
        except OSError:
            continue
    return None


def wait_until(predicate, timeout, what):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def wait_for_http(url, timeout=60, process=None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"the server exited with {process.returncode} before answering {url}")
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            time.sleep(0.3)
    raise TimeoutError(f"{url} did not answer within {timeout} s")


class Stack:
    def __init__(self, workdir):
        self.workdir = Path(workdir)
        self.database = f"studyapp_it_{os.getpid()}_{secrets.token_hex(3)}"
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.admin_password = secrets.token_urlsafe(12)
        self.processes = {}
        admin = psycopg.conninfo.conninfo_to_dict(POSTGRES_ADMIN_URL)
        host, port = admin.get("host", "127.0.0.1"), admin.get("port", 5432)
        user = admin.get("user", "postgres")
        self.database_url = f"postgres://{user}@{host}:{port}/{self.database}"
        self.env = {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "studyapp.settings.production",
            "DJANGO_SECRET_KEY": secrets.token_urlsafe(32),
            "PARTICIPANT_ID_KEY": secrets.token_urlsafe(32),
            "DJANGO_ALLOWED_HOSTS": "127.0.0.1,localhost",
            "DATABASE_URL": self.database_url,
            "CELERY_BROKER_URL": REDIS_URL,
            # A sharded stimulus job's chord counts its shards' results here.
            "CELERY_RESULT_BACKEND": REDIS_URL,
            "MEDIA_ROOT": str(self.workdir / "media"),
            "ARTIFACT_ROOT": str(self.workdir / "artifacts"),
            "STATIC_ROOT": str(self.workdir / "static"),
            # Shared with other runs: the demo network trains deterministically, so its cache is safe to keep.
            "STIMULI_CACHE_DIR": str(ROOT / "var" / "cache"),
            "SESSION_COOKIE_SECURE": "false",
            "CSRF_COOKIE_SECURE": "false",
            "RESUME_COOKIE_SECURE": "false",
            "SECURE_SSL_REDIRECT": "false",
            # Every browser of the tests arrives from 127.0.0.1.
            "ARRIVAL_RATE_LIMIT_PER_IP": "0",
            "DEMO_ADMIN_PASSWORD": self.admin_password,
            "PYTHONUNBUFFERED": "1",
            # Short enough that a job whose worker was killed is retried within the test's patience.
            "CELERY_VISIBILITY_TIMEOUT": "8",
            "CELERY_UNACKED_RESTORE_SECONDS": "2",
            "STIMULUS_HEARTBEAT_SECONDS": "1",
            "STIMULUS_STALE_AFTER_SECONDS": "4",
        }

    def admin_sql(self, statement):
        with psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True) as conn:
            conn.execute(statement)

    def sql(self, statement, params=()):
        with psycopg.connect(self.database_url, autocommit=True) as conn:
            return conn.execute(statement, params).fetchall() if statement.lstrip().upper().startswith("SELECT") \
                else conn.execute(statement, params)

    def manage(self, *args, timeout=600, check=True):
        result = subprocess.run([PYTHON, "manage.py", *args], cwd=ROOT, env=self.env, capture_output=True,
                                text=True, timeout=timeout)
        if check and result.returncode != 0:
            raise RuntimeError(f"manage.py {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}")
        return result

    def start_process(self, name, argv, **env):
        log = open(self.workdir / f"{name}.log", "a")  # noqa: SIM115 (the process writes to it after we return)
        self.processes[name] = subprocess.Popen(argv, cwd=ROOT, env={**self.env, **env}, stdout=log,
                                                stderr=subprocess.STDOUT, start_new_session=True)
        return self.processes[name]

    def start_worker(self, name="worker"):
        """A Celery worker on both queues, its node named `name@host` (what a shard row's `worker` says)."""
        return self.start_process(name, [
            PYTHON, "-m", "celery", "-A", "studyapp", "worker", "--queues", "gpu,default", "--pool", "solo",
            "--concurrency", "1", "--loglevel", "INFO", "--without-gossip", "--without-mingle", "--hostname",
            f"{name}@%h",
        ], PGAPPNAME=name)  # libpq names its database sessions after it (pg_stat_activity.application_name)

    def statements_running(self, name):
        """The database sessions of the process started as `name` (start_worker) whose statement has not
        finished: a write it sent just before it was stopped still lands while this is not empty."""
        return self.sql("SELECT pid FROM pg_stat_activity WHERE datname = %s AND application_name = %s "
                        "AND state = 'active'", (self.database, name))

    def start_web(self, name="web", port=None, workers=2, **env):
        port = port or self.port
        process = self.start_process(name, [
            PYTHON, "-m", "gunicorn", "studyapp.wsgi:application", "--bind", f"127.0.0.1:{port}",
            "--workers", str(workers), "--timeout", "60",
        ], **env)
        wait_for_http(f"http://127.0.0.1:{port}/admin/login/", process=process)
        return process

    def web_workers(self, name="web"):
        return child_pids(self.processes[name].pid)

    def start_redis(self, name="redis"):
        """A Redis server of our own, on a free port, that a test may stop; returns its URL."""
        import redis

        port = free_port()
        process = self.start_process(name, ["redis-server", "--bind", "127.0.0.1", "--port", str(port), "--save", "",
                                            "--appendonly", "no", "--dir", str(self.workdir)])
        url = f"redis://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"redis-server exited with {process.returncode}:\n{self.log(name)}")
            try:
                redis.Redis.from_url(url, socket_timeout=1).ping()
                return url
            except redis.RedisError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)

    def kill_process(self, name):
        """SIGKILL the process group, as a crash or an out-of-memory kill would: no cleanup runs."""
        process = self.processes.pop(name)
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()

    def log(self, name):
        path = self.workdir / f"{name}.log"
        return path.read_text() if path.exists() else ""

    def up(self):
        self.admin_sql(f'CREATE DATABASE "{self.database}"')
        self._flush_redis()
        self.manage("migrate", "--noinput")
        self.manage("collectstatic", "--noinput")
        self.start_worker()
        return self

    def stop_process(self, name):
        process = self.processes.pop(name, None)
        if process is None or process.poll() is not None:
            return
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()

    def down(self):
        for name in list(self.processes):
            self.stop_process(name)
        self._flush_redis()
        self.admin_sql(f'DROP DATABASE IF EXISTS "{self.database}" WITH (FORCE)')

    def _flush_redis(self):
        import redis

        redis.Redis.from_url(REDIS_URL).flushdb()
