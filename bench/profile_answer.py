"""Where one answer's time goes: SQL statements, CPU in the web process and CPU in its PostgreSQL backend
per POST /responses, through the whole WSGI stack (every middleware) but without a socket, gunicorn or a
load generator in the way, so the figures do not move with whatever else the machine is running.

    .venv/bin/python bench/profile_answer.py [--answers 2000] [--top 25]

It makes (and drops) a database of its own on the server of TEST_POSTGRES_ADMIN_URL.
"""
import argparse
import cProfile
import io
import json
import os
import pstats
import secrets
import sys
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import psycopg  # noqa: E402

ADMIN_URL = os.environ.get("TEST_POSTGRES_ADMIN_URL", "postgres://postgres@127.0.0.1:5432/test")
DATABASE = f"studyapp_profile_{os.getpid()}_{secrets.token_hex(3)}"
CSRF_SECRET = secrets.token_hex(16)  # 32 characters: Django accepts the unmasked secret as token
TRIALS_PER_PARTICIPANT = 60  # load_fixture's study


def database_url(name=DATABASE):
    """The URL of database `name` on the server of ADMIN_URL (profile_arrival uses its own name)."""
    info = psycopg.conninfo.conninfo_to_dict(ADMIN_URL)
    return (f"postgres://{info.get('user', 'postgres')}@{info.get('host', '127.0.0.1')}:"
            f"{info.get('port', 5432)}/{name}")


