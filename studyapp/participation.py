"""A participant's way through a study: arrival, consent, instructions, trials, questionnaire.

Views call these functions and turn their results and exceptions into pages or JSON; nothing here
knows about HTTP. The phase is derived from the participant row alone, so every request (a reload, a
second tab) sees the same state.
"""
import re
import secrets
import weakref
from collections.abc import Iterable, Mapping
from contextlib import AbstractContextManager, nullcontext
from datetime import datetime, timedelta
from typing import Any, NamedTuple

from django.conf import settings
from django.db import IntegrityError, InterfaceError, OperationalError, ProgrammingError, connection, transaction
from django.db.models import F
from django.utils import timezone

from . import assignment, designs, trials
from .models import Condition, Participant, Response, Study, Trial
from .recruitment import REQUIRED_PARAMETERS, SESSION_PARAMETER, Arrival, hash_external_id


class ParticipationError(Exception):
    """A request the participant's state does not allow. `code` names it for the API; `status` is the
    HTTP status a view should answer with."""

    status = 409

    def __init__(self, code: str, detail: str, status: int | None = None) -> None:
        super().__init__(detail)
        self.code = code
        self.detail = detail
        if status is not None:
            self.status = status


class AlreadyParticipated(ParticipationError):
    def __init__(self, participant: Participant) -> None:
        super().__init__("already_participated", "You have already taken part in this study.", 403)
        self.participant = participant


def phase(participant: Participant) -> str:
    if participant.status == Participant.Status.COMPLETED:
        return "done"
    if participant.status == Participant.Status.SCREENED_OUT:
        return "screened_out"
    if participant.status in (Participant.Status.RETURNED, Participant.Status.TIMED_OUT):
        return "ended"
    if participant.consented_at is None:
        return "consent"
    if participant.instructions_ms is None:
        return "instructions"
    if participant.answered < participant.practice_end:
        return "practice"
    if participant.answered < participant.trial_count:
        return "main"
    return "questionnaire"


def _trial_rows(participant: Participant, specs: Iterable[trials.TrialSpec], first_position: int) -> list[Trial]:
    return [
        Trial(
            participant=participant, position=first_position + i, block=s.block, kind=s.kind,
            attempt=s.attempt, unit_id=s.unit_id, references_min=s.references_min,
            references_max=s.references_max, query_a=s.query_a, query_b=s.query_b,
            correct_query=s.correct_query, strip_a=s.strip_a, strip_b=s.strip_b,
            occlusion_delta_a=s.occlusion_delta_a, occlusion_delta_b=s.occlusion_delta_b,
            condition_id=s.condition if s.condition is not None else participant.condition_id,
            block_index=s.block_index if s.condition is not None else (0 if s.block == "main" else None),
        )
        for i, s in enumerate(specs)
    ]


def _insert_trials(rows: list[Trial]) -> None:
    """Insert a trial list. On PostgreSQL by COPY: bulk_create sends each column as an array, and
    psycopg quotes every JSON image list into its array with a regular expression in Python, some
    2,000 substitutions for a 60-trial list; COPY's text format is escaped by psycopg's C code. Each
    value is still prepared by its field exactly as bulk_create prepares it (pre_save, get_db_prep_save).
    The rows get no primary keys back, which no caller reads."""
    if connection.vendor != "postgresql":
        Trial.objects.bulk_create(rows)
        return
    fields = [f for f in Trial._meta.concrete_fields if not f.primary_key]
    quote = connection.ops.quote_name
    statement = f"COPY {quote(Trial._meta.db_table)} ({', '.join(quote(f.column) for f in fields)}) FROM STDIN"
    with connection.cursor() as cursor, cursor.cursor.copy(statement) as copy:
        for row in rows:
            copy.write_row([f.get_db_prep_save(f.pre_save(row, True), connection) for f in fields])


def _arrival_digest(arrival: Arrival) -> str | None:
    """The keyed hash that stands in for the arrival's recruitment id; None for a plain link."""
    if arrival.external_id is None:
        return None
    return hash_external_id(settings.PARTICIPANT_ID_KEY, arrival.platform, arrival.external_id)


def find_participant(study: Study, arrival: Arrival, digest: str | None = None) -> Participant | None:
    digest = digest or _arrival_digest(arrival)
    if digest is None:
        return None
    # Every version of the study counts: a person who took version 1 has taken the study.
    return Participant.objects.filter(study_id__in=study.version_ids(), external_id_hash=digest) \
        .order_by("-study__version").first()


