"""A participant's browser, reduced to what the fault tests need: the landing page's start form, the
experiment page's config, and the JSON API (docs/contracts.md §3), each request on a fresh connection
and answered with its status, headers, body and duration, so a test sees a 503 as a 503 rather than
through the front end's retries. Also a raw socket for requests that stop half-way."""
import http.client
import json
import socket
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from html.parser import HTMLParser
from http.cookies import SimpleCookie
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
            "rt_ms": 1234.5, "client_time": datetime.now(timezone.utc).isoformat()}


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
