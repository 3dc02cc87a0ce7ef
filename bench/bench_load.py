"""How many participants, each answering every 2 s, the answer path holds on this machine.

gunicorn, started with the repository's gunicorn.conf.py as in production and pinned to its own core,
and PostgreSQL on loopback; the load generator (one asyncio process, pinned to the other core) plays
simulated participants who have passed consent and instructions and POST one answer per interval, in
order, with a fresh idempotency key and the CSRF cookie and header, exactly as the browser does, on a
new connection each (the worst case for the server). A participant whose answer is still pending when
the next one is due sends it as soon as the first returns, as a browser would.

For each level it prints answers/s, latency percentiles and errors (any status but 201, a timeout, a
broken connection, over the whole level), the CPU the web workers and their PostgreSQL backends spent
per answer (idle costs included, so it falls as the rate rises; a backend that a worker replaced during
the level, CONN_MAX_AGE, is missed), and the generator's own health: its CPU share and how late its
timers fired. A level holds when p99 < 100 ms
with no error; a level where the generator itself lagged is marked, as its latencies are not the
server's alone. At the end every 201 must match a stored response.

    .venv/bin/python bench/bench_load.py [--levels 100,250,500,750,1000,1250] [--duration 20]
        [--workers 3] [--threads 1] [--no-access-log] [--rate-limits] [--calibrate]

--calibrate drives a trivial WSGI app (bench/trivial_wsgi.py) instead, under the same gunicorn
settings: the ceiling of the generator, gunicorn and loopback together.
"""
import argparse
import asyncio
import json
import os
import random
import resource
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

from tests.integration.stack import PYTHON, REDIS_URL, Stack, child_pids, wait_for_http  # noqa: E402

CSRF_SECRET = secrets.token_hex(16)  # 32 characters: Django accepts the unmasked secret as token
REQUEST_TIMEOUT = 10.0  # seconds; an answer pending this long counts as an error
# Timers firing later than this (p99) mean the generator could not keep up: its latencies include its own delay.
GENERATOR_LAG_LIMIT_MS = 10.0


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
    parts = status_line.split()
    if len(parts) < 2 or not parts[1].isdigit():
        raise ConnectionError(f"no HTTP status line: {status_line[:40]!r}")
    return int(parts[1])


async def participant(port, plan, interval, deadline, records):
    """One participant: answer k is due `k * interval` after a random start; each record is (due, sent,
    latency, status, timer lag). The timer lag is how late the loop woke us for an answer that was due
    after the previous one came back: the generator's delay, not the server's."""
    loop = asyncio.get_running_loop()
    start = loop.time() + random.uniform(0, interval)
    ready = loop.time()
    for k, trial_id in enumerate(plan["trials"]):
        due = start + k * interval
        await asyncio.sleep(max(0.0, due - loop.time()))
        sent = loop.time()
        if sent >= deadline:
            return
        lag = sent - max(due, ready)
        try:
            status = await asyncio.wait_for(post_answer(port, plan["token"], trial_id), REQUEST_TIMEOUT)
        except TimeoutError:
            status = "timeout"
        except (OSError, EOFError, ValueError) as exc:  # refused, reset, a reply cut short
            status = type(exc).__name__
        ready = loop.time()
        records.append((due, sent, ready - sent, status, lag))


async def drive(port, plans, interval, duration):
    records = []
    loop = asyncio.get_running_loop()
    deadline = loop.time() + duration
    await asyncio.gather(*(participant(port, p, interval, deadline, records) for p in plans))
    return records


def cpu_seconds(pids):
    """utime + stime of each of `pids` that /proc shows (a process may have ended meanwhile)."""
    seconds = {}
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        seconds[pid] = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return seconds


def spent(before, after):
    """CPU seconds spent between two cpu_seconds() readings, by the processes seen in both or born since."""
    return sum(t - before.get(pid, 0.0) for pid, t in after.items())


class Meters:
    """CPU of the web workers, of their PostgreSQL backends and of this generator, over one level."""

    def __init__(self, stack, web):
        self.stack, self.web = stack, web

    def backends(self):
        rows = self.stack.sql("SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
                              "AND pid <> pg_backend_pid()")
        return [pid for (pid,) in rows]

    def read(self):
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return {"web": cpu_seconds([self.web.pid, *child_pids(self.web.pid)]), "db": cpu_seconds(self.backends()),
                "generator": usage.ru_utime + usage.ru_stime, "wall": time.monotonic()}

    @staticmethod
    def difference(before, after):
        return {"web": spent(before["web"], after["web"]), "db": spent(before["db"], after["db"]),
                "generator": after["generator"] - before["generator"], "wall": after["wall"] - before["wall"]}


