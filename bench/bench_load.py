"""How many participants, each answering every 2 s, the answer path holds on this machine.

gunicorn (pinned to its own core) + PostgreSQL on loopback; the load generator (pinned to the other
core) plays simulated participants who have passed consent and instructions and POST one answer per
interval, in order, with a fresh idempotency key, exactly as the browser does. For each level it
prints answers/s, latency percentiles and errors; a level holds when p99 < 100 ms with no error.

    .venv/bin/python bench/bench_load.py [--levels 100,250,500,750,1000] [--duration 20] [--workers 3]
"""
import argparse
import asyncio
import json
import os
import random
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.integration.stack import PYTHON, Stack, wait_for_http  # noqa: E402

CSRF_SECRET = secrets.token_hex(16)  # 32 characters: Django accepts the unmasked secret as token


def percentile(values, q):
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))]


async def post_answer(port, token, trial_id):
    body = json.dumps({"trial": trial_id, "idempotency_key": str(uuid.uuid4()), "choice": random.choice("ab"),
                       "confidence": random.randint(1, 3), "rt_ms": random.uniform(600, 4000),
                       "client_time": "2026-11-23T10:00:00Z"}).encode()
    request = (f"POST /api/p/{token}/responses HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
               f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
               f"Cookie: csrftoken={CSRF_SECRET}\r\nX-CSRFToken: {CSRF_SECRET}\r\nConnection: close\r\n\r\n").encode()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(request + body)
        await writer.drain()
        status_line = await reader.readline()
        await reader.read()
    finally:
        writer.close()
    return int(status_line.split()[1])


async def participant(port, plan, interval, deadline, records):
    loop = asyncio.get_running_loop()
    await asyncio.sleep(random.uniform(0, interval))
    start = loop.time()
    for k, trial_id in enumerate(plan["trials"]):
        if loop.time() >= deadline:
            return
        t0 = loop.time()
        try:
            status = await post_answer(port, plan["token"], trial_id)
        except OSError as exc:
            status = type(exc).__name__
        records.append((t0, loop.time() - t0, status))
        await asyncio.sleep(max(0.0, start + (k + 1) * interval - loop.time()))


async def drive(port, plans, interval, duration):
    records = []
    loop = asyncio.get_running_loop()
    deadline = loop.time() + duration
    await asyncio.gather(*(participant(port, p, interval, deadline, records) for p in plans))
    return records


def summarise(level, records, duration, interval):
    # The first interval is ramp-up (participants start at random offsets): leave it out.
    first = min(t for t, _, _ in records) + interval if records else 0
    steady = [(lat, status) for t, lat, status in records if t >= first]
    latencies = [lat * 1000 for lat, status in steady if status in (200, 201)]
    errors = sum(1 for _, status in steady if status not in (200, 201))
    return {
        "participants": level, "answers": len(steady), "answers_per_s": len(steady) / max(duration - interval, 1e-9),
        "p50_ms": percentile(latencies, 50), "p99_ms": percentile(latencies, 99),
        "max_ms": max(latencies) if latencies else float("nan"),
        "mean_ms": statistics.fmean(latencies) if latencies else float("nan"), "errors": errors,
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--levels", default="100,250,500,750,1000")
    parser.add_argument("--interval", type=float, default=2.0, help="seconds between a participant's answers")
    parser.add_argument("--duration", type=float, default=20.0, help="seconds per level")
    parser.add_argument("--workers", type=int, default=3, help="gunicorn workers")
    parser.add_argument("--server-cpu", default="0")
    parser.add_argument("--client-cpu", type=int, default=1)
    args = parser.parse_args()
    levels = [int(v) for v in args.levels.split(",")]
    answers_needed = int(args.duration / args.interval) + 2

    stack = Stack(Path(tempfile.mkdtemp(prefix="bench-load-")))
    stack.env.update({"RATE_LIMIT_PER_IP": "0", "RATE_LIMIT_PER_TOKEN": "0", "LOG_LEVEL": "WARNING"})
    stack.admin_sql(f'CREATE DATABASE "{stack.database}"')
    try:
        stack.manage("migrate", "--noinput")
        plan_file = stack.workdir / "plan.json"
        t0 = time.monotonic()
        subprocess.run([PYTHON, "bench/load_fixture.py", str(plan_file), ",".join(map(str, levels))],
                       cwd=ROOT, env=stack.env, check=True)
        plans = json.loads(plan_file.read_text())
        print(f"seeded {sum(levels)} participants in {time.monotonic() - t0:.0f} s "
              f"({answers_needed} answers each needed, {len(next(iter(plans.values()))[0]['trials'])} stored)")
        stack.start_process("web", ["taskset", "-c", args.server_cpu, PYTHON, "-m", "gunicorn",
                                    "studyapp.wsgi:application", "--bind", f"127.0.0.1:{stack.port}",
                                    "--workers", str(args.workers), "--backlog", "4096"])
        wait_for_http(f"{stack.base_url}/admin/login/", process=stack.processes["web"])
        os.sched_setaffinity(0, {args.client_cpu})

        rows = []
        for level in levels:
            records = asyncio.run(drive(stack.port, plans[str(level)], args.interval, args.duration))
            rows.append(summarise(level, records, args.duration, args.interval))
            time.sleep(1)
        stored = stack.sql("SELECT count(*) FROM studyapp_response")[0][0]
    finally:
        stack.down()

    print(f"\nanswer path: gunicorn {args.workers} sync workers on cpu {args.server_cpu}, PostgreSQL (unpinned), "
          f"generator on cpu {args.client_cpu}; one answer per participant every {args.interval:g} s, "
          f"{args.duration:g} s per level (first interval left out)")
    print(f"{'participants':>12} {'answers/s':>10} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8} {'errors':>7}  holds")
    for row in rows:
        holds = "yes" if row["p99_ms"] < 100 and row["errors"] == 0 else "no"
        print(f"{row['participants']:>12} {row['answers_per_s']:>10.1f} {row['p50_ms']:>8.1f} {row['p99_ms']:>8.1f} "
              f"{row['max_ms']:>8.1f} {row['errors']:>7}  {holds}")
    print(f"responses stored: {stored}")


if __name__ == "__main__":
    main()