def start(study: Study, arrival: Arrival, user_agent: str = "", resume_token: str | None = None) -> Participant:
    """Join `study`: resume an unfinished participation of the same recruitment id, refuse a repeat,
    or assign a condition and store a fresh trial list. `resume_token` is the participation this
    browser holds (its resume cookie), which may resume without the platform's session id."""
    if study.status != Study.Status.LIVE:
        raise ParticipationError("not_live", "This study is not accepting participants at the moment.", 403)
    check_platform(study, arrival)
    digest = _arrival_digest(arrival)
    existing = find_participant(study, arrival, digest)
    if existing is not None:
        return _resume(existing, arrival, resume_token)
    assignment.expire_stale_participants(study)
    seed = secrets.randbits(62)

    def create(condition: Condition, **slot: int) -> Participant:
        return Participant.objects.create(
            study=study, condition=condition, external_id_hash=digest, recruitment=arrival.platform,
            recruitment_info=arrival.info, seed=seed, user_agent=user_agent[:300], **slot,
        )

    try:
        if study.design == Study.Design.BETWEEN:
            participant = assignment.reserve(study, create)
        else:
            participant = assignment.reserve_order(study, create)
    except assignment.StudyFull as exc:
        raise ParticipationError("study_full", "This study is full. Thank you for your interest.", 403) from exc
    except IntegrityError:
        # The same recruitment id arrived twice at once; the other request created the participant.
        existing = find_participant(study, arrival, digest)
        if existing is None:
            raise
        return _resume(existing, arrival, resume_token)
    # After the slot's lock is let go: the trial list is the arrival's longest step.
    try:
        with transaction.atomic():
            _store_trial_list(participant, participant.condition, seed)
    except BaseException:
        participant.delete()
        raise
    return participant


def check_platform(study: Study, arrival: Arrival) -> None:
    """Refuse an arrival that did not come through the study's recruitment platform."""
    if study.recruitment == Study.Recruitment.LINK:
        return
    if arrival.platform == "link" and study.allow_plain_link:
        return
    platform = Study.Recruitment(study.recruitment).label
    if arrival.platform != study.recruitment:
        raise ParticipationError("wrong_platform", f"This study takes participants through {platform} only. "
                                 f"Please open it from {platform}.", 403)
    missing = [k for k in REQUIRED_PARAMETERS[study.recruitment] if not arrival.info.get(k)]
    if missing:
        raise ParticipationError("incomplete_link", f"The link from {platform} is incomplete (it lacks "
                                 f"{', '.join(missing)}). Please open the study from {platform} again.", 400)
    if arrival.info.get("assignmentId") == "ASSIGNMENT_ID_NOT_AVAILABLE":
        raise ParticipationError("hit_preview", "Please accept the HIT on MTurk before starting the study.", 403)


def _resume(existing: Participant, arrival: Arrival, resume_token: str | None) -> Participant:
    """The participation of a returning recruitment id, if it is unfinished and the same platform
    session (or the browser that holds it): a person's id alone, which others may know, is not enough."""
    if existing.status != Participant.Status.STARTED:
        raise AlreadyParticipated(existing)
    key = SESSION_PARAMETER.get(existing.recruitment)
    if resume_token != existing.token and key and existing.recruitment_info.get(key) != arrival.info.get(key):
        raise ParticipationError(
            "other_session", "This participation was started in another session. Please continue it there, or "
            "return the study on the recruitment platform and start it again.", 403)
    return existing


def start_preview(study: Study, condition: Condition) -> Participant:
    """A researcher's walk through one condition: a real participant row, flagged so that it takes no
    quota slot and never reaches the export."""
    seed = secrets.randbits(62)
    with transaction.atomic():
        participant = Participant.objects.create(study=study, condition=condition, recruitment=Study.Recruitment.LINK,
                                                 seed=seed, is_preview=True)
        _store_trial_list(participant, condition, seed)
    return participant


def condition_plan(condition: Condition, units: list[trials.UnitExemplars] | None = None) -> trials.ConditionPlan:
    units = condition.unit_exemplars() if units is None else units
    band = condition.query_band_for(units) if units else None
    return trials.ConditionPlan(
        key=condition.pk, units=units, reference_type=condition.reference_type, paradigm=condition.paradigm,
        n_references=condition.n_references, min_references=condition.min_references, query_band=band)


