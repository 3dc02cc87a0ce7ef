"""A launch burst: ARRIVALS participants arrive within SPREAD seconds at a study with SLOTS slots.

A study link posted to Prolific brings hundreds of arrivals in its first minute. Each simulated arrival
does what a browser does, each request on a new connection: GET the landing page with the Prolific
parameters, POST the start form (CSRF cookie and field), and, when admitted, GET the session, consent,
send the instructions' reading time and GET the first trial list. Arrival times are drawn uniformly
over the spread. gunicorn is started with the repository's gunicorn.conf.py and the production
settings, pinned to its own core, over PostgreSQL; the generator runs on the other core.

It prints the latency percentiles of `start` (and of the whole arrival), how many were admitted, told
the study is full, rate limited (429), answered 5xx or failed otherwise, and the slots reserved in the
database at the end. The goal: p99 of start under 1 s, exactly SLOTS admitted, the rest told the study
is full, no 5xx.

    .venv/bin/python bench/bench_burst.py [--arrivals 1000] [--slots 800] [--spread 60] [--workers 3]
                                          [--design between|within]
        [--rate-limits]

The per-address arrival limit is turned off (every arrival comes from 127.0.0.1, as no Prolific launch
does); the per-study one stays at its default. With --rate-limits the counters live in Redis
(TEST_REDIS_URL) as docker-compose.yml keeps them.
"""
import argparse
import asyncio
import json
import os
import random
import re
import secrets
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlencode

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.bench_load import percentile  # noqa: E402
from tests.integration.stack import PYTHON, REDIS_URL, Stack, wait_for_http  # noqa: E402

CSRF_SECRET = secrets.token_hex(16)  # 32 characters: Django accepts the unmasked secret as token
REQUEST_TIMEOUT = 30.0


async def http(port, method, path, body=b"", content_type=None, extra=""):
    """(status, headers as a dict of lower-case names, body) of one request on a fresh connection."""
    head = (f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nCookie: csrftoken={CSRF_SECRET}\r\n"
            f"Connection: close\r\nContent-Length: {len(body)}\r\n{extra}")
    if content_type:
        head += f"Content-Type: {content_type}\r\n"
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(head.encode() + b"\r\n" + body)
        await writer.drain()
        raw = await reader.read()
    finally:
        writer.close()
    header_bytes, _, payload = raw.partition(b"\r\n\r\n")
    lines = header_bytes.decode("latin-1").split("\r\n")
    parts = lines[0].split()
    if len(parts) < 2 or not parts[1].isdigit():
        raise ConnectionError(f"no HTTP status line: {lines[0][:40]!r}")
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    return int(parts[1]), headers, payload


async def arrival(port, slug, i, delay, record):
    await asyncio.sleep(delay)
    params = {"PROLIFIC_PID": f"burst{i:05d}{secrets.token_hex(4)}", "STUDY_ID": "burst-study",
              "SESSION_ID": secrets.token_hex(8)}
    t0 = time.monotonic()
    outcome = {"start_ms": None, "total_ms": None, "start_status": None, "error": None, "statuses": []}
    record.append(outcome)
    try:
        status, _, _ = await http(port, "GET", f"/s/{slug}/?{urlencode(params)}")
        outcome["statuses"].append(status)
        form = urlencode({**params, "csrfmiddlewaretoken": CSRF_SECRET}).encode()
        t_start = time.monotonic()
        status, headers, body = await http(port, "POST", f"/s/{slug}/start", form,
                                           "application/x-www-form-urlencoded")
        outcome["start_ms"] = (time.monotonic() - t_start) * 1000
        outcome["start_status"] = status
        outcome["statuses"].append(status)
        if status in (301, 302, 303):
            token = re.search(r"/p/([-\w]+)/", headers.get("location", "")).group(1)
            outcome["admitted"] = True
            api = f"/api/p/{token}/"
            post = dict(content_type="application/json", extra=f"X-CSRFToken: {CSRF_SECRET}\r\n")
            for method, path, payload in (("GET", "session", b""), ("POST", "consent", b'{"consent": true}'),
                                          ("POST", "instructions", b'{"reading_ms": 30000}'),
                                          ("GET", "trials?limit=10", b"")):
                kwargs = post if method == "POST" else {}
                status, _, reply = await http(port, method, api + path, payload, **kwargs)
                outcome["statuses"].append(status)
                if status != 200:
                    outcome["error"] = f"{path}: {status}"
                    break
            else:
                if not json.loads(reply)["trials"]:
                    outcome["error"] = "empty first trial list"
        else:
            outcome["full"] = status == 403 and b"full" in body
        outcome["total_ms"] = (time.monotonic() - t0) * 1000
    except (OSError, EOFError, ValueError, AttributeError) as exc:
        outcome["error"] = type(exc).__name__


