"""The response export (docs/contracts.md, section 2): one row per response, the contract with
`analysis/`.

Everything that is per participant (exclusion flags) or per unit (machine score, the Δ of each query pair)
is looked up once before the rows are written, so the export costs a fixed number of queries whatever the
number of responses. Those queries and the rows read one snapshot of a live study (`one_snapshot`).

What a row says the participant was shown (condition, layer, basis, reference type, paradigm, job) is the
participant's own record of its assignment and the trial's unit, never the condition's row as it is today:
a condition edited after the answers (which `models.Condition` refuses, but an old database may hold)
leaves the export as it was. In a within-participant or mixed design a participant does several conditions,
so there these columns come from the trial's own condition (its factors frozen once the study has answers),
with the block's place in the schedule and the participant's counterbalancing order. The
questionnaire's answers are columns `q_<question>`, repeated on each of the participant's rows."""
import math
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import datetime
from os import PathLike
from typing import Any

import pandas as pd
from django.db import connection, transaction

from .exclusions import FLAG_COLUMNS, participant_flags, server_instructions_ms
from .models import Condition, Exemplar, Participant, Response, StimulusJob, Study, Trial, Unit
from .screening import visual_angle_deg

COLUMNS = [
    "study", "study_version", "participant", "condition", "basis", "layer", "reference_type", "paradigm", "job", "unit",
    "order", "block_index", "n_references", "min_references", "query_band",
    "trial_index", "trial_kind", "practice_attempt", "query_a", "query_b", "correct_query", "choice",
    "correct", "confidence", "rt_ms", "client_time", "server_time", "server_interval_ms", "trial_served",
    "focus_losses", "fullscreen_exits", "webdriver", "instructions_ms", "server_instructions_ms",
    "participant_status", "participant_started", "participant_finished", "recruitment",
    "px_per_cm", "viewing_distance_cm", "image_size_deg",
    *FLAG_COLUMNS, "unit_mis", "mis_delta", "occlusion_delta_a", "occlusion_delta_b",
]
QUESTION_PREFIX = "q_"


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def finite_number(value: object) -> float | None:
    """A finite float from a stored measure, else None (a measure may be absent, null or NaN)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


class MachineScores:
    """Per unit of the study: its stored MIS (measures["mis"]) and the machine Δ of each of its query pairs
    (measures["mis_deltas"], aligned with the pairs (queries_max[i], queries_min[i]))."""

    def __init__(self, study: Study) -> None:
        shown = Trial.objects.filter(participant__study=study, participant__is_preview=False).values("unit_id")
        measures = dict(Unit.objects.filter(pk__in=shown).values_list("pk", "measures"))
        self.mis = {pk: finite_number((m or {}).get("mis")) for pk, m in measures.items()}
        self.deltas = {pk: m["mis_deltas"] for pk, m in measures.items()
                       if isinstance(m, dict) and isinstance(m.get("mis_deltas"), list)}
        # A trial stores its query images, not the pair's index: the index is each image's position in
        # the unit's query lists (image names are only unique within a unit and role).
        self.position = {
            (unit_id, role, image): position
            for unit_id, role, position, image in Exemplar.objects.filter(
                unit_id__in=list(self.deltas), role__in=[Exemplar.Role.QUERY_MAX, Exemplar.Role.QUERY_MIN],
            ).values_list("unit_id", "role", "position", "image")
        } if self.deltas else {}

    def delta(self, trial: Trial) -> float | None:
        """Δ of the query pair the trial showed; None for catch trials (their queries are references,
        which the machine does not score) and wherever the unit has no Δ for that pair. An occlusion
        trial's Δ is the network's own: |Δ| of the correct side's occlusion less that of the other, the
        trial's margin (0 or more; larger is easier)."""
        if trial.occlusion_delta_a is not None and trial.occlusion_delta_b is not None:
            if trial.kind == Trial.Kind.CATCH:
                return None
            right, wrong = ((trial.occlusion_delta_a, trial.occlusion_delta_b) if trial.correct_query == "a"
                            else (trial.occlusion_delta_b, trial.occlusion_delta_a))
            return finite_number(abs(right) - abs(wrong))
        deltas = self.deltas.get(trial.unit_id)
        if deltas is None or trial.kind == Trial.Kind.CATCH or not trial.query_a or not trial.query_b:
            return None
        plus, minus = (trial.query_a, trial.query_b) if trial.correct_query == "a" else (trial.query_b, trial.query_a)
        i = self.position.get((trial.unit_id, Exemplar.Role.QUERY_MAX, plus))
        j = self.position.get((trial.unit_id, Exemplar.Role.QUERY_MIN, minus))
        if i is None or i != j or i >= len(deltas):
            return None
        return finite_number(deltas[i])


