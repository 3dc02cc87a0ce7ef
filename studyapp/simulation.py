"""Simulated participants: many people taking a study at once, through the real HTTP interface.

Each simulated participant does what the browser does (docs/contracts.md, section 3): opens the
recruitment link, clicks "Start" (a form POST with the CSRF token from the page and its cookie),
follows the redirect to the experiment page, reads the `study-config` JSON from it, and then talks to
the JSON API: session, consent, instructions, trials in batches, one POST per answer with an
idempotency key, the questionnaire. Along the way some participants reload the page mid-study (the
session and trials are fetched again and the last answer is sent again with the same key, as the
front end's answer queue does after a lost acknowledgement), some double-submit an answer, and some
return: they decline consent, or simply stop answering half-way and never come back.

Answering with a planted accuracy needs to know which query is correct, which the browser is never
told. The simulator therefore has an :class:`AnswerOracle`, built from the *stimulus side* of the
database or the artifact manifest (which image is a maximally or minimally activating exemplar of
which unit), never from the trials' stored answer key: a query that is among a unit's
`references_max`/`queries_max` is the correct one. Image files are content-addressed, so an image is
matched by its file name, whatever URL prefix the server uses. The HTTP side stays what a browser
sees; a bug that stored the wrong answer key would show up as an accuracy off its planted value.

Planted accuracies are keyed by condition name or by basis (a condition name wins; then the unit's
basis; then the key ``*``; then ``default_accuracy``). Main trials are answered correctly with that
probability; catch trials (recognised by the oracle: their queries are reference images) with
``catch_accuracy``; practice trials with ``practice_accuracy``. Confidence goes with being correct
(mostly 3 when right, mostly 1 when wrong), response times are log-normal, a little slower when
wrong, and instruction reading times are log-normal around half a minute.

:func:`simulate` runs N participants on K threads against a base URL within a time bound and returns
a :class:`SimulationResult` with every request's latency, so a load benchmark can use the same code.
Nothing here imports Django except :meth:`AnswerOracle.from_study`.
"""
from __future__ import annotations

import http.client
import json
import math
import random
import threading
import time
import uuid
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from html.parser import HTMLParser
from http.cookies import SimpleCookie
from urllib.parse import urlencode, urljoin, urlsplit

ENDPOINTS = ("landing", "start", "experiment", "session", "consent", "instructions", "trials", "responses",
             "questionnaire", "image")
USER_AGENT = "studyapp-simulated-participant/1"
TRIAL_BATCH = 10  # as the front end: trials per GET trials request


# ------------------------------------------------------------------------------------------ oracle
def image_key(url_or_path):
    """An image's identity: its content-addressed file name, without the folder or URL prefix."""
    return str(url_or_path).rsplit("/", 1)[-1]


@dataclass(frozen=True)
class OracleUnit:
    key: str  # layer:basis:index
    basis: str
    layer: str
    references_max: frozenset
    references_min: frozenset
    queries_max: frozenset
    queries_min: frozenset
    strips: tuple = ()  # the unit's ordered strips, each lowest activation first
    overlays_max: frozenset = frozenset()  # attribution overlays shown in place of references_max

    @classmethod
    def from_lists(cls, key, basis, layer, lists):
        """From an artifact unit's lists: `strips` (or the single `strip`) and `attribution_overlays_max`
        as the manifest names them, the exemplar roles otherwise."""
        # as studyapp.artifacts.unit_strips reads them; not imported, as this module runs without Django
        strips = lists.get("strips") or ([lists["strip"]] if lists.get("strip") else [])
        return cls(key=key, basis=basis, layer=layer,
                   strips=tuple(tuple(image_key(p) for p in strip) for strip in strips),
                   overlays_max=frozenset(image_key(p) for p in lists.get("attribution_overlays_max", ())),
                   **{role: frozenset(image_key(p) for p in lists.get(role, ())) for role in
                      ("references_max", "references_min", "queries_max", "queries_min")})

    @property
    def max_images(self):
        return self.references_max | self.queries_max

    @property
    def min_images(self):
        return self.references_min | self.queries_min

    @property
    def images(self):
        return self.max_images | self.min_images | frozenset(img for strip in self.strips for img in strip)


