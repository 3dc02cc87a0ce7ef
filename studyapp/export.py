"""The response export (docs/contracts.md, section 2): one row per response, the contract with
`analysis/`."""
import pandas as pd

from .models import Response

COLUMNS = [
    "study", "participant", "condition", "basis", "layer", "reference_type", "paradigm", "unit",
    "trial_index", "trial_kind", "practice_attempt", "query_a", "query_b", "correct_query", "choice",
    "correct", "confidence", "rt_ms", "client_time", "server_time", "instructions_ms",
    "participant_status", "participant_started", "participant_finished", "recruitment",
]


def _iso(value):
    return value.isoformat() if value else None


def response_rows(study):
    responses = (
        Response.objects.filter(participant__study=study, participant__is_preview=False)
        .select_related("trial__unit", "participant__condition")
        .order_by("server_time", "pk")
    )
    for r in responses.iterator(chunk_size=2000):
        trial, participant = r.trial, r.participant
        condition = participant.condition
        yield {
            "study": study.slug,
            "participant": participant.pseudonym,
            "condition": condition.name,
            "basis": condition.basis,
            "layer": condition.layer,
            "reference_type": condition.reference_type,
            "paradigm": condition.paradigm,
            "unit": trial.unit.key,
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
            "instructions_ms": participant.instructions_ms,
            "participant_status": participant.status,
            "participant_started": _iso(participant.started_at),
            "participant_finished": _iso(participant.finished_at),
            "recruitment": participant.recruitment,
        }


def response_frame(study):
    frame = pd.DataFrame(list(response_rows(study)), columns=COLUMNS)
    for column in ("practice_attempt", "confidence"):
        frame[column] = frame[column].astype("Int64")
    return frame


def write_export(study, path, fmt):
    frame = response_frame(study)
    if fmt == "csv":
        frame.to_csv(path, index=False)
    elif fmt == "parquet":
        frame.to_parquet(path, index=False)
    else:
        raise ValueError(f"unknown export format {fmt!r}; use csv or parquet")
    return len(frame)
