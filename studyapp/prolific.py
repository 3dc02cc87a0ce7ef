"""Reviewing a study's Prolific submissions: which to approve, reject, ask to return or look at, and
what bonus each earns, from what the platform knows about the participant behind each.

Prolific's submissions come from the CSV its web app exports (headers as exported, "Participant id",
"Submission id", "Status", …, read case-insensitively) or from its API (snake_case names: participant_id,
id, status, …); both read through `read_submissions`. The platform stores a person's Prolific id only as
a keyed hash (studyapp.recruitment), so each submission is matched by hashing its participant id with the
study's key.

The rules (each a study setting, shown in the admin):
- completed, not excluded, not flagged: approve;
- catch-trial accuracy below the study's minimum: reject, category FAILED_CHECK (Prolific allows rejecting
  a failed attention check), with the evidence in the message; `failed_catch_decision` review: review;
- excluded for any other reason, or flagged: review, never rejected automatically;
- timed out or returned (here or on Prolific): return;
- screened out here: review (Prolific settles it through the screen-out code);
- a submission with no participant here: review, "no data".
Bonus: `bonus_per_correct` per correct main trial (catch trials not counted), at most `bonus_cap`, for
approved submissions only.
"""

import csv
import io
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path

from django.conf import settings
from django.db.models import Count, Q

from .exclusions import participant_evidence
from .models import Participant, Response
from .recruitment import hash_external_id

APPROVE, REJECT, RETURN, REVIEW = "approve", "reject", "return", "review"
DECISIONS_COLUMNS = ["participant_id", "submission_id", "decision", "reason", "bonus"]
# Prolific's export headers and its API's names for the fields a decision needs, lower-cased.
FIELDS = {
    "participant_id": ("participant id", "participant_id", "participant"),
    "submission_id": ("submission id", "submission_id", "session id", "id"),
    "status": ("status",),
    "started_at": ("started at", "started_at", "started_datetime"),
    "completed_at": ("completed at", "completed_at", "completed_date_time"),
    "completion_code": ("completion code", "entered code", "entered_code", "study_code", "completion_code"),
}
# Prolific's statuses (its export writes "AWAITING REVIEW", its API filters also take AWAITING_REVIEW).
FINAL_STATUSES = {"APPROVED", "REJECTED", "RETURNED", "TIMED-OUT", "SCREENED OUT", "PARTIALLY APPROVED"}
RETURNABLE_STATUSES = {"ACTIVE", "AWAITING REVIEW"}
FAILED_CHECK = "FAILED_CHECK"
# Prolific asks for a rejection message of at least 100 characters.
MIN_REJECTION_MESSAGE = 100
RETURN_REASONS = {
    "timed_out": "The study's time limit passed before you finished it.",
    "returned": "You left the study before finishing it.",
    "not_finished": "You did not finish the study.",
}
CENT = Decimal("0.01")


class SubmissionsFileError(ValueError):
    """A submissions file without the columns a review needs."""


@dataclass(frozen=True)
class Submission:
    participant_id: str
    submission_id: str
    status: str = ""
    started_at: str = ""
    completed_at: str = ""
    completion_code: str = ""


@dataclass(frozen=True)
class Decision:
    participant_id: str
    submission_id: str
    decision: str
    reason: str
    bonus: Decimal
    prolific_status: str = ""
    rejection_message: str = ""
    return_reasons: tuple = ()

    def row(self):
        return {
            "participant_id": self.participant_id,
            "submission_id": self.submission_id,
            "decision": self.decision,
            "reason": self.reason,
            "bonus": f"{self.bonus:.2f}" if self.bonus else "",
        }


def _normalise_status(value):
    return " ".join((value or "").replace("_", " ").upper().split()).replace("TIMED OUT", "TIMED-OUT")


def submission_from_mapping(row):
    """A Submission from one CSV row or one API result (keys matched case-insensitively)."""
    lowered = {str(k).strip().lower(): ("" if v is None else str(v).strip()) for k, v in row.items() if k}
    values = {}
    for field, names in FIELDS.items():
        values[field] = next((lowered[n] for n in names if lowered.get(n)), "")
    values["status"] = _normalise_status(values["status"])
    return Submission(**values)


def read_submissions(text):
    """The submissions of a Prolific export (CSV text); raises SubmissionsFileError when a needed column is
    missing."""
    reader = csv.DictReader(io.StringIO(text.lstrip("\ufeff")))
    headers = {h.strip().lower() for h in reader.fieldnames or [] if h}
    missing = [field for field in ("participant_id", "submission_id") if not any(n in headers for n in FIELDS[field])]
    if missing:
        raise SubmissionsFileError(
            "the submissions file has no "
            + " and no ".join(f"{FIELDS[m][0]!r} column" for m in missing)
            + f" (its columns: {', '.join(sorted(headers)) or 'none'})"
        )
    return [s for s in (submission_from_mapping(row) for row in reader) if s.participant_id]


def match_participants(study, submissions):
    """Prolific participant id -> Participant of this study (any of its versions), by the keyed hash."""
    digests = {
        hash_external_id(settings.PARTICIPANT_ID_KEY, "prolific", s.participant_id): s.participant_id
        for s in submissions
    }
    rows = Participant.objects.filter(
        study_id__in=study.version_ids(), external_id_hash__in=digests, is_preview=False
    ).order_by("study__version")
    return {digests[p.external_id_hash]: p for p in rows}