@dataclass(frozen=True)
class OracleCondition:
    name: str
    basis: str
    reference_type: str  # natural | max_only | none | overlay
    units: frozenset  # unit keys
    paradigm: str = "reference_2afc"


@dataclass(frozen=True)
class Judgement:
    correct: str | None  # a | b, None when the oracle cannot tell
    kind: str  # practice | main | catch | unknown
    basis: str | None = None
    unit: str | None = None
    conditions: tuple = ()


def _shown_type(trial, unit):
    if trial.get("paradigm") == "ordered_strip":
        return "ordered_strip"
    if unit.overlays_max and {image_key(p) for p in trial.get("references_max") or ()} == unit.overlays_max:
        return "overlay"
    if trial.get("references_max") and trial.get("references_min"):
        return "natural"
    if trial.get("references_max"):
        return "max_only"
    return "none"


def _concordance(strip, rank):
    """Pairs in increasing activation order minus pairs in decreasing order, along the strip."""
    r = [rank[img] for img in strip]
    return sum((r[j] > r[i]) - (r[j] < r[i]) for i in range(len(r)) for j in range(i + 1, len(r)))


class AnswerOracle:
    """Which query of a trial payload is the maximally activating one (reference 2AFC), or which strip
    runs from low to high activation (ordered strip), from the exemplar roles of the study's units.
    The trial payload does not name its unit; the unit is the one whose maximal references are the
    ones shown (or, with no references shown, the one in whose bands the two queries fall on opposite
    sides; for strips, the one whose strip or references hold all the images shown). When units
    disagree the oracle returns no answer rather than guess."""

    def __init__(self, units, conditions=()):
        self.units = list(units)
        self.conditions = list(conditions)
        self._by_refs = defaultdict(list)
        for unit in self.units:
            self._by_refs[unit.references_max].append(unit)
            if unit.overlays_max:
                self._by_refs[unit.overlays_max].append(unit)
        self._by_image = defaultdict(list)
        for unit in self.units:
            for img in unit.images:
                self._by_image[img].append(unit)
        self._conditions_of = defaultdict(list)
        for cond in self.conditions:
            for key in cond.units:
                self._conditions_of[key].append(cond)

    @classmethod
    def from_manifest(cls, manifest):
        """From an artifact's manifest (a dict, or the path of `manifest.json`). Conditions are not
        known there: accuracies are then looked up by basis."""
        if not isinstance(manifest, dict):
            with open(manifest, encoding="utf-8") as f:
                manifest = json.load(f)
        units = []
        for layer in manifest["layers"]:
            for u in layer["units"]:
                key = u.get("id") or f"{layer['layer']}:{layer['basis']}:{u['index']}"
                units.append(OracleUnit.from_lists(key, layer["basis"], layer["layer"], u))
        return cls(units)

    @classmethod
    def from_study(cls, study):
        """From the Exemplar rows of the study's conditions, through the ORM (the management command's
        route). Reads only what the stimulus artifact put there, not the trials' answer keys."""
        from .models import Exemplar

        roles = {Exemplar.Role.REFERENCE_MAX: "references_max", Exemplar.Role.REFERENCE_MIN: "references_min",
                 Exemplar.Role.QUERY_MAX: "queries_max", Exemplar.Role.QUERY_MIN: "queries_min",
                 Exemplar.Role.OVERLAY_MAX: "attribution_overlays_max"}
        units, conditions, seen = [], [], {}
        for condition in study.conditions.all():
            keys = set()
            for unit in condition.units():
                keys.add(unit.key)
                if unit.key in seen:
                    continue
                lists, strips = defaultdict(list), defaultdict(list)
                rows = Exemplar.objects.filter(unit=unit).order_by("role", "group", "position")
                for role, group, image in rows.values_list("role", "group", "image"):
                    if role == Exemplar.Role.STRIP:
                        strips[group].append(image)
                    elif role in roles:
                        lists[roles[role]].append(image)
                lists["strips"] = [strips[group] for group in sorted(strips)]
                seen[unit.key] = OracleUnit.from_lists(unit.key, unit.basis, unit.layer, lists)
                units.append(seen[unit.key])
            conditions.append(OracleCondition(condition.name, condition.basis, condition.reference_type,
                                              frozenset(keys), getattr(condition, "paradigm", "reference_2afc")))
        return cls(units, conditions)

    def _conditions(self, unit, trial):
        shown = _shown_type(trial, unit)
        if shown == "ordered_strip":
            return tuple(sorted(c.name for c in self._conditions_of[unit.key] if c.paradigm == "ordered_strip"))
        return tuple(sorted(c.name for c in self._conditions_of[unit.key]
                            if c.reference_type == shown and c.paradigm != "ordered_strip"))

    def _kind(self, trial, is_catch):
        if trial.get("block") == "practice":
            return "practice"
        return "catch" if is_catch else "main"

    def judge(self, trial):
        if trial.get("paradigm") == "ordered_strip" or "strip_a" in trial:
            return self._judge_strip(trial)
        a, b = image_key(trial["query_a"]), image_key(trial["query_b"])
        refs = frozenset(image_key(p) for p in trial.get("references_max") or ())
        candidates = self._by_refs.get(refs, []) if refs else self.units
        verdicts = {}
        for unit in candidates:
            if a in unit.max_images and b in unit.min_images:
                verdicts[unit.key] = ("a", unit, a in unit.references_max)
            elif b in unit.max_images and a in unit.min_images:
                verdicts[unit.key] = ("b", unit, b in unit.references_max)
        answers = {v[0] for v in verdicts.values()}
        if len(answers) != 1:
            return Judgement(None, "unknown")
        correct, unit, is_catch = next(iter(verdicts.values()))
        return Judgement(correct, self._kind(trial, is_catch), unit.basis, unit.key, self._conditions(unit, trial))

    def _judge_strip(self, trial):
        strip_a = [image_key(p) for p in trial["strip_a"]]
        strip_b = [image_key(p) for p in trial["strip_b"]]
        shown = set(strip_a) | set(strip_b)
        if not shown:
            return Judgement(None, "unknown")
        verdicts = {}
        for unit in self._by_image.get(next(iter(shown)), ()):
            strip = next((strip for strip in unit.strips if shown <= set(strip)), None)
            if strip is not None:
                rank, is_catch = {img: i for i, img in enumerate(strip)}, False
            elif shown <= unit.references_min | unit.references_max:
                # an easy strip of extreme references: which side each image is on is all that is known
                rank, is_catch = {**{img: 0 for img in unit.references_min},
                                  **{img: 1 for img in unit.references_max}}, True
            else:
                continue
            score_a, score_b = _concordance(strip_a, rank), _concordance(strip_b, rank)
            if score_a != score_b:
                verdicts[unit.key] = ("a" if score_a > score_b else "b", unit, is_catch)
        if len({v[0] for v in verdicts.values()}) != 1:
            return Judgement(None, "unknown")
        correct, unit, is_catch = next(iter(verdicts.values()))
        return Judgement(correct, self._kind(trial, is_catch), unit.basis, unit.key, self._conditions(unit, trial))