def summarise(level, records, duration, interval, used):
    # The first interval is ramp-up (participants start at random offsets): leave it out.
    first = min(r[0] for r in records) + interval if records else 0
    steady = [r for r in records if r[0] >= first]
    latencies = [latency * 1000 for _, _, latency, status, _ in steady if status == 201]
    errors = [status for _, _, _, status, _ in records if status != 201]  # ramp-up included
    answers = sum(1 for r in records if r[3] == 201)
    return {
        "participants": level, "answers": len(steady), "answers_per_s": len(steady) / max(duration - interval, 1e-9),
        "p50_ms": percentile(latencies, 50), "p99_ms": percentile(latencies, 99),
        "max_ms": max(latencies) if latencies else float("nan"),
        "mean_ms": statistics.fmean(latencies) if latencies else float("nan"),
        "errors": len(errors), "error_kinds": sorted({str(e) for e in errors}),
        "created": answers,
        "lag_p99_ms": percentile([r[4] * 1000 for r in steady], 99),
        # CPU per answer over the whole level (ramp-up included), and the generator's share of its core.
        "web_ms": used["web"] / max(answers, 1) * 1000, "db_ms": used["db"] / max(answers, 1) * 1000,
        "generator_cpu": used["generator"] / used["wall"],
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--levels", default="100,250,500,750,1000,1250")
    parser.add_argument("--interval", type=float, default=2.0, help="seconds between a participant's answers")
    parser.add_argument("--duration", type=float, default=20.0, help="seconds per level")
    parser.add_argument("--workers", type=int, default=3, help="gunicorn workers")
    parser.add_argument("--threads", type=int, default=1, help="threads per worker (more than 1: gthread)")
    parser.add_argument("--no-access-log", dest="access_log", action="store_false",
                        help="turn gunicorn's access log off (production keeps it; here it goes to a file)")
    parser.add_argument("--rate-limits", action="store_true",
                        help="count requests in Redis (TEST_REDIS_URL) as production does")
    parser.add_argument("--calibrate", action="store_true", help="drive bench/trivial_wsgi.py instead of the app")
    parser.add_argument("--server-cpu", default="0")
    parser.add_argument("--client-cpu", type=int, default=1)
    args = parser.parse_args()
    levels = [int(v) for v in args.levels.split(",")]
    answers_needed = int(args.duration / args.interval) + 2

    stack = Stack(Path(tempfile.mkdtemp(prefix="bench-load-")))
    # The production settings, but no rate limits (every simulated participant comes from 127.0.0.1), or,
    # with --rate-limits, their counters in Redis as docker-compose.yml keeps them, the per-token limit at
    # its default and the per-address one counted but out of reach.
    stack.env.update({"RATE_LIMIT_PER_IP": "0", "RATE_LIMIT_PER_TOKEN": "0",
                      "GUNICORN_ACCESS_LOG": str(stack.workdir / "access.log") if args.access_log else ""})
    if args.rate_limits:
        stack.env.update({"CACHE_URL": REDIS_URL, "RATE_LIMIT_PER_IP": str(10 ** 9), "RATE_LIMIT_PER_TOKEN": "120"})
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
        app = ["--pythonpath", "bench", "trivial_wsgi:application"] if args.calibrate else ["studyapp.wsgi:application"]
        web = stack.start_process("web", ["taskset", "-c", args.server_cpu, PYTHON, "-m", "gunicorn", "-c",
                                          "gunicorn.conf.py", "--bind", f"127.0.0.1:{stack.port}", "--workers",
                                          str(args.workers), "--threads", str(args.threads), *app])
        wait_for_http(f"{stack.base_url}/" if args.calibrate else f"{stack.base_url}/admin/login/", process=web)
        os.sched_setaffinity(0, {args.client_cpu})
        meters = Meters(stack, web)

        rows = []
        for level in levels:
            before = meters.read()
            records = asyncio.run(drive(stack.port, plans[str(level)], args.interval, args.duration))
            rows.append(summarise(level, records, args.duration, args.interval,
                                  Meters.difference(before, meters.read())))
            time.sleep(1)
        stored = stack.sql("SELECT count(*) FROM studyapp_response")[0][0]
    finally:
        # Not stack.down(): that also empties a Redis database, which this benchmark never used.
        for name in list(stack.processes):
            stack.stop_process(name)
        stack.admin_sql(f'DROP DATABASE IF EXISTS "{stack.database}" WITH (FORCE)')

    kind = f"gthread, {args.threads} threads each" if args.threads > 1 else "sync"
    print(f"\n{'trivial WSGI app (calibration)' if args.calibrate else 'answer path'}: gunicorn -c gunicorn.conf.py, "
          f"{args.workers} {kind} workers on cpu {args.server_cpu}, access log {'on' if args.access_log else 'off'}, "
          f"rate limits {'counted in Redis' if args.rate_limits else 'off'}; "
          f"PostgreSQL (unpinned); generator on cpu {args.client_cpu}; one answer per participant every "
          f"{args.interval:g} s, {args.duration:g} s per level (first interval left out of the latencies)")
    print(f"{'participants':>12} {'answers/s':>10} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8} {'errors':>7} "
          f"{'web ms/ans':>10} {'db ms/ans':>9} {'gen cpu':>8} {'gen lag p99':>11}  holds")
    for row in rows:
        generator_bound = row["lag_p99_ms"] > GENERATOR_LAG_LIMIT_MS
        holds = "yes" if row["p99_ms"] < 100 and row["errors"] == 0 else "no"
        if generator_bound:
            holds += " (generator lagged)"
        print(f"{row['participants']:>12} {row['answers_per_s']:>10.1f} {row['p50_ms']:>8.1f} {row['p99_ms']:>8.1f} "
              f"{row['max_ms']:>8.1f} {row['errors']:>7} {row['web_ms']:>10.2f} {row['db_ms']:>9.2f} "
              f"{row['generator_cpu']:>8.0%} {row['lag_p99_ms']:>9.1f}ms  {holds}"
              + (f"  errors: {', '.join(row['error_kinds'])}" if row["errors"] else ""))
    created = sum(row["created"] for row in rows)
    if args.calibrate:
        return
    print(f"responses stored: {stored}; answered 201: {created}")
    if stored != created:
        sys.exit(f"MISMATCH: {created} answers acknowledged with 201 but {stored} responses stored")


if __name__ == "__main__":
    main()
