"""The participant JSON API (docs/contracts.md, section 3). Views parse and respond; the decisions
live in `participation`."""
import json
import math
from datetime import UTC, datetime

from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from django.http import Http404, JsonResponse
from django.shortcuts import get_object_or_404
from django.views.decorators.http import require_GET, require_POST

from . import openapi, participation, screening
from .lookup import participant_by_token
from .models import Participant, Trial
from .recruitment import completion_url
from .texts import instructions_for, render_markdown

MAX_TRIALS_PER_REQUEST = 50
MAX_BODY_BYTES = 16_384
MAX_INTERACTION_COUNT = 10_000
QUESTIONNAIRE_MAX_KEYS = 20
QUESTIONNAIRE_MAX_KEY_LENGTH = 64
QUESTIONNAIRE_MAX_TEXT_LENGTH = 2000


def error(code, detail, status):
    return JsonResponse({"error": code, "detail": detail}, status=status)


class BadRequest(Exception):
    code, status = "bad_request", 400

    def __init__(self, detail):
        super().__init__(detail)
        self.detail = detail


class UnsupportedMediaType(BadRequest):
    code, status = "unsupported_media_type", 415


def _finite(text):
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"{text} is not a finite number")
    return value


def _no_constant(name):
    raise ValueError(f"{name} is not JSON")


def _storable(data):
    """Whether every string in `data` can reach PostgreSQL, which stores neither NUL characters nor lone
    surrogates (JSON spells them \\u0000 and \\ud800). Iterative: the nesting is as deep as the body says."""
    stack = [data]
    while stack:
        value = stack.pop()
        if isinstance(value, str):
            if "\x00" in value:
                return False
            try:
                value.encode("utf-8")
            except UnicodeEncodeError:
                return False
        elif isinstance(value, dict):
            stack.extend(value)
            stack.extend(value.values())
        elif isinstance(value, list):
            stack.extend(value)
    return True


def _body(request):
    # Anything but JSON is refused before the body is touched: a form body has already been read by the
    # CSRF check (request.POST), after which request.body raises.
    if request.content_type != "application/json":
        raise UnsupportedMediaType("The request body must be JSON, sent as Content-Type: application/json.")
    try:
        declared = int(request.META.get("CONTENT_LENGTH") or 0)
    except ValueError:
        declared = 0
    if declared > MAX_BODY_BYTES:
        raise BadRequest("The request body is too large.")
    try:
        body = request.body
    except RequestDataTooBig:
        raise BadRequest("The request body is too large.") from None
    if len(body) > MAX_BODY_BYTES:
        raise BadRequest("The request body is too large.")
    try:
        data = json.loads(body or b"{}", parse_float=_finite, parse_constant=_no_constant)
    except (ValueError, RecursionError):
        # ValueError covers malformed JSON and bytes, NaN and overflowing numbers, and integers longer than
        # Python converts; RecursionError, nesting deeper than the parser's stack.
        raise BadRequest("The request body is not valid JSON.") from None
    if not isinstance(data, dict):
        raise BadRequest("The request body must be a JSON object.")
    if not _storable(data):
        raise BadRequest("The request body contains characters that cannot be stored (NUL or lone surrogates).")
    return data


def _participant_view(method):
    """Resolve the token, run the view, and turn domain and parse errors into JSON 4xx answers."""

    def decorate(view):
        @method
        def wrapper(request, token, *args, **kwargs):
            participant = participant_by_token(token)
            if participant is None:
                raise Http404("No participant matches the given query.")
            try:
                return view(request, participant, *args, **kwargs)
            except BadRequest as exc:
                return error(exc.code, exc.detail, exc.status)
            except participation.ParticipationError as exc:
                return error(exc.code, exc.detail, exc.status)

        wrapper.__name__ = view.__name__
        return wrapper

    return decorate


def media_url(path):
    return f"{settings.MEDIA_URL}{path}"


def session_payload(participant):
    study = participant.study
    completion = None
    if participant.status == Participant.Status.COMPLETED:
        completion = {
            "url": completion_url(study.completion_url, participant.recruitment_info, study.completion_code),
            "code": study.completion_code,
        }
    paradigm = participant.condition.paradigm
    return {
        "phase": participation.phase(participant),
        "study": {
            "title": study.title,
            # the participant's task: the front end's texts around the trials follow it
            "paradigm": paradigm,
            "consent_html": render_markdown(study.consent_text),
            "instructions_html": render_markdown(instructions_for(study.instructions_text, paradigm)),
            "debrief_html": render_markdown(study.debrief_text),
            "response_lock_ms": study.response_lock_ms,
            "confidence": study.confidence,
            "practice_feedback": study.practice_feedback,
            "fullscreen": study.fullscreen,
            "min_width": study.min_width,
            "min_height": study.min_height,
        },
        "progress": {"answered": participant.answered, "total": participant.trial_count},
        "completion": completion,
        "screening": screening.client_settings(study, participant),
        "calibration": ({"px_per_cm": participant.px_per_cm, "viewing_distance_cm": participant.viewing_distance_cm}
                        if participant.viewing_distance_cm is not None else None),
        "screen_out": screening.screen_out_target(participant),
    }


