"""A participant's browser, reduced to what the fault tests need: the landing page's start form, the
experiment page's config, and the JSON API (docs/contracts.md §3), each request on a fresh connection
and answered with its status, headers, body and duration, so a test sees a 503 as a 503 rather than
through the front end's retries. Also a raw socket for requests that stop half-way.

And, for the browser tests (Playwright pages), what every paradigm's trial screen shares: the root
`.study-trial` with `data-state` (loading, locked, ready), `data-trial-id` and `data-paradigm`, and the
answer buttons `.study-answer[data-choice][data-confidence]` (studyapp/static/studyapp/trial-kit.js);
and axe-core, injected into a page to check what assistive technology reads; Debian's chromium and the
flags it is launched with (the `browser` fixture in conftest.py), the reference 2AFC's own trial screen
(`answer_current_trial`), the references a trial shows, and the demo admin's password."""
import http.client
import json
import re
import socket
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from html.parser import HTMLParser
from http.cookies import SimpleCookie
from pathlib import Path
from urllib.parse import urlencode, urlsplit


@dataclass
class Reply:
    status: int
    headers: http.client.HTTPMessage
    body: bytes
    seconds: float

    @property
    def json(self):
        return json.loads(self.body)


class _Page(HTMLParser):
    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.action, self.inputs, self.config, self._in_form, self._in_config = None, {}, None, False, False

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "form" and (a.get("method") or "").lower() == "post":
            self._in_form, self.action = True, a.get("action")
        elif tag == "input" and self._in_form and a.get("name"):
            self.inputs[a["name"]] = a.get("value") or ""
        elif tag == "script" and a.get("id") == "study-config":
            self._in_config = True

    def handle_endtag(self, tag):
        self._in_form = self._in_form and tag != "form"
        self._in_config = self._in_config and tag != "script"

    def handle_data(self, data):
        if self._in_config:
            self.config = json.loads(data)


class Participant:
    def __init__(self, base_url, timeout=20.0):
        parts = urlsplit(base_url)
        self.host, self.port, self.origin = parts.hostname, parts.port, f"{parts.scheme}://{parts.netloc}"
        self.timeout = timeout
        self.cookies = {}
        self.token = self.csrf_token = None
        self.replies = []

    def request(self, method, path, body=None, headers=None):
        headers = {"Accept-Encoding": "identity", **(headers or {})}
        if self.cookies:
            headers["Cookie"] = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
        started = time.monotonic()
        try:
            conn.request(method, path, body=body, headers=headers)
            response = conn.getresponse()
            data = response.read()
        finally:
            conn.close()
        for header in response.headers.get_all("Set-Cookie") or ():
            jar = SimpleCookie()
            jar.load(header)
            self.cookies.update({name: morsel.value for name, morsel in jar.items()})
        reply = Reply(response.status, response.headers, data, time.monotonic() - started)
        self.replies.append((method, path, reply))
        return reply

    def arrive(self, slug, prolific_pid):
        """Landing page, the start button, the experiment page: the participant's token afterwards."""
        landing = f"/s/{slug}/?" + urlencode({"PROLIFIC_PID": prolific_pid, "STUDY_ID": slug, "SESSION_ID": "s1"})
        page = _Page()
        reply = self.request("GET", landing)
        assert reply.status == 200, reply
        page.feed(reply.body.decode())
        start = self.request("POST", page.action, urlencode(page.inputs).encode(), {
            "Content-Type": "application/x-www-form-urlencoded", "Origin": self.origin,
            "Referer": self.origin + landing})
        assert start.status == 302, start
        experiment = urlsplit(start.headers["Location"]).path
        reply = self.request("GET", experiment)
        assert reply.status == 200, reply
        page = _Page()
        page.feed(reply.body.decode())
        self.token, self.csrf_token = page.config["token"], page.config["csrf_token"]
        self.experiment_path = experiment
        return self.token

    def api_request(self, method, endpoint, payload=None):
        """(path, body, headers) of an API call, for a caller that sends it by other means."""
        headers = {"Accept": "application/json"}
        body = None
        if payload is not None:
            body = json.dumps(payload).encode()
            headers.update({"Content-Type": "application/json", "Origin": self.origin, "X-CSRFToken": self.csrf_token})
        if self.cookies:
            headers["Cookie"] = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        return f"/api/p/{self.token}/{endpoint}", body, headers

    def api(self, method, endpoint, payload=None):
        path, body, headers = self.api_request(method, endpoint, payload)
        return self.request(method, path, body, headers)

    def through_instructions(self):
        for endpoint, payload in (("consent", {"consent": True}), ("instructions", {"reading_ms": 20_000})):
            reply = self.api("POST", endpoint, payload)
            assert reply.status == 200, reply

    def next_trial(self):
        reply = self.api("GET", "trials?limit=1")
        assert reply.status == 200, reply
        trials = reply.json["trials"]
        return trials[0] if trials else None


def answer(trial, choice="a", key=None):
    """The body the front end POSTs to /responses for one trial."""
    return {"trial": trial["id"], "idempotency_key": key or str(uuid.uuid4()), "choice": choice, "confidence": 3,
            "rt_ms": 1234.5, "client_time": datetime.now(UTC).isoformat()}