def design_schedule(study: Study, order_index: int, order_slot: int | None, conditions: list[Condition] | None = None
                    ) -> tuple[dict[int, trials.ConditionPlan], list[tuple[int, int]], Condition]:
    """A within or mixed participant's plans (condition pk → ConditionPlan, its units allocated) and
    schedule ((condition pk, main trials) per block) for order `order_index`, slot `order_slot`: what
    the trial list is built from, and what the schedule preview shows."""
    conditions, orders, quota = assignment.study_plan(study, conditions)
    order = orders[order_index]
    members = sorted(set(order.blocks))
    units = {i: conditions[i].unit_exemplars() for i in members}
    if study.unit_allocation == Study.UnitAllocation.DISJOINT:
        rotation = designs.rotation(orders, quota, order_index, order_slot or 0)
        parts = designs.disjoint_parts(min(len(u) for u in units.values()), len(members), rotation)
        units = {i: [units[i][p] for p in part] for i, part in zip(members, parts)}
    plans = {conditions[i].pk: condition_plan(conditions[i], units[i]) for i in members}
    sizes = {i: designs.block_sizes(study.n_main, study.blocks_per_condition, study.trials_per_block)
             for i in members}
    seen = {}
    schedule = []
    for i in order.blocks:
        schedule.append((conditions[i].pk, sizes[i][seen.get(i, 0)]))
        seen[i] = seen.get(i, 0) + 1
    practice = assignment.practice_condition(study, conditions, order)
    return plans, schedule, practice


def _store_trial_list(participant: Participant, condition: Condition, seed: int) -> None:
    study = participant.study
    if participant.order is not None:
        plans, schedule, practice = design_schedule(study, participant.order, participant.order_slot)
        specs = trials.build_block_list(plans, schedule, practice=practice.pk, n_practice=study.n_practice,
                                        catch_ratio=study.catch_ratio, seed=[study.seed, seed])
    else:
        plan = condition_plan(condition)
        specs = trials.build_trial_list(
            plan.shown_units() if plan.paradigm != "ordered_strip" else plan.units, n_practice=study.n_practice,
            n_main=study.n_main, catch_ratio=study.catch_ratio, reference_type=condition.reference_type,
            seed=[study.seed, seed], paradigm=condition.paradigm,
        )
        if not condition.min_references:
            for spec in specs:
                spec.references_min = []
    _insert_trials(_trial_rows(participant, specs, 0))
    participant.practice_end = sum(1 for s in specs if s.block == "practice")
    participant.trial_count = len(specs)
    participant.save(update_fields=["practice_end", "trial_count"])


def _require_active(participant: Participant) -> None:
    if participant.status != Participant.Status.STARTED:
        raise ParticipationError("ended", "This session has ended. Thank you for your time.", 410)
    deadline = participant.started_at + timedelta(minutes=participant.study.time_limit_minutes)
    if timezone.now() > deadline:
        Participant.objects.filter(pk=participant.pk, status=Participant.Status.STARTED).update(
            status=Participant.Status.TIMED_OUT, finished_at=timezone.now())
        participant.status = Participant.Status.TIMED_OUT
        raise ParticipationError("timed_out", "The time limit for this study has passed, so the session has "
                                 "ended. Thank you for your time.", 410)


def give_consent(participant: Participant, consent: bool) -> Participant:
    _require_active(participant)
    now = timezone.now()
    if not consent:
        participant.status = Participant.Status.RETURNED
        participant.finished_at = now
        participant.save(update_fields=["status", "finished_at"])
        return participant
    if participant.consented_at is None:
        participant.consented_at = now
        participant.last_seen = now
        participant.save(update_fields=["consented_at", "last_seen"])
    return participant


def record_instructions(participant: Participant, reading_ms: float) -> Participant:
    _require_active(participant)
    if participant.consented_at is None:
        raise ParticipationError("out_of_order", "Consent comes before the instructions.")
    if participant.instructions_ms is None:
        # The server served the instructions with its answer to the consent: from then to now is the
        # reading time no client can choose. The client's own figure is kept beside it.
        participant.instructions_ms = reading_ms
        participant.instructions_at = participant.last_seen = timezone.now()
        participant.save(update_fields=["instructions_ms", "instructions_at", "last_seen"])
    return participant


