"""One simulated participant, from the recruitment link to the completion code."""
from __future__ import annotations

import json
import time
import uuid
from datetime import UTC, datetime
from urllib.parse import urlencode, urljoin, urlsplit

from .browser import PageParser, StopParticipant, page_message
from .oracle import Judgement
from .records import Outcome


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
            raise StopParticipant("refused", f"landing page {status}: {page_message(html)}")
        page = PageParser()
        page.feed(html)
        if page.form_action is None or "csrfmiddlewaretoken" not in page.inputs:
            raise StopParticipant("error", "the landing page has no start form with a CSRF token")
        action = urlsplit(urljoin(landing, page.form_action)).path
        status, headers, data = self.http.post_form("start", action, page.inputs, self.http.base_url + landing)
        if status != 302:
            raise StopParticipant("refused", f"start {status}: {page_message(data.decode('utf-8', 'replace'))}")
        self.experiment_path = urlsplit(urljoin(action, headers["Location"])).path
        self._load_experiment()

    def _load_experiment(self):
        status, _, html = self.http.get_page("experiment", self.experiment_path)
        if status != 200:
            raise StopParticipant("error", f"experiment page {status}")
        page = PageParser()
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
                "client_time": datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")}
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
