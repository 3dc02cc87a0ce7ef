"""A participant's way through a study: arrival, consent, instructions, trials, questionnaire.

Views call these functions and turn their results and exceptions into pages or JSON; nothing here
knows about HTTP. The phase is derived from the participant row alone, so every request (a reload, a
second tab) sees the same state.
"""
import secrets
from collections import defaultdict
from datetime import timedelta

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import F
from django.utils import timezone

from . import assignment, trials
from .models import Exemplar, Participant, Response, Study, Trial
from .recruitment import hash_external_id

PHASES = ("consent", "instructions", "practice", "main", "questionnaire", "done")


class ParticipationError(Exception):
    """A request the participant's state does not allow. `code` names it for the API; `status` is the
    HTTP status a view should answer with."""

    status = 409

    def __init__(self, code, detail, status=None):
        super().__init__(detail)
        self.code = code
        self.detail = detail
        if status is not None:
            self.status = status


class AlreadyParticipated(ParticipationError):
    def __init__(self, participant):
        super().__init__("already_participated", "You have already taken part in this study.", 403)
        self.participant = participant


def phase(participant):
    if participant.status == Participant.Status.COMPLETED:
        return "done"
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


def condition_units(condition):
    """The condition's units with their exemplar lists, in the artifact's order."""
    units = list(condition.units().order_by("index"))
    lists = defaultdict(lambda: defaultdict(list))
    strips = defaultdict(lambda: defaultdict(list))
    exemplars = Exemplar.objects.filter(unit__in=units).order_by("unit_id", "role", "group", "position")
    for unit_id, role, group, image in exemplars.values_list("unit_id", "role", "group", "image"):
        if role == Exemplar.Role.STRIP:
            strips[unit_id][group].append(image)
        else:
            lists[unit_id][role].append(image)
    return [
        trials.UnitExemplars(
            unit_id=u.pk,
            references_max=lists[u.pk][Exemplar.Role.REFERENCE_MAX],
            references_min=lists[u.pk][Exemplar.Role.REFERENCE_MIN],
            queries_max=lists[u.pk][Exemplar.Role.QUERY_MAX],
            queries_min=lists[u.pk][Exemplar.Role.QUERY_MIN],
            strips=[strips[u.pk][group] for group in sorted(strips[u.pk])],
            overlays_max=lists[u.pk][Exemplar.Role.OVERLAY_MAX],
        )
        for u in units
    ]


def _trial_rows(participant, specs, first_position):
    return [
        Trial(
            participant=participant, position=first_position + i, block=s.block, kind=s.kind,
            attempt=s.attempt, unit_id=s.unit_id, references_min=s.references_min,
            references_max=s.references_max, query_a=s.query_a, query_b=s.query_b,
            correct_query=s.correct_query, strip_a=s.strip_a, strip_b=s.strip_b,
        )
        for i, s in enumerate(specs)
    ]


def _arrival_digest(arrival):
    """The keyed hash that stands in for the arrival's recruitment id; None for a plain link."""
    if arrival.external_id is None:
        return None
    return hash_external_id(settings.PARTICIPANT_ID_KEY, arrival.platform, arrival.external_id)


def find_participant(study, arrival, digest=None):
    digest = digest or _arrival_digest(arrival)
    if digest is None:
        return None
    return Participant.objects.filter(study=study, external_id_hash=digest).first()


def start(study, arrival, user_agent=""):
    """Join `study`: resume an unfinished participation of the same recruitment id, refuse a repeat,
    or assign a condition and store a fresh trial list."""
    if study.status != Study.Status.LIVE:
        raise ParticipationError("not_live", "This study is not accepting participants at the moment.", 403)
    digest = _arrival_digest(arrival)
    existing = find_participant(study, arrival, digest)
    if existing is not None:
        if existing.status == Participant.Status.STARTED:
            return existing
        raise AlreadyParticipated(existing)
    try:
        with transaction.atomic():
            locked = assignment.lock_study(study.pk)
            assignment.expire_stale_participants(locked)
            try:
                condition = assignment.choose_condition(locked)
            except assignment.StudyFull as exc:
                raise ParticipationError("study_full", "This study is full. Thank you for your interest.", 403) from exc
            seed = secrets.randbits(62)
            participant = Participant.objects.create(
                study=locked, condition=condition, external_id_hash=digest, recruitment=arrival.platform,
                recruitment_info=arrival.info, seed=seed, user_agent=user_agent[:300],
            )
            _store_trial_list(participant, condition, seed)
    except IntegrityError:
        # The same recruitment id arrived twice at once; the other request created the participant.
        existing = find_participant(study, arrival, digest)
        if existing is None:
            raise
        return existing
    return participant


def start_preview(study, condition):
    """A researcher's walk through one condition: a real participant row, flagged so that it takes no
    quota slot and never reaches the export."""
    seed = secrets.randbits(62)
    with transaction.atomic():
        participant = Participant.objects.create(study=study, condition=condition, recruitment=Study.Recruitment.LINK,
                                                 seed=seed, is_preview=True)
        _store_trial_list(participant, condition, seed)
    return participant