def trial_payload(trial, paradigm):
    # Deliberately no kind, unit or answer key: catch trials must look like any main trial, and the
    # correct query stays on the server.
    payload = {"id": trial.pk, "position": trial.position, "block": trial.block, "attempt": trial.attempt,
               "paradigm": paradigm}
    if paradigm == "ordered_strip":
        payload["strip_a"] = [media_url(p) for p in trial.strip_a]
        payload["strip_b"] = [media_url(p) for p in trial.strip_b]
    else:
        payload["references_min"] = [media_url(p) for p in trial.references_min]
        payload["references_max"] = [media_url(p) for p in trial.references_max]
        payload["query_a"] = media_url(trial.query_a)
        payload["query_b"] = media_url(trial.query_b)
    return payload


def _block_payloads(participant, upcoming):
    """A within or mixed design's trials: each with its block's place and its condition's paradigm; the
    trial that opens a block carries the block's instruction screen (the condition's
    `block_instructions`), shown before it."""
    if not upcoming:
        return []
    previous = (Trial.objects.filter(participant=participant, position=upcoming[0].position - 1)
                .values_list("block_index", flat=True).first())
    out = []
    for trial in upcoming:
        payload = trial_payload(trial, trial.condition.paradigm)
        payload["block_index"] = trial.block_index
        if trial.block == Trial.Block.MAIN and trial.block_index != previous and trial.condition.block_instructions:
            payload["block_instructions_html"] = render_markdown(trial.condition.block_instructions)
        previous = trial.block_index
        out.append(payload)
    return out


@_participant_view(require_GET)
def session(request, participant):
    return JsonResponse(session_payload(participant))


@_participant_view(require_POST)
def consent(request, participant):
    data = _body(request)
    if not isinstance(data.get("consent"), bool):
        raise BadRequest("'consent' must be true or false.")
    participation.give_consent(participant, data["consent"])
    return JsonResponse(session_payload(participant))


@_participant_view(require_POST)
def instructions(request, participant):
    data = _body(request)
    reading_ms = data.get("reading_ms")
    if not isinstance(reading_ms, (int, float)) or isinstance(reading_ms, bool) or reading_ms < 0:
        raise BadRequest("'reading_ms' must be a non-negative number of milliseconds.")
    participation.record_instructions(participant, float(reading_ms))
    return JsonResponse(session_payload(participant))


@_participant_view(require_GET)
def trial_list(request, participant):
    try:
        limit = int(request.GET.get("limit", 10))
    except ValueError:
        raise BadRequest("'limit' must be an integer.") from None
    if not 1 <= limit <= MAX_TRIALS_PER_REQUEST:
        raise BadRequest(f"'limit' must be between 1 and {MAX_TRIALS_PER_REQUEST}.")
    current = participation.phase(participant)
    upcoming = participation.upcoming_trials(participant, limit) if current in ("practice", "main") else []
    if participant.order is None:
        trials = [trial_payload(t, participant.condition.paradigm) for t in upcoming]
    else:
        trials = _block_payloads(participant, upcoming)
    return JsonResponse({
        "phase": current,
        "trials": trials,
        "remaining": participant.trial_count - participant.answered,
    })


def _parse_response(data):
    trial = data.get("trial")
    if not isinstance(trial, int) or isinstance(trial, bool):
        raise BadRequest("'trial' must be the integer id of a trial.")
    key = data.get("idempotency_key")
    if not isinstance(key, str) or not 8 <= len(key) <= 64:
        raise BadRequest("'idempotency_key' must be a string of 8 to 64 characters.")
    choice = data.get("choice")
    if choice not in ("a", "b"):
        raise BadRequest("'choice' must be 'a' or 'b'.")
    confidence = data.get("confidence")
    if confidence is not None and (not isinstance(confidence, int) or isinstance(confidence, bool)
                                   or not 1 <= confidence <= 3):
        raise BadRequest("'confidence' must be 1, 2, 3 or null.")
    rt_ms = data.get("rt_ms")
    if not isinstance(rt_ms, (int, float)) or isinstance(rt_ms, bool) or not 0 <= rt_ms < 86_400_000:
        raise BadRequest("'rt_ms' must be a non-negative number of milliseconds.")
    client_time = data.get("client_time")
    if client_time is not None:
        try:
            client_time = datetime.fromisoformat(str(client_time).replace("Z", "+00:00"))
            # A time without an offset is taken as UTC; one outside the years UTC can hold is refused, as
            # the database would store it but could not read it back (the export would fail).
            if client_time.tzinfo is None:
                client_time = client_time.replace(tzinfo=UTC)
            client_time = client_time.astimezone(UTC)
        except (ValueError, OverflowError):
            raise BadRequest("'client_time' must be an ISO 8601 time.") from None
    interaction = {}
    for name in ("focus_losses", "fullscreen_exits"):
        count = data.get(name)
        if count is not None and (not isinstance(count, int) or isinstance(count, bool)
                                  or not 0 <= count <= MAX_INTERACTION_COUNT):
            raise BadRequest(f"'{name}' must be a count from 0 to {MAX_INTERACTION_COUNT}, or null.")
        interaction[name] = count
    webdriver = data.get("webdriver")
    if webdriver is not None and not isinstance(webdriver, bool):
        raise BadRequest("'webdriver' must be true, false or null.")
    return trial, {"idempotency_key": key, "choice": choice, "confidence": confidence,
                   "rt_ms": float(rt_ms), "client_time": client_time, **interaction, "webdriver": webdriver}