def upcoming_trials(participant: Participant, limit: int) -> list[Trial]:
    """The first `limit` unanswered trials, in order; those served for the first time are stamped with
    the server's time."""
    upcoming = list(
        Trial.objects.filter(participant=participant, position__gte=participant.answered)
        .select_related("condition").order_by("position")[:limit]
    )
    fresh = [t.pk for t in upcoming if t.served_at is None]
    if fresh:
        Trial.objects.filter(pk__in=fresh, served_at__isnull=True).update(served_at=timezone.now())
    return upcoming


class UnknownParticipant(ParticipationError):
    def __init__(self) -> None:
        super().__init__("not_found", "There is no session with this link.", 404)


class Answer(NamedTuple):
    """What storing an answer tells the participant's next screen: `participant` with its progress after
    the answer and, as `participant.study`, whether practice gives feedback; `trial` with its block and
    attempt (not its answer key); whether the answer was correct; whether this request stored it."""

    participant: Participant
    trial: Trial
    correct: bool
    created: bool


# Every check of an answer and its write in one statement, so that an answer costs one round trip and
# one commit. The conditions on the participant row name `u`, the row the UPDATE locks: when another
# request changed it meanwhile, PostgreSQL re-checks them against the committed version, so of two
# requests for one trial the second finds `answered` moved and writes nothing. The trial's position comes
# from the statement's snapshot; `trial_count` unchanged means no practice block was inserted (shifting
# the positions) since. An answer that ends a practice block writes nothing here (`block_end` false):
# it takes the transactional path, which may insert another block.
_ANSWER_SQL = f"""
WITH p AS (
    SELECT p.id, p.study_id, p.status, p.consented_at, p.instructions_ms, p.answered, p.practice_end,
           p.trial_count, p.practice_attempts, p.started_at, s.confidence, s.practice_feedback,
           s.time_limit_minutes
    FROM {Participant._meta.db_table} p JOIN {Study._meta.db_table} s ON s.id = p.study_id
    WHERE p.token = %(token)s
), t AS (
    SELECT t.id, t.participant_id, t.position, t.block, t.attempt, t.correct_query
    FROM {Trial._meta.db_table} t JOIN p ON p.id = t.participant_id
    WHERE t.id = %(trial)s
), moved AS (
    UPDATE {Participant._meta.db_table} u SET answered = u.answered + 1, last_seen = %(now)s
    FROM p, t
    WHERE u.id = p.id AND u.answered = t.position AND u.trial_count = p.trial_count
      AND u.status = %(started)s AND u.consented_at IS NOT NULL AND u.instructions_ms IS NOT NULL
      AND %(now)s <= p.started_at + p.time_limit_minutes * interval '1 minute'
      AND (NOT p.confidence OR %(confidence)s IS NOT NULL)
      AND (%(block_end)s OR t.block <> %(practice)s OR t.position + 1 <> u.practice_end)
    RETURNING u.id
), stored AS (
    INSERT INTO {Response._meta.db_table} (trial_id, participant_id, idempotency_key, choice, confidence, correct, rt_ms,
                            client_time, server_time, focus_losses, fullscreen_exits, webdriver)
    SELECT t.id, moved.id, %(key)s, %(choice)s, %(confidence)s, t.correct_query = %(choice)s, %(rt_ms)s,
           %(client_time)s, %(now)s, %(focus_losses)s, %(fullscreen_exits)s, %(webdriver)s
    FROM t, moved
    RETURNING correct
)
SELECT p.id, p.study_id, p.status, p.consented_at, p.instructions_ms, p.answered, p.practice_end,
       p.trial_count, p.practice_attempts, p.started_at,
       p.confidence, p.practice_feedback, p.time_limit_minutes,
       t.id, t.participant_id, t.position, t.block, t.attempt,
       (SELECT correct FROM stored)
FROM p LEFT JOIN t ON TRUE
"""
_PARTICIPANT_FIELDS = ("id", "study_id", "status", "consented_at", "instructions_ms", "answered", "practice_end",
                       "trial_count", "practice_attempts", "started_at")