def response_rows(study: Study) -> Iterator[dict[str, Any]]:
    flags = participant_flags(study)
    machine = MachineScores(study)
    responses = (
        Response.objects.filter(participant__study=study, participant__is_preview=False)
        .select_related("trial__unit", "participant")
        # Per-unit measures are read once above; the trial's image lists are not part of the export, nor
        # the participant's questionnaire and recruitment JSON, which no row should have to decode.
        .defer("trial__unit__measures", "trial__references_min", "trial__references_max",
               "trial__strip_a", "trial__strip_b", "participant__questionnaire", "participant__recruitment_info")
        .order_by("server_time", "pk")
    )
    conditions = {c.pk: c for c in Condition.objects.filter(study=study).select_related("job")}
    # a between participant's record names its job; the job's band is read from that job, not the
    # condition's row as it is today
    jobs = {j.pk: j for j in StimulusJob.objects.filter(
        pk__in=Participant.objects.filter(study=study).values("stimulus_job_id"))}
    last_arrival = {}
    for r in responses.iterator(chunk_size=2000):
        trial, participant = r.trial, r.participant
        previous = last_arrival.get(participant.pk)
        last_arrival[participant.pk] = r.server_time
        condition = conditions.get(trial.condition_id) or conditions[participant.condition_id]
        if participant.order is None:
            shown = {"condition": participant.condition_name, "basis": participant.basis,
                     "layer": participant.layer, "reference_type": participant.reference_type,
                     "paradigm": participant.paradigm, "job": participant.stimulus_job_id}
        else:
            shown = {"condition": condition.name, "basis": condition.basis, "layer": condition.layer,
                     "reference_type": condition.reference_type, "paradigm": condition.paradigm,
                     "job": condition.job_id}
        job = jobs.get(participant.stimulus_job_id) if participant.order is None else None
        yield {
            "study": study.slug,
            "study_version": study.version,
            "participant": participant.pseudonym,
            **shown,
            "unit": trial.unit.key,
            "order": participant.order,
            "block_index": trial.block_index,
            "n_references": condition.n_references,
            "min_references": condition.min_references and shown["reference_type"] not in ("max_only", "none"),
            "query_band": condition.query_band(job),
            "trial_index": trial.position,
            "trial_kind": trial.kind,
            "practice_attempt": trial.attempt,
            "query_a": trial.query_a,
            "query_b": trial.query_b,
            "correct_query": trial.correct_query,
            "choice": r.choice,
            "correct": int(r.correct),
            "confidence": r.confidence,
            "rt_ms": r.rt_ms,
            "client_time": _iso(r.client_time),
            "server_time": _iso(r.server_time),
            "server_interval_ms": (r.server_time - previous).total_seconds() * 1000 if previous else None,
            "trial_served": _iso(trial.served_at),
            "focus_losses": r.focus_losses,
            "fullscreen_exits": r.fullscreen_exits,
            "webdriver": r.webdriver,
            "instructions_ms": participant.instructions_ms,
            "server_instructions_ms": server_instructions_ms(
                {"consented_at": participant.consented_at, "instructions_at": participant.instructions_at}),
            "participant_status": participant.status,
            "participant_started": _iso(participant.started_at),
            "participant_finished": _iso(participant.finished_at),
            "recruitment": participant.recruitment,
            # the virtual chinrest's measures (studyapp.screening), and the query image's visual angle
            "px_per_cm": participant.px_per_cm,
            "viewing_distance_cm": participant.viewing_distance_cm,
            "image_size_deg": visual_angle_deg(participant.image_px, participant.px_per_cm,
                                               participant.viewing_distance_cm),
            **flags[participant.pk],
            "unit_mis": machine.mis.get(trial.unit_id),
            "mis_delta": machine.delta(trial),
            "occlusion_delta_a": trial.occlusion_delta_a,
            "occlusion_delta_b": trial.occlusion_delta_b,
        }


