"""What a simulation records: each request, each participant's outcome, and the run's summary."""
from __future__ import annotations

import math
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass, field

from .behaviour import Behaviour

ENDPOINTS = ("landing", "start", "experiment", "session", "consent", "instructions", "trials", "responses",
             "questionnaire", "image")


@dataclass(frozen=True)
class Request:
    """One HTTP exchange as the simulator saw it; `seconds` is from sending to the last body byte."""

    endpoint: str
    method: str
    status: int  # 0: no answer (connection error, timeout)
    started: float  # time.monotonic()
    seconds: float


@dataclass
class Outcome:
    """One simulated participant. status: completed | returned (declined consent) | abandoned |
    refused (the start page said no, e.g. the study is full) | error | cut (the time bound)."""

    index: int
    status: str = "pending"
    token: str | None = None
    conditions: tuple = ()
    answers: int = 0  # answers stored (201)
    resends: int = 0  # answers sent again with the same idempotency key
    resend_stored_again: int = 0  # resends answered 201: must stay 0
    reloads: int = 0
    practice_repeats: int = 0
    oracle_misses: int = 0
    correct: dict = field(default_factory=dict)  # "<kind>:<condition or basis>" → [n correct, n]
    errors: list = field(default_factory=list)
    anomalies: list = field(default_factory=list)  # answers that break the API contract without failing
    detail: str = ""


def percentile(values, q):
    """Linear-interpolation percentile of a list (q in [0, 100]); NaN when empty."""
    if not values:
        return float("nan")
    s = sorted(values)
    pos = (len(s) - 1) * q / 100.0
    lo = math.floor(pos)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (pos - lo)


@dataclass
class SimulationResult:
    outcomes: list
    requests: list
    wall_s: float
    concurrency: int
    behaviour: Behaviour

    def latency(self):
        """endpoint → {n, errors, p50_ms, p90_ms, p99_ms, max_ms}; errors are statuses ≥ 500 or no answer."""
        by = defaultdict(list)
        for r in self.requests:
            by[r.endpoint].append(r)
        table = {}
        for endpoint in [e for e in ENDPOINTS if e in by] + sorted(set(by) - set(ENDPOINTS)):
            rs = by[endpoint]
            ms = [r.seconds * 1000 for r in rs]
            table[endpoint] = {
                "n": len(rs), "errors": sum(1 for r in rs if r.status == 0 or r.status >= 500),
                "limited": sum(1 for r in rs if r.status == 429),
                "p50_ms": round(percentile(ms, 50), 2), "p90_ms": round(percentile(ms, 90), 2),
                "p99_ms": round(percentile(ms, 99), 2), "max_ms": round(max(ms), 2),
            }
        return table

    def accuracy(self):
        """'<kind>:<condition or basis>' → {correct, n, accuracy}, as the simulator answered (main trials
        keyed by condition where the oracle knows it, else by basis)."""
        total = defaultdict(lambda: [0, 0])
        for o in self.outcomes:
            for key, (k, n) in o.correct.items():
                total[key][0] += k
                total[key][1] += n
        return {key: {"correct": k, "n": n, "accuracy": round(k / n, 4) if n else None}
                for key, (k, n) in sorted(total.items())}

    def summary(self):
        statuses = Counter(o.status for o in self.outcomes)
        answers = sum(o.answers for o in self.outcomes)
        minutes = self.wall_s / 60 if self.wall_s else float("nan")
        return {
            "participants": {"requested": len(self.outcomes), "started": sum(1 for o in self.outcomes if o.token),
                             **{k: statuses.get(k, 0) for k in
                                ("completed", "returned", "abandoned", "refused", "error", "cut")}},
            "answers_stored": answers,
            "resends": sum(o.resends for o in self.outcomes),
            "resends_stored_again": sum(o.resend_stored_again for o in self.outcomes),
            "reloads": sum(o.reloads for o in self.outcomes),
            "practice_repeats": sum(o.practice_repeats for o in self.outcomes),
            "oracle_misses": sum(o.oracle_misses for o in self.outcomes),
            "errors": sum(len(o.errors) for o in self.outcomes),
            "anomalies": sum(len(o.anomalies) for o in self.outcomes),
            "anomaly_samples": [a for o in self.outcomes for a in o.anomalies][:5],
            "error_samples": [e for o in self.outcomes for e in o.errors][:10],
            "requests": len(self.requests),
            "wall_s": round(self.wall_s, 2),
            "concurrency": self.concurrency,
            "throughput": {
                "participants_completed_per_min": round(statuses.get("completed", 0) / minutes, 1),
                "answers_per_s": round(answers / self.wall_s, 1) if self.wall_s else None,
                "requests_per_s": round(len(self.requests) / self.wall_s, 1) if self.wall_s else None,
            },
            "latency": self.latency(),
            "accuracy": self.accuracy(),
            "planted": {"accuracy": self.behaviour.accuracy, "catch": self.behaviour.catch_accuracy,
                        "practice": self.behaviour.practice_accuracy},
        }

    def format_summary(self):
        s = self.summary()
        p = s["participants"]
        t = s["throughput"]
        lines = [
            f"participants: {p['requested']} requested, {p['started']} started, {p['completed']} completed, "
            f"{p['returned']} returned (declined consent), {p['abandoned']} abandoned, {p['refused']} refused, "
            f"{p['error']} failed, {p['cut']} cut by the time bound",
            f"answers: {s['answers_stored']} stored, {s['resends']} resent with the same key "
            f"({s['resends_stored_again']} stored twice), {s['reloads']} reloads, "
            f"{s['practice_repeats']} practice repeats, {s['oracle_misses']} oracle misses, {s['errors']} errors, "
            f"{s['anomalies']} contract anomalies",
            f"time: {s['wall_s']} s on {s['concurrency']} threads: {t['participants_completed_per_min']} "
            f"participants/min, {t['answers_per_s']} answers/s, {t['requests_per_s']} requests/s",
            "",
            f"{'endpoint':<14}{'n':>7}{'errors':>8}{'429':>6}{'p50 ms':>10}{'p90 ms':>10}{'p99 ms':>10}{'max ms':>10}",
        ]
        for endpoint, row in s["latency"].items():
            lines.append(f"{endpoint:<14}{row['n']:>7}{row['errors']:>8}{row['limited']:>6}{row['p50_ms']:>10.1f}"
                         f"{row['p90_ms']:>10.1f}{row['p99_ms']:>10.1f}{row['max_ms']:>10.1f}")
        if s["accuracy"]:
            lines += ["", f"{'answered as (kind:condition)':<36}{'n':>7}{'accuracy':>10}"]
            for key, row in s["accuracy"].items():
                lines.append(f"{key:<36}{row['n']:>7}{row['accuracy']:>10.3f}")
        for e in s["error_samples"]:
            lines.append(f"error: {e}")
        for a in s["anomaly_samples"]:
            lines.append(f"anomaly: {a}")
        return "\n".join(lines)


def result_to_json(result):
    """The summary plus one row per participant (no request records), for `--json`."""
    return {**result.summary(), "outcomes": [asdict(o) for o in result.outcomes]}