_STUDY_FIELDS = ("confidence", "practice_feedback", "time_limit_minutes")
_TRIAL_FIELDS = ("id", "participant_id", "position", "block", "attempt")
_ANSWER_PARAMETERS = {
    "token": "text", "trial": "bigint", "now": "timestamptz", "started": "text", "confidence": "smallint",
    "block_end": "boolean", "practice": "text", "key": "text", "choice": "text", "rt_ms": "double precision",
    "client_time": "timestamptz", "focus_losses": "smallint", "fullscreen_exits": "smallint", "webdriver": "boolean",
}
# Prepared once per database connection: parsing and planning the statement cost PostgreSQL more than
# running it. A prepared statement outlives rollbacks and lasts as long as the connection (behind a
# pooler in transaction mode it does not: DATABASE_PREPARED_STATEMENTS=false).
_PREPARE_ANSWER = "PREPARE studyapp_answer ({}) AS {}".format(
    ", ".join(_ANSWER_PARAMETERS.values()),
    re.sub(r"%\((\w+)\)s", lambda m: f"${list(_ANSWER_PARAMETERS).index(m.group(1)) + 1}", _ANSWER_SQL),
)
_EXECUTE_ANSWER = "EXECUTE studyapp_answer ({})".format(", ".join(f"%({name})s" for name in _ANSWER_PARAMETERS))
_prepared_on = weakref.WeakSet()  # the psycopg connections that hold studyapp_answer
_NO_SUCH_PREPARED_STATEMENT, _PREPARED_STATEMENT_EXISTS = "26000", "42P05"  # SQLSTATEs
_BIGINT = 2 ** 63


def _run_answer_statement(parameters: Mapping[str, Any]) -> tuple | None:
    """The answer statement's row, on a connection found alive by the statement itself.

    Django's health check (CONN_HEALTH_CHECKS) sends a SELECT 1 before a request's first statement on a
    kept connection: on the answer path, a second round trip to PostgreSQL for the one that matters,
    some tens of microseconds of web CPU and more of the database's. Here the statement goes first,
    unchecked, and only if it finds the kept connection dead (PostgreSQL restarted, a proxy dropped it)
    is it sent once more on a new connection, as the health check would have done. Sending it twice is
    safe: it is a transaction of its own, and one that committed before its connection died left the
    counter moved, so the second writes nothing and record_response gives the stored answer back. Inside
    a caller's transaction (the block-end path) the connection is never replaced and nothing is resent."""
    unchecked = (connection.connection is not None and connection.health_check_enabled
                 and not connection.health_check_done and not connection.in_atomic_block)
    if unchecked:
        connection.health_check_done = True
    try:
        return _answer_statement_once(parameters)
    except (OperationalError, InterfaceError):
        if not unchecked or not (connection.connection is None or connection.connection.closed):
            raise  # a live connection's error, or a new connection's: PostgreSQL is away (a 503)
        connection.close()
        return _answer_statement_once(parameters)


def _answer_statement_once(parameters: Mapping[str, Any]) -> tuple | None:
    if not settings.DATABASE_PREPARED_STATEMENTS:
        with _own_transaction(), connection.cursor() as cursor:
            cursor.execute(_ANSWER_SQL, parameters)
            return cursor.fetchone()
    for attempt in range(2):
        try:
            with _own_transaction(), connection.cursor() as cursor:
                if connection.connection not in _prepared_on:
                    cursor.execute(_PREPARE_ANSWER)
                    _prepared_on.add(connection.connection)
                cursor.execute(_EXECUTE_ANSWER, parameters)
                return cursor.fetchone()
        except ProgrammingError as exc:
            # The session's prepared statements and our record of them disagree (a DISCARD ALL, a
            # pooler's reset): believe the server and try once more.
            state = getattr(exc.__cause__, "sqlstate", None)
            if attempt or state not in (_NO_SUCH_PREPARED_STATEMENT, _PREPARED_STATEMENT_EXISTS):
                raise
            if state == _NO_SUCH_PREPARED_STATEMENT:
                _prepared_on.discard(connection.connection)
            else:
                _prepared_on.add(connection.connection)


def _own_transaction() -> AbstractContextManager:
    # Alone, the statement is a transaction of its own. Inside a caller's transaction (the block-end path,
    # a test) it takes a savepoint, so that a refused insert leaves that transaction usable.
    return transaction.atomic() if connection.in_atomic_block else nullcontext()


