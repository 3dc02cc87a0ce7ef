"""Acting on review decisions through Prolific's API (https://docs.prolific.com/api-reference): approve and
reject submissions, ask for returns, and pay one bulk bonus, each request recorded before it is sent and
its outcome after (models.ProlificAction), so that a rerun skips what is done.

Endpoints, as Prolific's reference gives them (all under https://api.prolific.com/api/v1/, header
`Authorization: Token <token>`):
- GET  studies/{id}/submissions/            the study's submissions, paginated (`_links.next.href`);
- POST submissions/{id}/transition/         {"action": "APPROVE"} or {"action": "REJECT", "message": …,
                                            "rejection_category": …}; idempotent on Prolific's side;
- POST submissions/{id}/request-return/     {"request_return_reasons": […]};
- POST submissions/bonus-payments/          {"study_id": …, "csv_bonuses": "<id>,<amount>\\n…"} sets up a bulk
                                            bonus and answers its "id"; it pays nothing;
- POST bulk-bonus-payments/{id}/pay/        pays that set-up. Not idempotent: a repeated request pays twice.

Paying at most once, whatever fails in between: the payment is recorded (pending) before its request
leaves, and the database holds one payment per set-up. A payment found pending on a rerun (a crash, a
timeout, a 5xx: the request may have reached Prolific) is never sent again but reported for a person to
check on Prolific; one Prolific refused (4xx) was not made and is sent again. A set-up whose answer never
arrived pays nobody: it is marked abandoned and a new one made for the bonuses not yet covered. A set-up
that was answered but not yet paid (a crash between the two) is paid on the rerun, itself, not a new one.

HTTP through the standard library's urllib (no client library needed for five JSON endpoints). A 429 is
retried after its Retry-After (it was not processed); 401 and 403 stop with a message about the token.
"""

import json
import os
import time
import urllib.error
import urllib.request
from collections import Counter
from dataclasses import dataclass, field
from urllib.parse import urljoin

from django.db import transaction
from django.utils import timezone

from .models import Participant, ProlificAction
from .prolific import (
    APPROVE,
    FAILED_CHECK,
    FINAL_STATUSES,
    REJECT,
    RETURN,
    RETURNABLE_STATUSES,
    submission_from_mapping,
)

DEFAULT_BASE_URL = "https://api.prolific.com/api/v1/"
TOKEN_VARIABLE = "PROLIFIC_API_TOKEN"
BASE_URL_VARIABLE = "PROLIFIC_API_URL"
MAX_RATE_LIMIT_RETRIES = 5
MAX_RETRY_AFTER_SECONDS = 300
DEFAULT_RETRY_AFTER_SECONDS = 5
TIMEOUT_SECONDS = 30
MAX_PAGES = 1000


class ProlificError(Exception):
    """A request to Prolific that did not succeed."""


class AuthenticationError(ProlificError):
    """401 or 403: the token is missing, wrong, revoked, or lacks the right to this study."""


class RefusedError(ProlificError):
    """Prolific answered 4xx: the request was not carried out."""

    def __init__(self, status, detail):
        super().__init__(f"Prolific refused the request ({status}): {detail}")
        self.status = status
        self.detail = detail


class OutcomeUnknown(ProlificError):
    """A 5xx, a timeout or a broken connection: the request may or may not have been carried out."""


class RateLimited(ProlificError):
    """Still 429 after the retries."""


def _detail(body):
    try:
        data = json.loads(body or b"null")
    except ValueError:
        return (body or b"").decode("utf-8", "replace")[:500]
    if isinstance(data, dict):
        error = data.get("error", data)
        if isinstance(error, dict):
            return str(error.get("detail") or error.get("title") or error)[:500]
        return str(error)[:500]
    return str(data)[:500]


def _retry_after(value):
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        return DEFAULT_RETRY_AFTER_SECONDS
    return min(max(seconds, 0.0), MAX_RETRY_AFTER_SECONDS)