def open_request(port, method, path, body, headers, send=None):
    """Send a request over a raw socket, only the first `send` bytes of its body (all by default),
    and return the socket without reading the reply."""
    head = [f"{method} {path} HTTP/1.1", f"Host: 127.0.0.1:{port}", f"Content-Length: {len(body)}",
            "Connection: close", *(f"{k}: {v}" for k, v in headers.items())]
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    sock.sendall(("\r\n".join(head) + "\r\n\r\n").encode() + body[:len(body) if send is None else send])
    return sock


def read_reply(sock):
    """Everything the server sent before it closed the connection (b"" if nothing)."""
    chunks = []
    try:
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    except ConnectionResetError:
        pass
    finally:
        sock.close()
    return b"".join(chunks)


# ------------------------------------------------------------------ browser pages (Playwright)
CHROMIUM = "/usr/bin/chromium"
# A person's browser does not say it is automated: without the last flag Playwright's Chromium reports
# navigator.webdriver, which the study flags (test_integrity_browser.py checks both).
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-blink-features=AutomationControlled"]
READY_TRIAL = ".study-trial[data-state='ready']"
# what follows a screen during the trials: a trial, a notice between blocks, or the questionnaire
NEXT_SCREEN = f"{READY_TRIAL}, #study-notice, #study-questionnaire"
# frontend/build.mjs copies it here from the npm package; never served to participants
AXE = Path(__file__).resolve().parent / "vendor" / "axe.min.js"
# label-content-name-mismatch (WCAG 2.5.3) is one of axe's experimental rules, off unless asked for
AXE_OPTIONS = {"rules": {"label-content-name-mismatch": {"enabled": True}}}


def answer_key(stack, trial_id):
    return stack.sql("SELECT correct_query FROM studyapp_trial WHERE id = %s", (trial_id,))[0][0]


def answer_shown_trial(page, stack, choose_correctly=True, timeout=20_000):
    """Answers the trial on screen, of any paradigm, with confidence 3 (or the one button when confidence
    is off); returns its id."""
    trial = page.locator(READY_TRIAL)
    trial.wait_for(timeout=timeout)
    trial_id = int(trial.get_attribute("data-trial-id"))
    correct = answer_key(stack, trial_id)
    choice = correct if choose_correctly else {"a": "b", "b": "a"}[correct]
    confident = page.locator(f".study-answer[data-choice='{choice}'][data-confidence='3']")
    (confident if confident.count() else page.locator(f".study-answer[data-choice='{choice}']").first).click()
    return trial_id


def play_trials(page, stack, on_trial=None, timeout=20_000):
    """Answers every trial correctly, passing notices, until the questionnaire shows; calls
    `on_trial(page, trial_id)` before answering each. Returns the ids answered, in order."""
    answered = []
    while True:
        page.locator(NEXT_SCREEN).first.wait_for(timeout=timeout)
        if page.locator("#study-questionnaire").count():
            return answered
        if page.locator("#study-notice").count():
            page.click("#notice-continue")
            page.locator("#study-notice").wait_for(state="detached", timeout=timeout)
            continue
        if on_trial is not None:
            on_trial(page, int(page.locator(READY_TRIAL).get_attribute("data-trial-id")))
        answered.append(answer_shown_trial(page, stack, timeout=timeout))
        # the next screen replaces this trial: wait until it has gone, so it is not answered twice
        page.locator(f".study-trial[data-trial-id='{answered[-1]}']").wait_for(state="detached", timeout=timeout)


def axe_violations(page, impacts=("serious", "critical")):
    """axe-core's violations on the page as it is, of the given impacts: [{id, impact, help, nodes}].
    The page's context must bypass the Content-Security-Policy (Playwright's `bypass_csp`): the
    participant pages allow no inline script, and axe arrives as one."""
    if not page.evaluate("typeof window.axe !== 'undefined'"):
        page.add_script_tag(path=str(AXE))
    found = page.evaluate("""options => axe.run(document, options).then(r => r.violations.map(v => ({
        id: v.id, impact: v.impact, help: v.help,
        nodes: v.nodes.map(n => n.target.join(' ') + ': ' + n.failureSummary)})))""", AXE_OPTIONS)
    return [v for v in found if v["impact"] in impacts]


def answer_current_trial(page, stack, choose_correctly=True):
    trial = page.locator("#r2afc[data-state='ready']")
    trial.wait_for(timeout=20_000)
    trial_id = int(trial.get_attribute("data-trial-id"))
    correct = answer_key(stack, trial_id)
    choice = correct if choose_correctly else {"a": "b", "b": "a"}[correct]
    page.locator(f".r2afc-btn[data-choice='{choice}'][data-confidence='3']").click()
    return trial_id


def admin_password(stack):
    return re.search(r"user: admin\s+password: (\S+)", stack.demo_output).group(1)


def shown_references(page):
    return [src.rsplit("/", 1)[-1] for src in
            page.locator("#r2afc-refs-max img").evaluate_all("imgs => imgs.map(i => i.getAttribute('src'))")]