def _store_answer(token: str, trial_id: int, values: Mapping[str, Any], block_end: bool
                  ) -> tuple[Participant, Trial | None, bool | None] | None:
    """Run _ANSWER_SQL: (participant, trial or None, correct if stored else None), or None for an unknown
    token. The participant is as the statement found it, before this answer."""
    parameters = {
        **values, "token": token, "block_end": block_end, "started": Participant.Status.STARTED.value,
        "practice": Trial.Block.PRACTICE.value,
        # An id no bigint can hold belongs to no trial (the ORM answers such lookups with no rows too).
        "trial": trial_id if -_BIGINT <= trial_id < _BIGINT else None,
    }
    row = _run_answer_statement(parameters)
    if row is None:
        return None
    n_participant, n_study = len(_PARTICIPANT_FIELDS), len(_STUDY_FIELDS)
    participant = Participant.from_db(connection.alias, _PARTICIPANT_FIELDS, row[:n_participant])
    participant.study = Study.from_db(connection.alias, ("id",) + _STUDY_FIELDS,
                                      (participant.study_id,) + row[n_participant:n_participant + n_study])
    trial_row = row[n_participant + n_study:-1]
    trial = Trial.from_db(connection.alias, _TRIAL_FIELDS, trial_row) if trial_row[0] is not None else None
    return participant, trial, row[-1]


def _answers_in_one_statement() -> bool:
    # _ANSWER_SQL is PostgreSQL's (data-modifying WITH); elsewhere (the embedded demo's SQLite) the ORM
    # path applies the same rules in several statements.
    return connection.vendor == "postgresql"


def _check_answerable(participant: Participant, confidence: int | None) -> None:
    """Raise what the first of the participant-level checks that fails calls for, in the order they have
    always been made."""
    if participant.study.confidence and confidence is None:
        raise ParticipationError("bad_request", "This study asks for a confidence rating of 1, 2 or 3.", 400)
    _require_active(participant)
    if participant.consented_at is None or participant.instructions_ms is None:
        raise ParticipationError("out_of_order", "Consent and instructions come before the trials.")


def _unknown_trial() -> ParticipationError:
    return ParticipationError("unknown_trial", "This trial does not belong to your session.", 404)


def _record_in_one_statement(token: str, trial_id: int, values: Mapping[str, Any]) -> tuple[Participant, Trial, bool | None]:
    found = _store_answer(token, trial_id, values, block_end=False)
    if found is None:
        raise UnknownParticipant()
    participant, trial, correct = found
    if correct is not None:
        participant.answered = trial.position + 1
        return participant, trial, correct
    # Nothing was written: say why.
    _check_answerable(participant, values["confidence"])
    if trial is None:
        raise _unknown_trial()
    if trial.block == Trial.Block.PRACTICE and trial.position + 1 == participant.practice_end:
        with transaction.atomic():
            found = _store_answer(token, trial_id, values, block_end=True)
            if found is None:
                raise UnknownParticipant()
            participant, trial, correct = found
            if correct is not None:
                participant = Participant.objects.select_related("study", "condition").get(pk=participant.pk)
                _maybe_repeat_practice(participant, trial)
    return participant, trial, correct


def _record_through_orm(token: str, trial_id: int, values: Mapping[str, Any]) -> tuple[Participant, Trial, bool | None]:
    participant = Participant.objects.select_related("study").filter(token=token).first()
    if participant is None:
        raise UnknownParticipant()
    _check_answerable(participant, values["confidence"])
    trial = Trial.objects.filter(pk=trial_id, participant=participant).first()
    if trial is None:
        raise _unknown_trial()
    with transaction.atomic():
        moved = Participant.objects.filter(
            pk=participant.pk, answered=trial.position, trial_count=participant.trial_count,
        ).update(answered=F("answered") + 1, last_seen=values["now"])
        if not moved:
            return participant, trial, None
        response = Response.objects.create(
            trial=trial, participant=participant, idempotency_key=values["key"], choice=values["choice"],
            confidence=values["confidence"], correct=(values["choice"] == trial.correct_query),
            rt_ms=values["rt_ms"], client_time=values["client_time"],
            focus_losses=values["focus_losses"], fullscreen_exits=values["fullscreen_exits"],
            webdriver=values["webdriver"],
        )
        participant.answered = trial.position + 1
        if trial.block == Trial.Block.PRACTICE and participant.answered == participant.practice_end:
            _maybe_repeat_practice(participant, trial)
    return participant, trial, response.correct