class Client:
    """Prolific's API over urllib. `sleep` waits out a 429's Retry-After (a test passes its own)."""

    def __init__(self, token, base_url=None, sleep=time.sleep, timeout=TIMEOUT_SECONDS):
        if not token:
            raise AuthenticationError(f"no API token: set {TOKEN_VARIABLE} (Prolific: Settings → API tokens)")
        self.token = token
        self.base_url = (base_url or os.environ.get(BASE_URL_VARIABLE) or DEFAULT_BASE_URL).rstrip("/") + "/"
        self.sleep = sleep
        self.timeout = timeout

    def url(self, path):
        return path if path.startswith(("http://", "https://")) else urljoin(self.base_url, path.lstrip("/"))

    def request(self, method, path, body=None):
        url = self.url(path)
        data = None if body is None else json.dumps(body).encode()
        for attempt in range(MAX_RATE_LIMIT_RETRIES + 1):
            request = urllib.request.Request(
                url,
                data=data,
                method=method,
                headers={
                    "Authorization": f"Token {self.token}",
                    "Accept": "application/json",
                    **({"Content-Type": "application/json"} if data is not None else {}),
                },
            )
            try:
                with urllib.request.urlopen(request, timeout=self.timeout) as response:
                    payload = response.read()
                    return json.loads(payload) if payload else None
            except urllib.error.HTTPError as exc:
                status, detail = exc.code, _detail(exc.read())
                if status == 429 and attempt < MAX_RATE_LIMIT_RETRIES:
                    self.sleep(_retry_after(exc.headers.get("Retry-After")))
                    continue
                if status == 429:
                    raise RateLimited(
                        f"{method} {path}: still rate limited (429) after "
                        f"{MAX_RATE_LIMIT_RETRIES} retries; try again later"
                    ) from None
                if status in (401, 403):
                    raise AuthenticationError(
                        f"{method} {path}: Prolific answered {status} ({detail}). "
                        + (
                            "The token is missing, wrong or revoked: check " + TOKEN_VARIABLE
                            if status == 401
                            else "The token's account cannot act on this study: use a token of the study's workspace"
                        )
                    ) from None
                if status >= 500:
                    raise OutcomeUnknown(f"{method} {path}: Prolific answered {status} ({detail})") from None
                raise RefusedError(status, detail) from None
            except (urllib.error.URLError, TimeoutError, ConnectionError, OSError) as exc:
                raise OutcomeUnknown(f"{method} {path}: no answer from Prolific ({exc})") from None
        raise AssertionError("unreachable")

    def pages(self, path):
        """Every result of a paginated list, following `_links.next.href` (or `next`)."""
        url = path
        for _ in range(MAX_PAGES):
            page = self.request("GET", url)
            yield from page.get("results", [])
            links = page.get("_links") or {}
            nxt = (links.get("next") or {}).get("href") if isinstance(links.get("next"), dict) else links.get("next")
            nxt = nxt or page.get("next")
            if not nxt:
                return
            url = nxt
        raise ProlificError(f"{path}: more than {MAX_PAGES} pages")

    def submissions(self, prolific_study_id):
        return [submission_from_mapping(r) for r in self.pages(f"studies/{prolific_study_id}/submissions/")]


def prolific_study_id(study):
    """The study's id on Prolific: its setting, else the STUDY_ID most of its participants arrived with."""
    if study.prolific_study_id:
        return study.prolific_study_id
    ids = Counter(
        info.get("STUDY_ID")
        for info in Participant.objects.filter(study_id__in=study.version_ids(), recruitment="prolific").values_list(
            "recruitment_info", flat=True
        )
        if isinstance(info, dict) and info.get("STUDY_ID")
    )
    return ids.most_common(1)[0][0] if ids else None


@dataclass
class Request:
    """One request to send: what ProlificAction.request records."""

    kind: str
    method: str
    path: str
    body: dict
    submission_id: str = ""

    def as_dict(self):
        return {"method": self.method, "path": self.path, "body": self.body}

    def __str__(self):
        return f"{self.method} {self.path} {json.dumps(self.body, sort_keys=True)}"


def transition_requests(decisions):
    """The approvals, rejections and return requests the decisions call for, skipping submissions whose
    Prolific status is already final (or, for a return, that cannot be asked to return)."""
    out = []
    for d in decisions:
        if not d.submission_id:
            continue
        path = f"submissions/{d.submission_id}/"
        if d.decision == APPROVE and d.prolific_status not in FINAL_STATUSES:
            out.append(Request(APPROVE, "POST", path + "transition/", {"action": "APPROVE"}, d.submission_id))
        elif d.decision == REJECT and d.prolific_status not in FINAL_STATUSES:
            out.append(
                Request(
                    REJECT,
                    "POST",
                    path + "transition/",
                    {"action": "REJECT", "message": d.rejection_message, "rejection_category": FAILED_CHECK},
                    d.submission_id,
                )
            )
        elif d.decision == RETURN and (d.prolific_status in RETURNABLE_STATUSES or not d.prolific_status):
            out.append(
                Request(
                    RETURN,
                    "POST",
                    path + "request-return/",
                    {"request_return_reasons": list(d.return_reasons)},
                    d.submission_id,
                )
            )
    return out


