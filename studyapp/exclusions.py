"""A study's participant exclusion rules, evaluated in one place: the live monitor's "would be excluded"
rate and the export's flag columns (docs/contracts.md §2) both come from `participant_flags`.

The rules are the study's settings: catch-trial accuracy below a minimum, one response side used on
every main and catch trial, instructions read too quickly, total time outside a window. `analysis/`
applies the same rules to an export on its own (analysis.exclusions); an export's flags and the
analysis's rules with the study's settings agree participant for participant.
"""
from dataclasses import dataclass

from django.db.models import Count, Q

from .models import Participant, Response

RULES = ("catch_accuracy", "one_side", "instructions_time", "total_time")
FLAG_COLUMNS = ["excluded", *(f"excl_{rule}" for rule in RULES)]


@dataclass(frozen=True)
class ExclusionRules:
    """None (False for the one-side rule) turns a rule off."""

    min_catch_accuracy: float | None = 0.8
    exclude_one_side: bool = True
    min_instructions_seconds: float | None = 15.0
    min_total_minutes: float | None = None
    max_total_minutes: float | None = None

    @classmethod
    def for_study(cls, study):
        return cls(min_catch_accuracy=study.min_catch_accuracy, exclude_one_side=study.exclude_one_side,
                   min_instructions_seconds=study.min_instructions_seconds,
                   min_total_minutes=study.min_total_minutes, max_total_minutes=study.max_total_minutes)

    def applies(self, rule):
        return {
            "catch_accuracy": self.min_catch_accuracy is not None,
            "one_side": bool(self.exclude_one_side),
            "instructions_time": self.min_instructions_seconds is not None,
            "total_time": self.min_total_minutes is not None or self.max_total_minutes is not None,
        }[rule]


@dataclass(frozen=True)
class AnswerCounts:
    catch: int = 0
    catch_correct: int = 0
    sides: int = 0  # distinct choices over main and catch trials (practice does not count)


def answer_counts(study):
    """Participant pk → AnswerCounts, in one grouped query."""
    counted = Q(trial__kind__in=["main", "catch"])
    rows = (
        Response.objects.filter(participant__study=study, participant__is_preview=False)
        .values("participant_id")
        .annotate(
            catch=Count("pk", filter=Q(trial__kind="catch")),
            catch_correct=Count("pk", filter=Q(trial__kind="catch", correct=True)),
            sides=Count("choice", distinct=True, filter=counted),
        )
        .order_by()
    )
    return {row["participant_id"]: AnswerCounts(row["catch"], row["catch_correct"], row["sides"]) for row in rows}


def flags(rules, participant, counts=None):
    """Each rule's verdict for one participant: True (excluded by it), False, or None where the study does
    not apply the rule; `excluded` is True when any rule says so. `participant` is a mapping with
    instructions_ms, started_at and finished_at; a rule with nothing to judge yet (no catch trial answered,
    instructions not read, not finished) does not exclude."""
    counts = counts or AnswerCounts()
    verdict = {}
    if rules.applies("catch_accuracy"):
        accuracy = counts.catch_correct / counts.catch if counts.catch else None
        verdict["catch_accuracy"] = accuracy is not None and accuracy < rules.min_catch_accuracy
    if rules.applies("one_side"):
        verdict["one_side"] = counts.sides == 1
    if rules.applies("instructions_time"):
        reading = participant["instructions_ms"]
        verdict["instructions_time"] = reading is not None and reading < 1000 * rules.min_instructions_seconds
    if rules.applies("total_time"):
        started, finished = participant["started_at"], participant["finished_at"]
        if started is None or finished is None:
            verdict["total_time"] = False
        else:
            minutes = (finished - started).total_seconds() / 60
            low = rules.min_total_minutes if rules.min_total_minutes is not None else -float("inf")
            high = rules.max_total_minutes if rules.max_total_minutes is not None else float("inf")
            verdict["total_time"] = minutes < low or minutes > high
    out = {"excluded": any(verdict.values())}
    out.update({f"excl_{rule}": verdict.get(rule) for rule in RULES})
    return out


def participant_flags(study, rules=None):
    """Participant pk → its flags (`FLAG_COLUMNS`) under the study's rules; two queries in all."""
    rules = rules or ExclusionRules.for_study(study)
    counts = answer_counts(study)
    participants = Participant.objects.filter(study=study, is_preview=False).values(
        "pk", "instructions_ms", "started_at", "finished_at")
    return {p["pk"]: flags(rules, p, counts.get(p["pk"])) for p in participants}