def record_response(token: str, trial_id: int, *, idempotency_key: str, choice: str, confidence: int | None,
                    rt_ms: float | None, client_time: datetime | None, focus_losses: int | None = None,
                    fullscreen_exits: int | None = None, webdriver: bool | None = None) -> Answer:
    """Store one answer of the participant with `token`; returns an `Answer`. The answered-prefix
    counter moves forward by one only if this trial is the first unanswered one, in the same transaction
    as the insert: a double submit, a retry after a lost acknowledgement or a second tab finds the counter
    moved and gets the stored answer back instead of a second row. Raises UnknownParticipant for a token
    that is no participant's, and ParticipationError for an answer the participant's state refuses."""
    # `now` is the answer's arrival as the server measures it: the timing exclusions rest on it, never on
    # the client's clock. The interaction counts are what the browser reports since its previous answer.
    values = {"key": idempotency_key, "choice": choice, "confidence": confidence, "rt_ms": rt_ms,
              "client_time": client_time, "now": timezone.now(), "focus_losses": focus_losses,
              "fullscreen_exits": fullscreen_exits, "webdriver": webdriver}
    record = _record_in_one_statement if _answers_in_one_statement() else _record_through_orm
    try:
        participant, trial, correct = record(token, trial_id, values)
    except IntegrityError:
        # The key came before with another trial (a client reusing keys): the insert and the counter
        # rolled back together, and the client is told rather than shown a server error.
        if Response.objects.filter(idempotency_key=idempotency_key).exclude(trial_id=trial_id).exists():
            raise ParticipationError("duplicate_key", "This answer's idempotency key was already used for "
                                     "another answer; send each answer with a new key.") from None
        raise
    if correct is not None:
        return Answer(participant, trial, correct, True)
    # A statement of its own, so that it sees an answer committed while ours waited for the row.
    stored = Response.objects.filter(trial_id=trial.pk).values_list("correct", flat=True).order_by().first()
    if stored is None:
        raise ParticipationError("out_of_order", "This trial is not the next one; reload to continue.")
    return Answer(participant, trial, stored, False)


def _maybe_repeat_practice(participant: Participant, last_trial: Trial) -> None:
    """At the end of a practice block with a miss, insert another block before the main trials while
    attempts remain. Main trials move back by one block; the two-step shift keeps positions unique at
    every moment, which PostgreSQL checks row by row."""
    study = participant.study
    attempt = last_trial.attempt or 1
    missed = Response.objects.filter(
        participant=participant, trial__block=Trial.Block.PRACTICE, trial__attempt=attempt, correct=False,
    ).exists()
    if not missed or attempt >= study.practice_max_attempts:
        return
    plan = condition_plan(participant.condition)
    specs = trials.repeat_practice(
        plan.shown_units() if plan.paradigm != "ordered_strip" else plan.units, n_practice=study.n_practice,
        reference_type=plan.reference_type, seed=[study.seed, participant.seed], attempt=attempt + 1,
        paradigm=plan.paradigm,
    )
    for spec in specs:
        spec.references_min = spec.references_min if plan.min_references else []
    n = len(specs)
    offset = participant.trial_count + n + 1
    main = Trial.objects.filter(participant=participant, position__gte=participant.practice_end)
    main.update(position=F("position") + offset)
    main.update(position=F("position") - offset + n)
    _insert_trials(_trial_rows(participant, specs, participant.practice_end))
    Participant.objects.filter(pk=participant.pk).update(
        practice_end=F("practice_end") + n, trial_count=F("trial_count") + n, practice_attempts=attempt + 1,
    )
    participant.practice_end += n
    participant.trial_count += n
    participant.practice_attempts = attempt + 1


def finish(participant: Participant, answers: dict[str, Any]) -> Participant:
    _require_active(participant)
    if phase(participant) != "questionnaire":
        raise ParticipationError("out_of_order", "Please answer every trial before the questionnaire.")
    participant.questionnaire = answers
    participant.status = Participant.Status.COMPLETED
    participant.finished_at = timezone.now()
    participant.save(update_fields=["questionnaire", "status", "finished_at"])
    return participant