async def burst(port, slug, n, spread):
    record = []
    tasks = [asyncio.wait_for(arrival(port, slug, i, random.uniform(0, spread), record), spread + REQUEST_TIMEOUT)
             for i in range(n)]
    results = await asyncio.gather(*tasks, return_exceptions=True)
    timeouts = sum(isinstance(r, asyncio.TimeoutError) for r in results)
    return record, timeouts


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arrivals", type=int, default=1000)
    parser.add_argument("--slots", type=int, default=800)
    parser.add_argument("--spread", type=float, default=60.0, help="seconds over which the arrivals come")
    parser.add_argument("--workers", type=int, default=3, help="gunicorn workers")
    parser.add_argument("--rate-limits", action="store_true", help="count arrivals in Redis (TEST_REDIS_URL)")
    parser.add_argument("--server-cpu", default="0")
    parser.add_argument("--client-cpu", type=int, default=1)
    parser.add_argument("--design", choices=["between", "within"], default="between",
                        help="within: the slots are the four counterbalancing orders of a within-participant study")
    args = parser.parse_args()

    stack = Stack(Path(tempfile.mkdtemp(prefix="bench-burst-")))
    stack.env.update({"RATE_LIMIT_PER_IP": "0", "ARRIVAL_RATE_LIMIT_PER_IP": "0",
                      "GUNICORN_ACCESS_LOG": str(stack.workdir / "access.log")})
    if args.rate_limits:
        stack.env["CACHE_URL"] = REDIS_URL
    stack.admin_sql(f'CREATE DATABASE "{stack.database}"')
    try:
        stack.manage("migrate", "--noinput")
        subprocess.run([PYTHON, "bench/burst_fixture.py", str(args.slots), args.design], cwd=ROOT, env=stack.env,
                       check=True)
        web = stack.start_process("web", ["taskset", "-c", args.server_cpu, PYTHON, "-m", "gunicorn", "-c",
                                          "gunicorn.conf.py", "--bind", f"127.0.0.1:{stack.port}", "--workers",
                                          str(args.workers), "studyapp.wsgi:application"])
        wait_for_http(f"{stack.base_url}/admin/login/", process=web)
        os.sched_setaffinity(0, {args.client_cpu})
        t0 = time.monotonic()
        record, timeouts = asyncio.run(burst(stack.port, "burst", args.arrivals, args.spread))
        wall = time.monotonic() - t0
        reserved = stack.sql("SELECT count(*) FROM studyapp_participant WHERE status IN ('started', 'completed') "
                             "AND NOT is_preview")[0][0]
        per_condition = stack.sql("SELECT condition_id, count(*) FROM studyapp_participant WHERE status IN "
                                  "('started', 'completed') GROUP BY condition_id ORDER BY condition_id")
        per_order = stack.sql("SELECT \"order\", count(*) FROM studyapp_participant WHERE status IN "
                              "('started', 'completed') AND \"order\" IS NOT NULL GROUP BY \"order\" ORDER BY 1")
    finally:
        for name in list(stack.processes):
            stack.stop_process(name)
        stack.admin_sql(f'DROP DATABASE IF EXISTS "{stack.database}" WITH (FORCE)')

    starts = [r["start_ms"] for r in record if r["start_ms"] is not None]
    totals = [r["total_ms"] for r in record if r.get("admitted") and r["total_ms"] is not None]
    admitted = sum(1 for r in record if r.get("admitted"))
    full = sum(1 for r in record if r.get("full"))
    statuses = [s for r in record for s in r["statuses"]]
    limited = sum(1 for r in record if r["start_status"] == 429)
    server_errors = sum(1 for s in statuses if s >= 500)
    other = [r for r in record if r["error"] or (r["start_status"] is not None and not r.get("admitted")
                                                  and not r.get("full") and r["start_status"] != 429)]
    print(f"launch burst: {args.arrivals} arrivals over {args.spread:g} s (took {wall:.0f} s) at a study with "
          f"{args.slots} slots; gunicorn -c gunicorn.conf.py, {args.workers} sync workers on cpu {args.server_cpu}, "
          f"PostgreSQL; rate-limit counters {'in Redis' if args.rate_limits else 'per process'}")
    print(f"start latency ms: p50 {percentile(starts, 50):.0f}  p90 {percentile(starts, 90):.0f}  "
          f"p99 {percentile(starts, 99):.0f}  max {max(starts, default=float('nan')):.0f}")
    print(f"whole arrival (landing → first trial list) ms, admitted: p50 {percentile(totals, 50):.0f}  "
          f"p99 {percentile(totals, 99):.0f}")
    print(f"admitted {admitted}, told full {full}, rate limited {limited}, 5xx {server_errors}, "
          f"other failures {len(other)}, timed out {timeouts}")
    if args.design == "within":
        print(f"slots reserved at the end: {reserved} (per order: {[n for _, n in per_order]}, "
              f"quota {args.slots // 4} each)")
    else:
        print(f"slots reserved at the end: {reserved} (per condition: {[n for _, n in per_condition]})")
    for r in other[:5]:
        print("  e.g.", r)
    orders_exact = args.design != "within" or [n for _, n in per_order] == [args.slots // 4] * 4
    ok = (percentile(starts, 99) < 1000 and admitted == args.slots == reserved and orders_exact
          and full == args.arrivals - args.slots and server_errors == 0 and not other and not timeouts)
    print("goal met" if ok else "goal NOT met")


if __name__ == "__main__":
    main()
