"""Where one arrival's time goes: the requests of bench_burst.py's arrival (landing page, start form, session,
consent, instructions, first trial list), each through the whole WSGI stack in process, with the SQL
statements and the web process's CPU per step, then a profile of whole arrivals (by CPU time). No socket, gunicorn or load
generator in the way, so the CPU figures do not move with whatever else the machine is running.

    SECURE_SSL_REDIRECT=false .venv/bin/python bench/profile_arrival.py [--arrivals 200] [--top 30]

It makes (and drops) a database of its own on the server of TEST_POSTGRES_ADMIN_URL, seeded by
burst_fixture.py (a live Prolific study, four conditions).
"""

import argparse
import cProfile
import io
import os
import pstats
import re
import secrets
import sys
import time
from pathlib import Path
from urllib.parse import urlencode

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import psycopg  # noqa: E402
from profile_answer import ADMIN_URL, CSRF_SECRET, backend_cpu_seconds, database_url, drop_database  # noqa: E402

DATABASE = f"studyapp_arrival_{os.getpid()}_{secrets.token_hex(3)}"
STEPS = ("landing", "start", "session", "consent", "instructions", "trials")


def environ(method, path, body=b"", content_type=None, csrf_header=False):
    path, _, query = path.partition("?")
    env = {
        "REQUEST_METHOD": method,
        "PATH_INFO": path,
        "SCRIPT_NAME": "",
        "QUERY_STRING": query,
        "SERVER_NAME": "127.0.0.1",
        "SERVER_PORT": "8000",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "REMOTE_ADDR": "127.0.0.1",
        "HTTP_HOST": "127.0.0.1:8000",
        "CONTENT_LENGTH": str(len(body)),
        "HTTP_COOKIE": f"csrftoken={CSRF_SECRET}",
        "wsgi.input": io.BytesIO(body),
        "wsgi.url_scheme": "http",
        "wsgi.errors": sys.stderr,
        "wsgi.multithread": False,
        "wsgi.multiprocess": True,
        "wsgi.run_once": False,
        "wsgi.version": (1, 0),
    }
    if content_type:
        env["CONTENT_TYPE"] = content_type
    if csrf_header:
        env["HTTP_X_CSRFTOKEN"] = CSRF_SECRET
    return env


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arrivals", type=int, default=200, help="arrivals timed (and as many profiled)")
    parser.add_argument("--top", type=int, default=30, help="functions listed from the profile")
    parser.add_argument("--pstats", help="also write the profile here, for pstats or snakeviz")
    args = parser.parse_args()

    os.environ.update(
        {
            "DJANGO_SETTINGS_MODULE": "studyapp.settings.production",
            "DJANGO_SECRET_KEY": secrets.token_urlsafe(32),
            "PARTICIPANT_ID_KEY": secrets.token_urlsafe(32),
            "DATABASE_URL": database_url(DATABASE),
            "DJANGO_ALLOWED_HOSTS": "127.0.0.1",
            "CSRF_COOKIE_SECURE": "false",
            "SESSION_COOKIE_SECURE": "false",
            "SECURE_SSL_REDIRECT": "false",
            "RATE_LIMIT_PER_IP": "0",
            "RATE_LIMIT_PER_TOKEN": "0",
            "ARRIVAL_RATE_LIMIT_PER_IP": "0",
            "ARRIVAL_RATE_LIMIT_PER_STUDY": "0",
            "LOG_LEVEL": "WARNING",
        }
    )
    with psycopg.connect(ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{DATABASE}"')
    try:
        import django

        django.setup()
        import burst_fixture
        from django.core.handlers.wsgi import WSGIHandler
        from django.core.management import call_command
        from django.db import connection

        call_command("migrate", "--noinput", verbosity=0)
        # Every slot is taken by the warm-up, the timed and the profiled arrivals: none is told "full".
        burst_fixture.seed(4 * -(-(2 * args.arrivals + 5) // 4))
        handler = WSGIHandler()
        cpu = dict.fromkeys(STEPS, 0.0)
        statements = dict.fromkeys(STEPS, 0)
        current = ["landing"]

        def count(execute, sql, params, many, context):
            statements[current[0]] += 1
            return execute(sql, params, many, context)

        def request(step, method, path, body=b"", content_type=None, csrf_header=False):
            current[0] = step
            reply = {}

            def start_response(status, headers, exc_info=None):
                reply.update(status=int(status.split()[0]), headers=dict(headers))

            t0 = time.process_time()
            b"".join(handler(environ(method, path, body, content_type, csrf_header), start_response))
            cpu[step] += time.process_time() - t0
            return reply

        def arrival():
            params = {
                "PROLIFIC_PID": f"arrival{secrets.token_hex(8)}",
                "STUDY_ID": "burst-study",
                "SESSION_ID": secrets.token_hex(8),
            }
            replies = [request("landing", "GET", f"/s/burst/?{urlencode(params)}")]
            form = urlencode({**params, "csrfmiddlewaretoken": CSRF_SECRET}).encode()
            start = request("start", "POST", "/s/burst/start", form, "application/x-www-form-urlencoded")
            token = re.search(r"/p/([-\w]+)/", start["headers"].get("Location", "")).group(1)
            api = f"/api/p/{token}/"
            json_post = dict(content_type="application/json", csrf_header=True)
            replies += [
                request("session", "GET", api + "session"),
                request("consent", "POST", api + "consent", b'{"consent": true}', **json_post),
                request("instructions", "POST", api + "instructions", b'{"reading_ms": 30000}', **json_post),
                request("trials", "GET", api + "trials?limit=10"),
            ]
            bad = [r["status"] for r in replies if r["status"] != 200]
            if start["status"] != 302 or bad:
                raise SystemExit(f"an arrival failed: start {start['status']}, others {bad}")

        for _ in range(5):
            arrival()
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_backend_pid()")
            backend = cursor.fetchone()[0]
        cpu = dict.fromkeys(STEPS, 0.0)
        statements = dict.fromkeys(STEPS, 0)
        db0, wall0 = backend_cpu_seconds(backend), time.perf_counter()
        with connection.execute_wrapper(count):
            for _ in range(args.arrivals):
                arrival()
        wall = time.perf_counter() - wall0
        db1 = backend_cpu_seconds(backend)
        timed_cpu = dict(cpu)  # the profiled arrivals below go on adding to `cpu`

        # Timed by CPU, not the wall: a statement's wait for PostgreSQL is not this process's cost.
        profiler = cProfile.Profile(time.process_time)
        profiler.enable()
        for _ in range(args.arrivals):
            arrival()
        profiler.disable()
    finally:
        drop_database(DATABASE)

    n = args.arrivals
    print(f"arrivals: {n} timed, each {len(STEPS)} requests")
    for step in STEPS:
        print(
            f"  {step:<13} web process CPU {timed_cpu[step] / n * 1e3:6.2f} ms, {statements[step] / n:5.1f} SQL statements"
        )
    print(
        f"whole arrival: web process CPU {sum(timed_cpu.values()) / n * 1e3:.2f} ms, wall {wall / n * 1e3:.2f} ms, "
        f"{sum(statements.values()) / n:.1f} SQL statements"
        + (f", PostgreSQL backend CPU {(db1 - db0) / n * 1e3:.2f} ms" if db0 is not None and db1 else "")
    )
    if args.pstats:
        profiler.dump_stats(args.pstats)
    stream = io.StringIO()
    stats = pstats.Stats(profiler, stream=stream)
    stats.sort_stats("cumulative").print_stats(args.top)
    stats.sort_stats("tottime").print_stats(args.top)
    print(stream.getvalue())


if __name__ == "__main__":
    main()
