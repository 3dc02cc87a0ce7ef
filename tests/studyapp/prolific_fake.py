"""A local fake of the Prolific API endpoints that `prolific_review` uses, built from Prolific's published
reference (docs.prolific.com/api-reference): list a study's submissions (paginated, `_links.next.href`),
transition a submission (APPROVE, or REJECT with a message of at least 100 characters and a
rejection_category), request a return (`request_return_reasons`), set up a bulk bonus
(`study_id`, `csv_bonuses` as "<id>,<amount>" lines; answers its id, amount, fees, total_amount, vat) and pay
one (not idempotent: every request pays again, as Prolific warns). Authorization is `Token <token>`.

It keeps a ledger (`paid`: submission or participant id -> total paid) and every request it received, and
faults can be queued per route: an HTTP status answered before the work (`before`: 429 with Retry-After,
401, 500) or after it (`after`: the work done, then a 500, as a server that fails while answering)."""

import json
import re
import threading
import uuid
from collections import defaultdict, deque
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

TOKEN = "fake-token"
FORBIDDEN_TOKEN = "other-workspace-token"
REJECTION_CATEGORIES = {
    "TOO_QUICKLY",
    "TOO_SLOWLY",
    "FAILED_INSTRUCTIONS",
    "INCOMP_LONGITUDINAL",
    "FAILED_CHECK",
    "LOW_EFFORT",
    "MALINGERING",
    "NO_CODE",
    "BAD_CODE",
    "NO_DATA",
    "UNSUPP_DEVICE",
    "OTHER",
}
ROUTES = {
    "list": re.compile(r"^/api/v1/studies/(?P<study>[^/]+)/submissions/$"),
    "transition": re.compile(r"^/api/v1/submissions/(?P<submission>[^/]+)/transition/$"),
    "return": re.compile(r"^/api/v1/submissions/(?P<submission>[^/]+)/request-return/$"),
    "setup": re.compile(r"^/api/v1/submissions/bonus-payments/$"),
    "pay": re.compile(r"^/api/v1/bulk-bonus-payments/(?P<bulk>[^/]+)/pay/$"),
}