# ------------------------------------------------------------------------------------------ behaviour
def parse_accuracy(text):
    """'neuron=0.7,pca=0.8' → {'neuron': 0.7, 'pca': 0.8}; a bare number sets the key '*'."""
    spec = {}
    for part in (p.strip() for p in str(text or "").split(",")):
        if not part:
            continue
        key, sep, value = part.rpartition("=")
        key = key.strip() if sep else "*"
        p = float(value)
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"accuracy for {key!r} must be in [0, 1], not {p}")
        spec[key] = p
    return spec


@dataclass
class Behaviour:
    """How a simulated participant answers and misbehaves. Rates are per participant."""

    accuracy: dict = field(default_factory=dict)  # condition name or basis (or '*') → P(correct), main trials
    default_accuracy: float = 0.75
    catch_accuracy: float = 0.97
    practice_accuracy: float = 0.9
    reload_rate: float = 0.1  # reload the page once, mid-study, and resend the last answer
    double_submit_rate: float = 0.05  # send one answer twice at once (a double click, a retried POST)
    return_rate: float = 0.05  # stop before the end: decline consent, or abandon mid-way
    decline_share: float = 0.25  # of those who return, the share who decline consent
    reading_ms_median: float = 35_000.0
    reading_sigma: float = 0.35
    rt_ms_median: float = 2_600.0
    rt_sigma: float = 0.45
    think_ms: float = 0.0  # real pause before each answer (mean of an exponential); 0 = as fast as possible
    fetch_images: bool = False  # GET each image once, as the browser's preload does
    trial_batch: int = TRIAL_BATCH

    def accuracy_for(self, judgement):
        values = {self.accuracy[c] for c in judgement.conditions if c in self.accuracy}
        if len(values) == 1:
            return values.pop()
        if judgement.basis in self.accuracy:
            return self.accuracy[judgement.basis]
        return self.accuracy.get("*", self.default_accuracy)

    def confidence(self, rng, correct):
        weights = (0.15, 0.35, 0.5) if correct else (0.5, 0.35, 0.15)
        return rng.choices((1, 2, 3), weights=weights)[0]

    def rt_ms(self, rng, correct, confidence):
        median = self.rt_ms_median * (0.9 if correct else 1.15) * (1.15 - 0.1 * confidence)
        return round(max(250.0, rng.lognormvariate(math.log(median), self.rt_sigma)), 1)

    def reading_ms(self, rng):
        return round(rng.lognormvariate(math.log(self.reading_ms_median), self.reading_sigma), 1)