@require_POST
def respond(request, token):
    # The hot path: record_response finds the participant in the statement that stores the answer, so
    # this view does not load it first as the others do; an unknown token is still 404 before all else.
    try:
        trial_id, fields = _parse_response(_body(request))
    except BadRequest as exc:
        get_object_or_404(Participant.objects.only("pk"), token=token)
        return error(exc.code, exc.detail, exc.status)
    try:
        answer = participation.record_response(token, trial_id, **fields)
    except participation.UnknownParticipant:
        raise Http404("No participant matches the given query.") from None
    except participation.ParticipationError as exc:
        return error(exc.code, exc.detail, exc.status)
    participant, trial = answer.participant, answer.trial
    payload = {
        "stored": True,
        "phase": participation.phase(participant),
        "remaining": participant.trial_count - participant.answered,
        "practice_repeat": answer.created and trial.block == "practice"
        and participant.practice_attempts > (trial.attempt or 1),
    }
    if trial.block == "practice" and participant.study.practice_feedback:
        payload["correct"] = answer.correct
    return JsonResponse(payload, status=201 if answer.created else 200)


def _questionnaire_answers(answers):
    """A flat mapping of short names to short strings, numbers, booleans or null: what the questionnaire's
    form sends. Nothing nested is stored, so no stored answer is too deep for a reader of the row."""
    if not isinstance(answers, dict):
        raise BadRequest("'answers' must be an object.")
    if len(answers) > QUESTIONNAIRE_MAX_KEYS:
        raise BadRequest(f"'answers' may hold at most {QUESTIONNAIRE_MAX_KEYS} questions.")
    for key, value in answers.items():
        if not 1 <= len(key) <= QUESTIONNAIRE_MAX_KEY_LENGTH:
            raise BadRequest(f"A question's name must have 1 to {QUESTIONNAIRE_MAX_KEY_LENGTH} characters.")
        if isinstance(value, str):
            if len(value) > QUESTIONNAIRE_MAX_TEXT_LENGTH:
                raise BadRequest(f"The answer to '{key[:40]}' is longer than "
                                 f"{QUESTIONNAIRE_MAX_TEXT_LENGTH} characters.")
        elif value is not None and not isinstance(value, bool) and (not isinstance(value, (int, float))
                                                                     or abs(value) > 1e15):
            raise BadRequest(f"The answer to '{key[:40]}' must be text, a number, true, false or null.")
    return answers


@_participant_view(require_POST)
def questionnaire(request, participant):
    data = _body(request)
    participation.finish(participant, _questionnaire_answers(data.get("answers")))
    return JsonResponse({"phase": "done", "completion": session_payload(participant)["completion"]})


@_participant_view(require_POST)
def screen_out(request, participant):
    """The page found the participant ineligible (studyapp.screening.REASONS): they are screened out, and
    the answer says where to send them."""
    data = _body(request)
    reason = data.get("reason")
    if not isinstance(reason, str) or reason not in screening.REASONS:
        raise BadRequest(f"'reason' must be one of {', '.join(screening.REASONS)}.")
    try:
        screening.screen_out(participant, reason)
    except screening.ScreeningError as exc:
        raise participation.ParticipationError("screening_refused", str(exc), 409) from None
    return JsonResponse(session_payload(participant))


@_participant_view(require_POST)
def calibration(request, participant):
    """What the virtual chinrest measured: pixels per cm, viewing distance, the query image's width."""
    data = _body(request)
    try:
        screening.record_calibration(participant, data.get("px_per_cm"), data.get("viewing_distance_cm"),
                                     data.get("image_px"))
    except screening.ScreeningError as exc:
        raise BadRequest(str(exc)) from None
    return JsonResponse(session_payload(participant))


@require_GET
def openapi_schema(request):
    return JsonResponse(openapi.schema())