class FakeProlific:
    def __init__(self, submissions, page_size=2):
        # submissions: dicts with id, participant_id, status, study_id (the API's SubmissionShort)
        self.submissions = {s["id"]: dict(s) for s in submissions}
        self.page_size = page_size
        self.requests = []  # (method, path, body)
        self.setups = {}  # bulk id -> {"study_id", "bonuses": {id: Decimal}}
        self.paid = defaultdict(Decimal)
        self.faults = defaultdict(deque)  # route -> ("before" | "after", status, headers)
        self.lock = threading.Lock()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def base_url(self):
        return f"http://127.0.0.1:{self.server.server_address[1]}/api/v1/"

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=10)

    def fail(self, route, status, when="before", headers=None):
        self.faults[route].append((when, status, headers or {}))

    def sent(self, method=None):
        """The requests received, as (method, path), without the listing's GETs unless asked."""
        return [(m, p) for m, p, _ in self.requests if (method is None and m != "GET") or m == method]

    def _handler(self):
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _answer(self, status, body, headers=None):
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(data)

            def _route(self):
                path = self.path.split("?")[0]
                for name, pattern in ROUTES.items():
                    match = pattern.match(path)
                    if match:
                        return name, match.groupdict()
                return None, {}

            def _handle(self, method):
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                body = json.loads(raw) if raw else None
                with fake.lock:
                    fake.requests.append((method, self.path, body))
                    auth = self.headers.get("Authorization", "")
                    if auth == f"Token {FORBIDDEN_TOKEN}":
                        return self._answer(
                            403, {"error": {"detail": "You do not have permission to perform this action."}}
                        )
                    if auth != f"Token {TOKEN}":
                        return self._answer(401, {"error": {"detail": "Invalid token."}})
                    route, args = self._route()
                    if route is None:
                        return self._answer(404, {"error": {"detail": "Not found."}})
                    fault = fake.faults[route].popleft() if fake.faults[route] else None
                    if fault and fault[0] == "before":
                        return self._answer(fault[1], {"error": {"detail": "injected"}}, fault[2])
                    status, answer = getattr(fake, f"_{route}")(method, body, self.path, **args)
                    if fault and fault[0] == "after" and status < 400:
                        return self._answer(fault[1], {"error": {"detail": "injected after the work"}}, fault[2])
                    return self._answer(status, answer)

            def do_GET(self):
                self._handle("GET")

            def do_POST(self):
                self._handle("POST")

        return Handler

    # -- endpoints (called under the lock) ------------------------------------------------------------
    def _list(self, method, body, path, study):
        rows = [s for s in self.submissions.values() if s["study_id"] == study]
        page = int(re.search(r"page=(\d+)", path).group(1)) if "page=" in path else 1
        chunk = rows[(page - 1) * self.page_size : page * self.page_size]
        more = page * self.page_size < len(rows)
        nxt = f"{self.base_url}studies/{study}/submissions/?page={page + 1}" if more else None
        return 200, {
            "results": chunk,
            "_links": {"self": {"href": path}, "next": {"href": nxt}},
            "meta": {"count": len(rows)},
        }

    def _transition(self, method, body, path, submission):
        s = self.submissions.get(submission)
        if s is None:
            return 404, {"error": {"detail": "Submission not found."}}
        action = (body or {}).get("action")
        if action == "APPROVE":
            s["status"] = "APPROVED"
        elif action == "REJECT":
            if len(body.get("message") or "") < 100:
                return 400, {"error": {"detail": "message: at least 100 characters"}}
            if body.get("rejection_category") not in REJECTION_CATEGORIES:
                return 400, {"error": {"detail": "rejection_category: not a valid choice"}}
            s["status"] = "REJECTED"
        else:
            return 400, {"error": {"detail": f"action: {action!r} is not a valid choice"}}
        return 200, {
            "id": submission,
            "status": s["status"],
            "study_id": s["study_id"],
            "participant": s["participant_id"],
        }

    def _return(self, method, body, path, submission):
        s = self.submissions.get(submission)
        if s is None:
            return 404, {"error": {"detail": "Submission not found."}}
        reasons = (body or {}).get("request_return_reasons")
        if not isinstance(reasons, list) or not reasons:
            return 400, {"error": {"detail": "request_return_reasons: required"}}
        s["return_requested"] = True
        return 200, {"id": submission, "status": s["status"], "participant": s["participant_id"]}

    def _setup(self, method, body, path):
        study, lines = (body or {}).get("study_id"), ((body or {}).get("csv_bonuses") or "").strip().splitlines()
        known = {i for s in self.submissions.values() if s["study_id"] == study for i in (s["id"], s["participant_id"])}
        bonuses = {}
        for line in lines:
            ident, _, amount = line.partition(",")
            if ident not in known:
                return 400, {"error": {"detail": f"{ident} has not taken part in study {study}"}}
            bonuses[ident] = Decimal(amount)
        bulk = uuid.uuid4().hex[:24]
        self.setups[bulk] = {"study_id": study, "bonuses": bonuses}
        amount = sum(bonuses.values())
        return 201, {
            "id": bulk,
            "study": study,
            "amount": float(amount),
            "fees": 0.0,
            "total_amount": float(amount),
            "vat": 0.0,
        }

    def _pay(self, method, body, path, bulk):
        setup = self.setups.get(bulk)
        if setup is None:
            return 404, {"error": {"detail": "Bulk bonus payment not found."}}
        # Not idempotent, as Prolific's reference warns: every request pays.
        for ident, amount in setup["bonuses"].items():
            self.paid[ident] += amount
        return 202, f"Bulk bonus payment with ID {bulk} is being processed asynchronously."