def drop_database(name=DATABASE):
    """Close Django's connections, if it started, and drop the profile's database `name`."""
    try:
        from django.db import connections

        connections.close_all()
    except Exception:  # noqa: BLE001 - django may not have started
        pass
    with psycopg.connect(ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def environ_for(token, trial_id):
    body = json.dumps({"trial": trial_id, "idempotency_key": str(uuid.uuid4()), "choice": "a", "confidence": 2,
                       "rt_ms": 812.5, "client_time": "2026-11-23T10:00:00Z"}).encode()
    return {
        "REQUEST_METHOD": "POST", "PATH_INFO": f"/api/p/{token}/responses", "SCRIPT_NAME": "", "QUERY_STRING": "",
        "SERVER_NAME": "127.0.0.1", "SERVER_PORT": "8000", "SERVER_PROTOCOL": "HTTP/1.1", "REMOTE_ADDR": "127.0.0.1",
        "HTTP_HOST": "127.0.0.1:8000", "CONTENT_TYPE": "application/json", "CONTENT_LENGTH": str(len(body)),
        "HTTP_COOKIE": f"csrftoken={CSRF_SECRET}", "HTTP_X_CSRFTOKEN": CSRF_SECRET,
        "wsgi.input": io.BytesIO(body), "wsgi.url_scheme": "http", "wsgi.errors": sys.stderr,
        "wsgi.multithread": False, "wsgi.multiprocess": True, "wsgi.run_once": False, "wsgi.version": (1, 0),
    }


def backend_cpu_seconds(pid):
    """utime + stime of a PostgreSQL backend on this machine (None where /proc does not show it)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--answers", type=int, default=2000, help="answers timed (and as many profiled)")
    parser.add_argument("--top", type=int, default=25, help="functions listed from the profile")
    parser.add_argument("--pstats", help="also write the profile here, for pstats or snakeviz")
    parser.add_argument("--rate-limits", action="store_true",
                        help="count each request in Redis (TEST_REDIS_URL) as production does")
    args = parser.parse_args()

    os.environ.update({
        "DJANGO_SETTINGS_MODULE": "studyapp.settings.production", "DJANGO_SECRET_KEY": secrets.token_urlsafe(32),
        "PARTICIPANT_ID_KEY": secrets.token_urlsafe(32), "DATABASE_URL": database_url(),
        "DJANGO_ALLOWED_HOSTS": "127.0.0.1", "CSRF_COOKIE_SECURE": "false", "SESSION_COOKIE_SECURE": "false",
        # Plain HTTP in process: production's redirect to HTTPS would answer every request 301.
        "SECURE_SSL_REDIRECT": "false",
        "RATE_LIMIT_PER_IP": "0", "RATE_LIMIT_PER_TOKEN": "0", "LOG_LEVEL": "WARNING",
    })
    if args.rate_limits:
        # The per-address limit out of reach (every request here comes from one address), but counted.
        redis_url = os.environ.get("TEST_REDIS_URL", f"redis://127.0.0.1:6379/{10 + os.getpid() % 6}")
        os.environ.update({"CACHE_URL": redis_url, "RATE_LIMIT_PER_IP": str(10 ** 9), "RATE_LIMIT_PER_TOKEN": "120"})
    with psycopg.connect(ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{DATABASE}"')
    try:
        import django

        django.setup()
        from django.core.handlers.wsgi import WSGIHandler
        from django.core.management import call_command
        from django.db import connection
        from django.test.utils import CaptureQueriesContext

        sys.path.insert(0, str(ROOT / "bench"))
        import load_fixture

        call_command("migrate", "--noinput", verbosity=0)
        # Three rounds of `answers` (queries and warm-up, timing, profile), each trial answered in order.
        n_participants = -(-(3 * args.answers + 10) // TRIALS_PER_PARTICIPANT)
        plan = load_fixture.seed([n_participants])[str(n_participants)]
        order = [(p["token"], p["trials"][k]) for k in range(TRIALS_PER_PARTICIPANT) for p in plan]
        requests = iter(order)
        handler = WSGIHandler()
        statuses = []

        def answer():
            token, trial_id = next(requests)

            def start_response(status, headers, exc_info=None):
                statuses.append(int(status.split()[0]))

            b"".join(handler(environ_for(token, trial_id), start_response))

        for _ in range(10):
            answer()
        with CaptureQueriesContext(connection) as captured:
            answer()
        one = [q["sql"] for q in captured.captured_queries]
        statements = []

        def count(execute, sql, params, many, context):
            statements.append(sql)
            return execute(sql, params, many, context)

        with connection.execute_wrapper(count):
            for _ in range(args.answers):
                answer()
        mean_queries = len(statements) / args.answers

        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_backend_pid()")
            backend = cursor.fetchone()[0]
        db0, cpu0, wall0 = backend_cpu_seconds(backend), time.process_time(), time.perf_counter()
        for _ in range(args.answers):
            answer()
        wall = time.perf_counter() - wall0
        cpu = time.process_time() - cpu0
        db1 = backend_cpu_seconds(backend)

        # Timed by CPU, not the wall: a statement's wait for PostgreSQL is not this process's cost.
        profiler = cProfile.Profile(time.process_time)
        profiler.enable()
        for _ in range(args.answers):
            answer()
        profiler.disable()
    finally:
        drop_database()

    bad = [s for s in statuses if s != 201]
    print(f"rate limits: {'counted in Redis' if args.rate_limits else 'off'}")
    print(f"one answer: {len(one)} SQL statements")
    for sql in one:
        print(f"    {sql[:200]}")
    print(f"answers: {args.answers} timed, {len(statuses)} sent in all, {len(bad)} not 201 {sorted(set(bad))}")
    print(f"per answer: {mean_queries:.2f} SQL statements, web process CPU {cpu / args.answers * 1e6:.0f} us, "
          f"wall {wall / args.answers * 1e6:.0f} us"
          + (f", PostgreSQL backend CPU {(db1 - db0) / args.answers * 1e6:.0f} us" if db0 is not None and db1 else ""))
    print(f"one core's worth: {args.answers / cpu:.0f} answers/s of web CPU alone")
    if args.pstats:
        profiler.dump_stats(args.pstats)
    stream = io.StringIO()
    stats = pstats.Stats(profiler, stream=stream)
    stats.sort_stats("cumulative").print_stats(args.top)
    stats.sort_stats("tottime").print_stats(args.top)
    print(stream.getvalue())


if __name__ == "__main__":
    main()