def bonus_amounts(decisions):
    """submission id -> amount (text, two decimals) of the approved submissions' bonuses."""
    return {
        d.submission_id: f"{d.bonus:.2f}"
        for d in decisions
        if d.decision == APPROVE and d.bonus > 0 and d.submission_id
    }


def setup_request(prolific_id, amounts):
    csv_bonuses = "\n".join(f"{sid},{amount}" for sid, amount in sorted(amounts.items()))
    return Request(
        ProlificAction.Kind.BONUS_SETUP,
        "POST",
        "submissions/bonus-payments/",
        {"study_id": prolific_id, "csv_bonuses": csv_bonuses},
    )


def pay_request(bulk_id):
    return Request(ProlificAction.Kind.BONUS_PAY, "POST", f"bulk-bonus-payments/{bulk_id}/pay/", {})


def _covered(study):
    """Submission ids whose bonus is in a set-up that was answered (paid, being paid or to be paid)."""
    covered = set()
    for setup in ProlificAction.objects.filter(
        study=study, kind=ProlificAction.Kind.BONUS_SETUP, state=ProlificAction.State.DONE
    ):
        covered.update((setup.request.get("bonuses") or {}).keys())
    return covered


def confirm_payment(study, bulk_id, paid):
    """Record what a person found on Prolific for a payment whose outcome was unknown: made (done) or not
    made (failed, so that the next run sends it again)."""
    updated = ProlificAction.objects.filter(
        study=study,
        kind=ProlificAction.Kind.BONUS_PAY,
        bulk_id=bulk_id,
        state=ProlificAction.State.PENDING,
    ).update(
        state=ProlificAction.State.DONE if paid else ProlificAction.State.FAILED,
        finished=timezone.now(),
        error="" if paid else "not made: checked on Prolific",
    )
    if not updated:
        raise ProlificError(f"no payment of bulk bonus {bulk_id} with an unknown outcome in study {study.slug}")


@dataclass
class Report:
    sent: list = field(default_factory=list)  # Request, in order
    skipped: list = field(default_factory=list)  # (Request or text, why)
    failed: list = field(default_factory=list)  # (Request, message)
    unknown: list = field(default_factory=list)  # (Request, message): needs a person


def _no_checkpoint(name):
    return None


