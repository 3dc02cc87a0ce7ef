"""The HTTP side of a simulated participant: what a browser does with cookies, forms and the JSON API."""
from __future__ import annotations

import contextlib
import http.client
import json
import random
import time
from html.parser import HTMLParser
from http.cookies import SimpleCookie
from urllib.parse import urlencode, urlsplit

from .records import Request

USER_AGENT = "studyapp-simulated-participant/1"


class PageParser(HTMLParser):
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
                with contextlib.suppress(ValueError):
                    pause = max(pause, float(resp_headers.get("Retry-After", 0)))
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


def page_message(html):
    start = html.find("<h1>")
    end = html.find("</p>", start)
    text = html[start:end] if start >= 0 else html[:200]
    return " ".join(text.replace("<h1>", "").replace("</h1>", ":").replace("<p>", " ").split())