def correct_main_answers(participants):
    """Participant pk -> number of correct main-trial answers (catch trials not counted)."""
    rows = (
        Response.objects.filter(participant__in=participants)
        .values("participant_id")
        .annotate(n=Count("pk", filter=Q(trial__kind="main", correct=True)))
        .order_by()
    )
    return {row["participant_id"]: row["n"] for row in rows}


def _money(value):
    # The settings are floats; their shortest repr is what the researcher typed (0.05, not 0.0500000…).
    return Decimal(repr(float(value)))


def bonus_for(study, n_correct):
    per = _money(study.bonus_per_correct or 0)
    if per <= 0:
        return Decimal(0)
    amount = per * n_correct
    if study.bonus_cap is not None:
        amount = min(amount, _money(study.bonus_cap))
    return amount.quantize(CENT, rounding=ROUND_HALF_UP)


def rejection_message(study, evidence):
    counts = evidence.get("catch_counts")
    shown = f"{counts[0]} of {counts[1]}" if counts else "too few"
    message = (
        f"Thank you for taking part. The study contained attention-check trials whose answer is "
        f"unambiguous (the image shown is one of the examples on the screen). You answered {shown} of "
        f"them correctly; the study requires at least {study.min_catch_accuracy:.0%}, as its "
        f"instructions said, so we cannot approve this submission."
    )
    # Prolific refuses a rejection message under MIN_REJECTION_MESSAGE characters; this one is longer.
    return message


def _catch_counts(participants):
    rows = (
        Response.objects.filter(participant__in=participants, trial__kind="catch")
        .values("participant_id")
        .annotate(n=Count("pk"), correct=Count("pk", filter=Q(correct=True)))
        .order_by()
    )
    return {row["participant_id"]: (row["correct"], row["n"]) for row in rows}


def decide(study, submissions):
    """One Decision per submission, in the file's order."""
    matched = match_participants(study, submissions)
    participants = list(matched.values())
    by_pk = {}
    for study_id in {p.study_id for p in participants}:
        version = next(p.study for p in participants if p.study_id == study_id)
        rows = participant_evidence(version, only=[p.pk for p in participants if p.study_id == study_id], everyone=True)
        by_pk.update({row["pk"]: row for row in rows})
    correct = correct_main_answers(participants)
    catch = _catch_counts(participants)
    out = []
    for s in submissions:
        participant = matched.get(s.participant_id)
        out.append(
            _decide_one(study, s, participant, by_pk.get(participant.pk) if participant else None, correct, catch)
        )
    return out


def _decide_one(study, s, participant, verdict, correct, catch):
    def decision(kind, reason, bonus=Decimal(0), **extra):
        return Decision(s.participant_id, s.submission_id, kind, reason, bonus, s.status, **extra)

    if participant is None:
        return decision(REVIEW, "no data: no participant here has this Prolific id")
    status = participant.status
    if status == Participant.Status.SCREENED_OUT:
        return decision(
            REVIEW,
            f"screened out ({participant.screen_out_reason or 'eligibility'}); "
            "Prolific settles it through the screen-out code",
        )
    if status in (Participant.Status.TIMED_OUT, Participant.Status.RETURNED) or s.status in ("TIMED-OUT", "RETURNED"):
        key = "timed_out" if status == Participant.Status.TIMED_OUT or s.status == "TIMED-OUT" else "returned"
        return decision(RETURN, key.replace("_", " "), return_reasons=(RETURN_REASONS[key],))
    if status != Participant.Status.COMPLETED:
        return decision(
            REVIEW, f"not finished here ({participant.answered} of {participant.trial_count} trials answered)"
        )
    reasons = verdict["reasons"] if verdict else []
    if verdict and verdict.get("excl_catch_accuracy"):
        counts = catch.get(participant.pk)
        evidence = (
            f"catch trials {counts[0]}/{counts[1]} correct, below {study.min_catch_accuracy:.0%}"
            if counts
            else "catch trials below the minimum"
        )
        if study.failed_catch_decision == study.FailedCatch.REJECT:
            return decision(REJECT, evidence, rejection_message=rejection_message(study, {"catch_counts": counts}))
        return decision(REVIEW, evidence)
    if verdict and (verdict["excluded"] or verdict["flagged"]):
        return decision(REVIEW, "excluded or flagged: " + ", ".join(reasons))
    return decision(APPROVE, "completed", bonus_for(study, correct.get(participant.pk, 0)))


def write_review(decisions, out_dir):
    """decisions.csv (every submission), approve.txt (the approved participant ids, one a line, as
    Prolific's bulk approval takes them) and bonuses.csv (participant_id,amount, as its bulk bonus
    takes them); returns the three paths."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {name: out_dir / name for name in ("decisions.csv", "approve.txt", "bonuses.csv")}
    with paths["decisions.csv"].open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=DECISIONS_COLUMNS)
        writer.writeheader()
        writer.writerows(d.row() for d in decisions)
    paths["approve.txt"].write_text("".join(f"{d.participant_id}\n" for d in decisions if d.decision == APPROVE))
    with paths["bonuses.csv"].open("w", newline="") as f:
        writer = csv.writer(f)
        for d in decisions:
            if d.decision == APPROVE and d.bonus > 0:
                writer.writerow([d.participant_id, f"{d.bonus:.2f}"])
    return paths
