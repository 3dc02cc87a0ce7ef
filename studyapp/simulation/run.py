"""Many simulated participants at once, on threads, within a time bound."""
from __future__ import annotations

import random
import threading
import time
import uuid

from .behaviour import Behaviour
from .browser import Browser
from .participant import SimulatedParticipant
from .records import Outcome, SimulationResult


def simulate(base_url, slug, n, *, behaviour=None, oracle=None, concurrency=8, seed=0, max_seconds=600.0,
             timeout=30.0, pid_prefix=None, progress=None, forwarded_for=False):
    """Run `n` simulated participants of study `slug` against `base_url` on `concurrency` threads.

    Participants start in index order as threads free up; none starts after `max_seconds`, and those
    still running then stop at their next step (status "cut"). Without an `oracle` answers are coin
    flips (enough for a load test). Participant i draws everything from `random.Random(f"{seed}-{i}")`.
    With `forwarded_for`, participant i sends `X-Forwarded-For: 10.x.y.z` (its own address), as it would
    arrive through the production proxy; the server counts its per-address rate limit on that address
    only with TRUSTED_PROXY_COUNT=1, otherwise every simulated participant shares 127.0.0.1's limit.
    Returns a :class:`SimulationResult`; its `requests` hold one record per HTTP exchange."""
    behaviour = behaviour or Behaviour()
    pid_prefix = pid_prefix or f"sim-{uuid.uuid4().hex[:8]}"
    outcomes = [None] * n
    per_thread = []
    next_index = iter(range(n))
    lock = threading.Lock()
    started = time.monotonic()
    deadline = started + max_seconds

    def worker():
        requests = []
        with lock:
            per_thread.append(requests)
        while True:
            with lock:
                i = next(next_index, None)
            if i is None:
                return
            if time.monotonic() > deadline:
                outcomes[i] = Outcome(i, status="cut", detail="not started: the time bound was reached")
                continue
            address = f"10.{(i >> 16) & 255}.{(i >> 8) & 255}.{i & 255}" if forwarded_for else None
            browser = Browser(base_url, requests, timeout=timeout, deadline=deadline, forwarded_for=address)
            participant = SimulatedParticipant(i, browser, slug, behaviour, oracle, random.Random(f"{seed}-{i}"),
                                               pid_prefix, deadline=deadline)
            try:
                outcomes[i] = participant.run()
            except Exception as exc:  # a simulator bug must not hang the other threads
                outcomes[i] = Outcome(i, status="error", errors=[f"{type(exc).__name__}: {exc}"])
            if progress is not None:
                progress(outcomes[i])

    threads = [threading.Thread(target=worker, name=f"participant-{k}", daemon=True)
               for k in range(max(1, min(concurrency, n)))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.monotonic() - started
    requests = sorted((r for rs in per_thread for r in rs), key=lambda r: r.started)
    return SimulationResult(outcomes=outcomes, requests=requests, wall_s=wall, concurrency=concurrency,
                            behaviour=behaviour)