def _store_trial_list(participant, condition, seed):
    study = participant.study
    specs = trials.build_trial_list(
        condition_units(condition), n_practice=study.n_practice, n_main=study.n_main,
        catch_ratio=study.catch_ratio, reference_type=condition.reference_type, seed=[study.seed, seed],
        paradigm=condition.paradigm,
    )
    Trial.objects.bulk_create(_trial_rows(participant, specs, 0))
    participant.practice_end = sum(1 for s in specs if s.block == "practice")
    participant.trial_count = len(specs)
    participant.save(update_fields=["practice_end", "trial_count"])


def _require_active(participant):
    if participant.status != Participant.Status.STARTED:
        raise ParticipationError("ended", "This session has ended. Thank you for your time.", 410)
    deadline = participant.started_at + timedelta(minutes=participant.study.time_limit_minutes)
    if timezone.now() > deadline:
        Participant.objects.filter(pk=participant.pk, status=Participant.Status.STARTED).update(
            status=Participant.Status.TIMED_OUT, finished_at=timezone.now())
        participant.status = Participant.Status.TIMED_OUT
        raise ParticipationError("timed_out", "The time limit for this study has passed, so the session has "
                                 "ended. Thank you for your time.", 410)


def give_consent(participant, consent):
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


def record_instructions(participant, reading_ms):
    _require_active(participant)
    if participant.consented_at is None:
        raise ParticipationError("out_of_order", "Consent comes before the instructions.")
    if participant.instructions_ms is None:
        participant.instructions_ms = reading_ms
        participant.last_seen = timezone.now()
        participant.save(update_fields=["instructions_ms", "last_seen"])
    return participant


def upcoming_trials(participant, limit):
    """The first `limit` unanswered trials, in order."""
    return list(
        Trial.objects.filter(participant=participant, position__gte=participant.answered)
        .order_by("position")[:limit]
    )


def record_response(participant, trial_id, *, idempotency_key, choice, confidence, rt_ms, client_time):
    """Store one answer. Returns (response, created). The answered-prefix counter moves forward by one
    only if this trial is the first unanswered one, in the same transaction as the insert: a double
    submit, a retry after a lost acknowledgement or a second tab finds the counter moved and gets the
    stored answer back instead of a second row."""
    _require_active(participant)
    if participant.consented_at is None or participant.instructions_ms is None:
        raise ParticipationError("out_of_order", "Consent and instructions come before the trials.")
    trial = Trial.objects.filter(pk=trial_id, participant=participant).first()
    if trial is None:
        raise ParticipationError("unknown_trial", "This trial does not belong to your session.", 404)
    try:
        with transaction.atomic():
            moved = Participant.objects.filter(pk=participant.pk, answered=trial.position).update(
                answered=F("answered") + 1, last_seen=timezone.now(),
            )
            if not moved:
                stored = Response.objects.filter(trial=trial).first()
                if stored is not None:
                    return stored, False
                raise ParticipationError("out_of_order", "This trial is not the next one; reload to continue.")
            response = Response.objects.create(
                trial=trial, participant=participant, idempotency_key=idempotency_key, choice=choice,
                confidence=confidence, correct=(choice == trial.correct_query), rt_ms=rt_ms, client_time=client_time,
            )
            participant.answered = trial.position + 1
            if trial.block == Trial.Block.PRACTICE and participant.answered == participant.practice_end:
                _maybe_repeat_practice(participant, trial)
    except IntegrityError:
        # The key came before with another trial (a client reusing keys): the insert and the counter
        # rolled back together, and the client is told rather than shown a server error.
        if Response.objects.filter(idempotency_key=idempotency_key).exclude(trial=trial).exists():
            raise ParticipationError("duplicate_key", "This answer's idempotency key was already used for "
                                     "another answer; send each answer with a new key.") from None
        raise
    return response, True


def _maybe_repeat_practice(participant, last_trial):
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
    units = condition_units(participant.condition)
    specs = trials.repeat_practice(
        units, n_practice=study.n_practice, reference_type=participant.condition.reference_type,
        seed=[study.seed, participant.seed], attempt=attempt + 1, paradigm=participant.condition.paradigm,
    )
    n = len(specs)
    offset = participant.trial_count + n + 1
    main = Trial.objects.filter(participant=participant, position__gte=participant.practice_end)
    main.update(position=F("position") + offset)
    main.update(position=F("position") - offset + n)
    Trial.objects.bulk_create(_trial_rows(participant, specs, participant.practice_end))
    Participant.objects.filter(pk=participant.pk).update(
        practice_end=F("practice_end") + n, trial_count=F("trial_count") + n, practice_attempts=attempt + 1,
    )
    participant.practice_end += n
    participant.trial_count += n
    participant.practice_attempts = attempt + 1


def finish(participant, answers):
    _require_active(participant)
    if phase(participant) != "questionnaire":
        raise ParticipationError("out_of_order", "Please answer every trial before the questionnaire.")
    participant.questionnaire = answers
    participant.status = Participant.Status.COMPLETED
    participant.finished_at = timezone.now()
    participant.save(update_fields=["questionnaire", "status", "finished_at"])
    return participant