class Reviewer:
    """Carries out decisions through `client`, recording each action. `checkpoint(name)` is called between
    the steps of a bonus (after "setup_sent", "setup_recorded", "pay_recorded", "pay_sent"); a test makes it
    raise to play a crash there."""

    def __init__(self, study, client, out=print, checkpoint=_no_checkpoint):
        self.study = study
        self.client = client
        self.out = out
        self.checkpoint = checkpoint
        self.report = Report()

    # -- transitions ------------------------------------------------------------------------------------
    def transitions(self, decisions, send):
        done = set(
            ProlificAction.objects.filter(
                study=self.study,
                kind__in=[APPROVE, REJECT, RETURN],
                state=ProlificAction.State.DONE,
            ).values_list("kind", "submission_id")
        )
        for request in transition_requests(decisions):
            if (request.kind, request.submission_id) in done:
                self.report.skipped.append((request, "done before"))
                continue
            if not send:
                self.out(f"would send: {request}")
                continue
            # A pending or refused earlier try is the same action: its row is reused (transitions are
            # idempotent on Prolific's side, so resending a pending one is safe).
            action = (
                ProlificAction.objects.filter(study=self.study, kind=request.kind, submission_id=request.submission_id)
                .exclude(state=ProlificAction.State.DONE)
                .order_by("-pk")
                .first()
            )
            action = self._record(request, action)
            self._send(action, request)

    # -- bonuses ----------------------------------------------------------------------------------------
    def bonuses(self, decisions, send):
        actions = ProlificAction.objects.filter(study=self.study)
        for setup in actions.filter(kind=ProlificAction.Kind.BONUS_SETUP, state=ProlificAction.State.DONE):
            payment = setup.payments.first()
            if payment is None or payment.state == ProlificAction.State.FAILED:
                # Set up, never paid (a crash between the two) or refused: pay this set-up itself.
                self._pay(setup, payment, send)
            elif payment.state == ProlificAction.State.PENDING:
                message = (
                    f"bulk bonus {setup.bulk_id}: its payment was sent at {payment.created:%Y-%m-%d %H:%M} "
                    f"UTC and no answer was recorded ({payment.error or 'interrupted'}). It is not sent "
                    "again, since Prolific would pay twice: check the study's bonuses on Prolific."
                )
                self.report.unknown.append((pay_request(setup.bulk_id), message))
                self.out(f"NOT resent: {message}")
        pending = actions.filter(kind=ProlificAction.Kind.BONUS_SETUP, state=ProlificAction.State.PENDING)
        if send:
            # A set-up whose answer never came pays nobody unless paid: replaced by a new one below.
            pending.update(state=ProlificAction.State.ABANDONED, finished=timezone.now())
        covered = _covered(self.study)
        amounts = {sid: a for sid, a in bonus_amounts(decisions).items() if sid not in covered}
        if not amounts:
            return
        prolific_id = prolific_study_id(self.study)
        if not prolific_id and send:
            raise ProlificError("the study's Prolific id is unknown: set it on the study (prolific_study_id)")
        request = setup_request(prolific_id or "<the study's Prolific id: set prolific_study_id>", amounts)
        if not send:
            self.out(f"would send: {request}")
            self.out("would send: POST bulk-bonus-payments/<id from the set-up>/pay/ {}")
            return
        setup = self._record(request, None, extra={"bonuses": amounts})
        answer = self._send(setup, request, checkpoint="setup_sent")
        if answer is None:
            return
        bulk_id = str(answer.get("id") or "")
        if not bulk_id:
            setup.state, setup.error = ProlificAction.State.FAILED, "the set-up's answer carries no id"
            setup.save(update_fields=["state", "error"])
            self.report.failed.append((request, setup.error))
            return
        setup.bulk_id = bulk_id
        setup.save(update_fields=["bulk_id"])
        self.checkpoint("setup_recorded")
        self._pay(setup, None, send)

    def _pay(self, setup, payment, send):
        request = pay_request(setup.bulk_id)
        if not send:
            self.out(f"would send: {request}")
            return
        with transaction.atomic():
            if payment is None:
                payment = ProlificAction.objects.create(
                    study=self.study, kind=request.kind, setup=setup, bulk_id=setup.bulk_id, request=request.as_dict()
                )
            else:
                payment.state, payment.error = ProlificAction.State.PENDING, ""
                payment.save(update_fields=["state", "error"])
        self.checkpoint("pay_recorded")
        self._send(payment, request, checkpoint="pay_sent")

    # -- recording --------------------------------------------------------------------------------------
    def _record(self, request, action, extra=None):
        body = {**request.as_dict(), **(extra or {})}
        if action is None:
            return ProlificAction.objects.create(
                study=self.study, kind=request.kind, submission_id=request.submission_id, request=body
            )
        action.request, action.state, action.error = body, ProlificAction.State.PENDING, ""
        action.save(update_fields=["request", "state", "error"])
        return action

    def _send(self, action, request, checkpoint=None):
        """Send `request` for the recorded `action`; its answer, or None when it failed."""
        try:
            answer = self.client.request(request.method, request.path, request.body)
        except RefusedError as exc:
            action.state, action.error, action.finished = ProlificAction.State.FAILED, str(exc), timezone.now()
            action.save(update_fields=["state", "error", "finished"])
            self.report.failed.append((request, str(exc)))
            self.out(f"refused: {request}: {exc}")
            return None
        except OutcomeUnknown as exc:
            action.error = str(exc)
            action.save(update_fields=["error"])
            self.report.unknown.append((request, str(exc)))
            self.out(f"outcome unknown: {request}: {exc}")
            return None
        if checkpoint:
            self.checkpoint(checkpoint)
        action.state, action.finished = ProlificAction.State.DONE, timezone.now()
        action.response = answer if isinstance(answer, (dict, list)) else {"detail": answer}
        action.save(update_fields=["state", "finished", "response"])
        self.report.sent.append(request)
        self.out(f"sent: {request}")
        return answer if isinstance(answer, dict) else {}