# ------------------------------------------------------------------------------------------ records
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


# ------------------------------------------------------------------------------------------ HTTP
class _Page(HTMLParser):
    """The landing page's start form and the experiment page's `study-config` script."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.form_action = None
        self.inputs = {}
        self.config_text = None
        self._in_form = False
        self._in_config = False
        self._config_parts = []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "form" and (a.get("method") or "").lower() == "post" and self.form_action is None:
            self._in_form = True
            self.form_action = a.get("action") or ""
        elif tag == "input" and self._in_form and a.get("name"):
            self.inputs[a["name"]] = a.get("value") or ""
        elif tag == "script" and a.get("id") == "study-config":
            self._in_config = True

    def handle_endtag(self, tag):
        if tag == "form":
            self._in_form = False
        elif tag == "script" and self._in_config:
            self._in_config = False
            self.config_text = "".join(self._config_parts)

    def handle_data(self, data):
        if self._in_config:
            self._config_parts.append(data)


class StopParticipant(Exception):
    """The participant cannot go on (refused, ended, or the server kept failing)."""

    def __init__(self, status, detail):
        super().__init__(detail)
        self.status = status
        self.detail = detail


class Browser:
    """One participant's HTTP client: a persistent connection (reopened when the server closes it),
    a cookie jar, and a latency record per request. Network errors and 5xx are retried with back-off,
    as the front end's requestWithRetry does; every attempt is recorded."""

    def __init__(self, base_url, requests, timeout=30.0, retries=3, deadline=None, forwarded_for=None):
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https"):
            raise ValueError(f"base URL must be http(s), not {base_url!r}")
        self.base_url = base_url.rstrip("/")
        self.origin = f"{parts.scheme}://{parts.netloc}"
        self.host = parts.hostname
        self.port = parts.port
        self.https = parts.scheme == "https"
        self.prefix = parts.path.rstrip("/")
        self.timeout = timeout
        self.retries = retries
        self.deadline = deadline
        self.requests = requests
        self.cookies = {}
        self.conn = None
        # As a reverse proxy would add it: the server's per-address limits see one address per
        # participant only when it trusts that header (TRUSTED_PROXY_COUNT=1).
        self.forwarded_for = forwarded_for

    def _connection(self):
        if self.conn is None:
            cls = http.client.HTTPSConnection if self.https else http.client.HTTPConnection
            self.conn = cls(self.host, self.port, timeout=self.timeout)
        return self.conn

    def close(self):
        if self.conn is not None:
            self.conn.close()
            self.conn = None

    def _once(self, method, path, body, headers):
        headers = {"User-Agent": USER_AGENT, "Accept-Encoding": "identity", **headers}
        if self.forwarded_for:
            headers["X-Forwarded-For"] = self.forwarded_for
        if self.cookies:
            headers["Cookie"] = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        conn = self._connection()
        try:
            conn.request(method, self.prefix + path, body=body, headers=headers)
            resp = conn.getresponse()
            data = resp.read()
        except (OSError, http.client.HTTPException):
            self.close()
            raise
        for header in resp.headers.get_all("Set-Cookie") or ():
            jar = SimpleCookie()
            jar.load(header)
            for name, morsel in jar.items():
                self.cookies[name] = morsel.value
        if resp.will_close:
            self.close()
        return resp.status, resp.headers, data

    def request(self, endpoint, method, path, body=None, headers=None):
        headers = dict(headers or {})
        delay = 0.25
        for attempt in range(self.retries + 1):
            started = time.monotonic()
            status = 0
            try:
                status, resp_headers, data = self._once(method, path, body, headers)
            except (OSError, http.client.HTTPException) as exc:
                self.requests.append(Request(endpoint, method, 0, started, time.monotonic() - started))
                failure = f"{endpoint}: {type(exc).__name__}: {exc}"
            else:
                self.requests.append(Request(endpoint, method, status, started, time.monotonic() - started))
                if status < 500 and status not in (408, 429):
                    return status, resp_headers, data
                failure = f"{endpoint}: HTTP {status}"
            pause = delay * (0.5 + random.random())
            if status == 429:
                try:
                    pause = max(pause, float(resp_headers.get("Retry-After", 0)))
                except ValueError:
                    pass
            if attempt == self.retries or (self.deadline and time.monotonic() + pause > self.deadline):
                raise StopParticipant("error", failure)
            time.sleep(pause)
            delay = min(delay * 2, 4.0)
        raise AssertionError("unreachable")

    def get_page(self, endpoint, path):
        status, headers, data = self.request(endpoint, "GET", path, headers={"Accept": "text/html"})
        return status, headers, data.decode("utf-8", "replace")

    def post_form(self, endpoint, path, fields, referer):
        body = urlencode(fields).encode()
        return self.request(endpoint, "POST", path, body, {
            "Content-Type": "application/x-www-form-urlencoded", "Origin": self.origin, "Referer": referer,
            "Accept": "text/html"})

    def api(self, endpoint, method, path, payload=None, csrf_token=None):
        headers = {"Accept": "application/json"}
        body = None
        if payload is not None:
            body = json.dumps(payload).encode()
            headers.update({"Content-Type": "application/json", "Origin": self.origin})
            if csrf_token:
                headers["X-CSRFToken"] = csrf_token
        status, _, data = self.request(endpoint, method, path, body, headers)
        try:
            parsed = json.loads(data) if data else None
        except ValueError:
            parsed = None
        return status, parsed