@contextmanager
def one_snapshot() -> Iterator[None]:
    """A transaction whose queries all see the database as of its first one. By default each statement
    of PostgreSQL sees what was committed when it started: a participant who arrived between the flag
    queries and the response rows would have rows but no flags. Inside a transaction already open
    (a caller's) the caller's isolation stands."""
    if connection.in_atomic_block:
        yield
        return
    with transaction.atomic():
        if connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                cursor.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
        yield


def questionnaire_answers(study: Study) -> dict[str, dict[str, Any]]:
    """Participant pseudonym -> {question: answer}, for the study's participants (previews aside) who sent
    the questionnaire; one query."""
    rows = (Participant.objects.filter(study=study, is_preview=False, questionnaire__isnull=False)
            .values_list("pk", "questionnaire"))
    return {Participant(pk=pk).pseudonym: answers for pk, answers in rows if isinstance(answers, dict)}


def _question_column(values: Sequence[Any]) -> pd.api.extensions.ExtensionArray:
    """One question's answers as a column of one type, so that Parquet can store it and a reader gets the
    same type back from CSV: booleans if every answer is true / false, numbers if every answer is a number,
    text otherwise (a number among text answers becomes its text). Unanswered cells are empty."""
    given = [v for v in values if v is not None]
    if given and all(isinstance(v, bool) for v in given):
        return pd.array(values, dtype="boolean")
    if given and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in given):
        if all(isinstance(v, int) for v in given):
            return pd.array(values, dtype="Int64")
        return pd.array([math.nan if v is None else float(v) for v in values], dtype="float64")
    return pd.array([None if v is None else str(v) for v in values], dtype="string")


def question_columns(answers: Mapping[str, Mapping[str, Any]], participants: Sequence[str]
                     ) -> dict[str, pd.api.extensions.ExtensionArray]:
    """`q_<question>` -> column aligned with `participants` (one pseudonym per row), sorted by question."""
    questions = sorted({key for given in answers.values() for key in given})
    return {f"{QUESTION_PREFIX}{key}": _question_column([answers.get(p, {}).get(key) for p in participants])
            for key in questions}


def response_frame(study: Study) -> pd.DataFrame:
    with one_snapshot():
        rows = list(response_rows(study))
        answers = questionnaire_answers(study)
    frame = pd.DataFrame(rows, columns=COLUMNS)
    questions = question_columns(answers, list(frame["participant"]))
    if questions:
        frame = pd.concat([frame, pd.DataFrame(questions, index=frame.index)], axis=1)
    frame["study_version"] = frame["study_version"].astype("Int64")
    frame["job"] = frame["job"].astype("Int64")
    for column in ("practice_attempt", "confidence", "focus_losses", "fullscreen_exits", "order", "block_index",
                   "n_references"):
        frame[column] = frame[column].astype("Int64")
    frame["webdriver"] = frame["webdriver"].astype("boolean")
    frame["min_references"] = frame["min_references"].astype("boolean")
    for column in ("excluded", "flagged"):
        frame[column] = frame[column].astype(bool)
    # Nullable: an empty cell says the study does not apply that rule.
    for column in FLAG_COLUMNS:
        if column not in ("excluded", "flagged"):
            frame[column] = frame[column].astype("boolean")
    for column in ("unit_mis", "mis_delta", "server_interval_ms", "server_instructions_ms", "px_per_cm",
                   "viewing_distance_cm", "image_size_deg", "occlusion_delta_a", "occlusion_delta_b"):
        frame[column] = frame[column].astype("float64")
    return frame


def write_export(study: Study, path: str | PathLike, fmt: str) -> int:
    frame = response_frame(study)
    if fmt == "csv":
        frame.to_csv(path, index=False)
    elif fmt == "parquet":
        frame.to_parquet(path, index=False)
    else:
        raise ValueError(f"unknown export format {fmt!r}; use csv or parquet")
    return len(frame)