def _page_message(html):
    start = html.find("<h1>")
    end = html.find("</p>", start)
    text = html[start:end] if start >= 0 else html[:200]
    return " ".join(text.replace("<h1>", "").replace("</h1>", ":").replace("<p>", " ").split())


# ------------------------------------------------------------------------------------------ a participant
class SimulatedParticipant:
    def __init__(self, index, browser, slug, behaviour, oracle, rng, pid_prefix, deadline=None):
        self.index = index
        self.http = browser
        self.slug = slug
        self.b = behaviour
        self.oracle = oracle
        self.rng = rng
        self.pid = f"{pid_prefix}-{index}"
        self.deadline = deadline
        self.outcome = Outcome(index)
        self.config = None
        self.images_seen = set()
        self.conditions = None  # narrowed over the trials the participant sees

    # -- steps --------------------------------------------------------------------------------
    def run(self):
        try:
            self._run()
        except StopParticipant as stop:
            self.outcome.status = stop.status
            self.outcome.detail = stop.detail
            if stop.status == "error":
                self.outcome.errors.append(stop.detail)
        finally:
            self.http.close()
            self.outcome.conditions = tuple(sorted(self.conditions or ()))
        return self.outcome

    def _check_time(self):
        if self.deadline is not None and time.monotonic() > self.deadline:
            raise StopParticipant("cut", "the simulation's time bound was reached")

    def _arrive(self):
        query = urlencode({"PROLIFIC_PID": self.pid, "STUDY_ID": self.slug, "SESSION_ID": uuid.uuid4().hex[:12]})
        landing = f"/s/{self.slug}/?{query}"
        status, _, html = self.http.get_page("landing", landing)
        if status != 200:
            raise StopParticipant("refused", f"landing page {status}: {_page_message(html)}")
        page = _Page()
        page.feed(html)
        if page.form_action is None or "csrfmiddlewaretoken" not in page.inputs:
            raise StopParticipant("error", "the landing page has no start form with a CSRF token")
        action = urlsplit(urljoin(landing, page.form_action)).path
        status, headers, data = self.http.post_form("start", action, page.inputs, self.http.base_url + landing)
        if status != 302:
            raise StopParticipant("refused", f"start {status}: {_page_message(data.decode('utf-8', 'replace'))}")
        self.experiment_path = urlsplit(urljoin(action, headers["Location"])).path
        self._load_experiment()

    def _load_experiment(self):
        status, _, html = self.http.get_page("experiment", self.experiment_path)
        if status != 200:
            raise StopParticipant("error", f"experiment page {status}")
        page = _Page()
        page.feed(html)
        if page.config_text is None:
            raise StopParticipant("error", "the experiment page has no study-config element")
        self.config = json.loads(page.config_text)
        self.outcome.token = self.config["token"]
        self.api_base = urlsplit(urljoin(self.experiment_path, self.config["api_base"])).path.rstrip("/") + "/"

    def _api(self, endpoint, method="GET", payload=None, path=None, ok=(200, 201)):
        status, data = self.http.api(endpoint, method, self.api_base + (path or endpoint), payload,
                                     self.config.get("csrf_token"))
        if status in (410, 403):
            raise StopParticipant("error", f"{endpoint}: {status} {data and data.get('error')}")
        if status not in ok:
            self.outcome.errors.append(f"{endpoint}: {status} {data and data.get('error')}")
        return status, data

    def _run(self):
        self._check_time()
        self._arrive()
        self._api("session")
        returning = self.rng.random() < self.b.return_rate
        if returning and self.rng.random() < self.b.decline_share:
            status, session = self._api("consent", "POST", {"consent": False})
            raise StopParticipant("returned" if status == 200 else "error", "declined consent")
        self._api("consent", "POST", {"consent": True})
        status, session = self._api("instructions", "POST", {"reading_ms": self.b.reading_ms(self.rng)})
        if status != 200:
            raise StopParticipant("error", f"instructions {status}")
        total = max(1, session["progress"]["total"])
        stop_after = self.rng.randint(1, max(1, total - 1)) if returning else None
        reload_after = self.rng.randint(1, max(1, total - 1)) if self.rng.random() < self.b.reload_rate else None
        double_after = self.rng.randint(0, max(0, total - 1)) if self.rng.random() < self.b.double_submit_rate \
            else None
        self._trials(stop_after, reload_after, double_after)
        status, session = self._api("session")
        if session is None or session.get("phase") != "questionnaire":
            raise StopParticipant("error", f"after the trials the phase is {session and session.get('phase')}")
        status, done = self._api("questionnaire", "POST", {"answers": {
            "strategy": self.rng.choice(["shapes", "strokes", "thickness", "guessing", ""]),
            "difficulty": self.rng.randint(1, 5), "simulated": True}})
        if status != 200 or done.get("phase") != "done":
            raise StopParticipant("error", f"questionnaire {status}")
        self.outcome.status = "completed"

    def _fetch(self, known):
        status, batch = self._api("trials", path=f"trials?limit={self.b.trial_batch}")
        if status != 200:
            raise StopParticipant("error", f"trials {status}")
        trials = [t for t in batch["trials"] if t["id"] not in known]
        if self.b.fetch_images:
            for t in trials:
                urls = [*t.get("references_min", ()), *t.get("references_max", ()), *t.get("strip_a", ()),
                        *t.get("strip_b", ()), *[t[k] for k in ("query_a", "query_b") if t.get(k)]]
                for url in urls:
                    if url not in self.images_seen:
                        self.images_seen.add(url)
                        self.http.request("image", "GET", urlsplit(url).path)
        return batch["phase"], trials

    def _trials(self, stop_after, reload_after, double_after):
        answered = set()
        buffer = []
        last = None  # the last answer's body, resent after a reload
        conflicts = 0
        while True:
            self._check_time()
            if not buffer:
                phase, buffer = self._fetch(answered)
                if phase not in ("practice", "main"):
                    return
                if not buffer:
                    raise StopParticipant("error", f"phase {phase} but no unanswered trial was served")
            trial = buffer.pop(0)
            body, truth = self._answer(trial)
            if self.b.think_ms:
                time.sleep(self.rng.expovariate(1000.0 / self.b.think_ms))
            status, ack = self._api("responses", "POST", body)
            if status == 409:
                conflicts += 1
                if conflicts > 3:
                    raise StopParticipant("error", "responses: 409 again and again after fetching the trials anew")
                buffer = []  # the server has moved on: fetch from its first unanswered trial
                continue
            conflicts = 0
            if status not in (200, 201):
                raise StopParticipant("error", f"responses {status}")
            answered.add(trial["id"])
            if status == 201:
                self.outcome.answers += 1
                self._score(truth, body["choice"])
            last = body
            if ack.get("practice_repeat"):
                if trial["block"] == "practice":
                    self.outcome.practice_repeats += 1
                elif status == 201:
                    self.outcome.anomalies.append(f"practice_repeat on main trial {trial['id']}")
                buffer = []  # as the front end does: a new practice block may sit before the main trials
            n = len(answered)
            if double_after is not None and n == double_after + 1:
                self._resend(last)
            if reload_after is not None and n == reload_after:
                self._reload(last)
                buffer = []
            if stop_after is not None and n >= stop_after:
                raise StopParticipant("abandoned", f"stopped after {n} answers")

    def _answer(self, trial):
        if self.oracle is None:
            truth = Judgement(None, "practice" if trial["block"] == "practice" else "unknown")
        else:
            truth = self.oracle.judge(trial)
        if truth.conditions:
            narrowed = set(truth.conditions) if self.conditions is None else self.conditions & set(truth.conditions)
            self.conditions = narrowed or set(truth.conditions)
        if truth.correct is None:
            if self.oracle is not None:
                self.outcome.oracle_misses += 1
            choice = self.rng.choice("ab")
        else:
            p = {"practice": self.b.practice_accuracy, "catch": self.b.catch_accuracy}.get(truth.kind) \
                if truth.kind in ("practice", "catch") else self.b.accuracy_for(truth)
            right = self.rng.random() < p
            choice = truth.correct if right else ("b" if truth.correct == "a" else "a")
        correct = truth.correct is not None and choice == truth.correct
        confidence = self.b.confidence(self.rng, correct if truth.correct is not None else self.rng.random() < 0.5)
        body = {"trial": trial["id"], "idempotency_key": str(uuid.uuid4()), "choice": choice,
                "confidence": confidence, "rt_ms": self.b.rt_ms(self.rng, correct, confidence),
                "client_time": datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")}
        return body, truth

    def _score(self, truth, choice):
        if truth.correct is None:
            return
        group = truth.conditions[0] if len(truth.conditions) == 1 else truth.basis
        tally = self.outcome.correct.setdefault(f"{truth.kind}:{group}", [0, 0])
        tally[0] += int(choice == truth.correct)
        tally[1] += 1

    def _resend(self, body):
        self.outcome.resends += 1
        status, ack = self._api("responses", "POST", body, ok=(200,))
        if status == 201:
            self.outcome.resend_stored_again += 1

    def _reload(self, last):
        """The page reloads: the experiment page again, then the session and the next trials; the
        front end's answer queue sends the last answer again (its acknowledgement was 'lost')."""
        self.outcome.reloads += 1
        self._load_experiment()
        self._api("session")
        if last is not None:
            self._resend(last)


# ------------------------------------------------------------------------------------------ the run
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


def result_to_json(result):
    """The summary plus one row per participant (no request records), for `--json`."""
    return {**result.summary(), "outcomes": [asdict(o) for o in result.outcomes]}
