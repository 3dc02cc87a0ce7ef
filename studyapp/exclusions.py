"""A study's participant exclusion rules and integrity flags, evaluated in one place: the live monitor
(its "would be excluded" rate and its list of flagged participants), the admin and the export's
`excl_*` / `flag_*` columns (docs/contracts.md §2) all come from `participant_flags`.

Exclusion rules (the study's settings): catch-trial accuracy below a minimum, one response side used on
every main and catch trial (from the number of answers at which an honest participant does that by chance
less often than the study's `one_side_alpha`), instructions read too quickly, total time outside a window, and answers
arriving faster than a person can give them. Every time they judge is the server's: instructions from
the consent's answer (which served them) to the instructions' end arriving, total time from start to
the questionnaire arriving, and the interval between two answers' arrivals. The browser's own figures
stay in the export as secondary columns.

Flags are evidence of automation or inattention, each a study setting: a browser that says it is
automated (`navigator.webdriver`), focus or visibility losses and full-screen exits during the trials
beyond a study's allowance, and a client reading time longer than the server could have measured. A
flagged participant counts as excluded (`excl_flagged`) where the study says so, and is listed either way.

`analysis/` applies the same rules to an export on its own (analysis.exclusions); an export's verdicts and
the analysis's rules with the study's settings agree participant for participant.
"""
from collections import defaultdict
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any, Self

from django.db.models import Count, Q, QuerySet, Sum

from analysis.exclusions import ONE_SIDE_ALPHA, one_side_min_answers

from .models import Participant, Response, Study

RULES = ("catch_accuracy", "one_side", "instructions_time", "total_time", "answer_interval", "flagged")
FLAGS = ("webdriver", "focus_loss", "fullscreen_exit", "client_time")
EXCLUSION_COLUMNS = ["excluded", *(f"excl_{rule}" for rule in RULES)]
INTEGRITY_COLUMNS = ["flagged", *(f"flag_{flag}" for flag in FLAGS)]
FLAG_COLUMNS = [*EXCLUSION_COLUMNS, *INTEGRITY_COLUMNS]
# The browser starts its reading clock after the consent's answer arrived and stops it before the
# instructions' request leaves, so its figure is below the server's; the margin absorbs timer coarseness.
CLIENT_TIME_TOLERANCE_MS = 1000.0
PARTICIPANT_FIELDS = ("pk", "instructions_ms", "instructions_at", "consented_at", "started_at", "finished_at")


@dataclass(frozen=True)
class ExclusionRules:
    """None (False for the switches) turns a rule or a flag off."""

    min_catch_accuracy: float | None = 0.8
    exclude_one_side: bool = True
    one_side_alpha: float = ONE_SIDE_ALPHA
    min_instructions_seconds: float | None = 15.0
    min_total_minutes: float | None = None
    max_total_minutes: float | None = None
    min_answer_interval_ms: float = 1500.0
    max_fast_answer_share: float | None = 0.25
    flag_webdriver: bool = True
    max_focus_losses: int | None = 2
    max_fullscreen_exits: int | None = 1
    flag_client_time: bool = True
    exclude_flagged: bool = True

    @classmethod
    def for_study(cls, study: Study) -> Self:
        interval = study.min_answer_interval_ms
        return cls(min_catch_accuracy=study.min_catch_accuracy, exclude_one_side=study.exclude_one_side,
                   one_side_alpha=study.one_side_alpha,
                   min_instructions_seconds=study.min_instructions_seconds,
                   min_total_minutes=study.min_total_minutes, max_total_minutes=study.max_total_minutes,
                   min_answer_interval_ms=float(study.response_lock_ms if interval is None else interval),
                   max_fast_answer_share=study.max_fast_answer_share, flag_webdriver=study.flag_webdriver,
                   max_focus_losses=study.max_focus_losses, max_fullscreen_exits=study.max_fullscreen_exits,
                   flag_client_time=study.flag_client_time, exclude_flagged=study.exclude_flagged)

    def applies(self, rule: str) -> bool:
        return {
            "catch_accuracy": self.min_catch_accuracy is not None,
            "one_side": bool(self.exclude_one_side),
            "instructions_time": self.min_instructions_seconds is not None,
            "total_time": self.min_total_minutes is not None or self.max_total_minutes is not None,
            "answer_interval": self.max_fast_answer_share is not None,
            "flagged": bool(self.exclude_flagged),
            "webdriver": bool(self.flag_webdriver),
            "focus_loss": self.max_focus_losses is not None,
            "fullscreen_exit": self.max_fullscreen_exits is not None,
            "client_time": bool(self.flag_client_time),
        }[rule]


@dataclass(frozen=True)
class AnswerCounts:
    catch: int = 0
    catch_correct: int = 0
    sides: int = 0  # distinct choices over main and catch trials (practice does not count)
    answered: int = 0  # main and catch answers
    focus_losses: int = 0
    fullscreen_exits: int = 0
    webdriver: int = 0  # answers whose browser reported navigator.webdriver
    intervals: int = 0  # answers with a previous answer to measure from
    fast: int = 0  # of those, arriving sooner than the minimum interval after the previous one


def _responses(study: Study, only: Collection[int] | None = None) -> QuerySet[Response]:
    responses = Response.objects.filter(participant__study=study, participant__is_preview=False)
    return responses if only is None else responses.filter(participant_id__in=only)


def answer_intervals(study: Study, only: Collection[int] | None = None) -> dict[int, list[float]]:
    """Participant pk → the server's intervals (ms) between consecutive answers, in arrival order."""
    rows = (_responses(study, only).order_by("participant_id", "server_time", "pk")
            .values_list("participant_id", "server_time"))
    out, last = defaultdict(list), {}
    for participant_id, arrived in rows.iterator(chunk_size=5000):
        previous = last.get(participant_id)
        if previous is not None:
            out[participant_id].append((arrived - previous).total_seconds() * 1000)
        last[participant_id] = arrived
    return out


def answer_counts(study: Study, min_interval_ms: float | None = None, only: Collection[int] | None = None
                  ) -> dict[int, AnswerCounts]:
    """Participant pk → AnswerCounts, in one grouped query and one ordered scan of arrival times; `only`,
    the participant pks to count (default: all of the study's)."""
    counted = Q(trial__kind__in=["main", "catch"])
    rows = (
        _responses(study, only)
        .values("participant_id")
        .annotate(
            catch=Count("pk", filter=Q(trial__kind="catch")),
            catch_correct=Count("pk", filter=Q(trial__kind="catch", correct=True)),
            sides=Count("choice", distinct=True, filter=counted),
            answered=Count("pk", filter=counted),
            focus_losses=Sum("focus_losses", default=0),
            fullscreen_exits=Sum("fullscreen_exits", default=0),
            webdriver=Count("pk", filter=Q(webdriver=True)),
        )
        .order_by()
    )
    limit = ExclusionRules.for_study(study).min_answer_interval_ms if min_interval_ms is None else min_interval_ms
    intervals = answer_intervals(study, only)
    return {
        row["participant_id"]: AnswerCounts(
            catch=row["catch"], catch_correct=row["catch_correct"], sides=row["sides"], answered=row["answered"],
            focus_losses=row["focus_losses"], fullscreen_exits=row["fullscreen_exits"], webdriver=row["webdriver"],
            intervals=len(intervals[row["participant_id"]]),
            fast=sum(1 for ms in intervals[row["participant_id"]] if ms < limit))
        for row in rows
    }


def server_instructions_ms(participant: Mapping[str, Any]) -> float | None:
    """The instructions' reading time as the server measured it, from its answer to the consent (which
    served them) to the instructions' end arriving; None before then or for a participant stored before
    the server recorded it."""
    served, done = participant.get("consented_at"), participant.get("instructions_at")
    if served is None or done is None:
        return None
    return (done - served).total_seconds() * 1000


def flags(rules: ExclusionRules, participant: Mapping[str, Any], counts: AnswerCounts | None = None
          ) -> dict[str, bool | None]:
    """Each rule's and flag's verdict for one participant: True, False, or None where the study does not
    apply it; `excluded` is True when any exclusion rule says so, `flagged` when any flag does.
    `participant` is a mapping with PARTICIPANT_FIELDS; a rule with nothing to judge yet (no catch trial
    answered, instructions not read, not finished) does not exclude."""
    counts = counts or AnswerCounts()
    server_reading = server_instructions_ms(participant)
    flag = {}
    if rules.applies("webdriver"):
        flag["webdriver"] = counts.webdriver > 0
    if rules.applies("focus_loss"):
        flag["focus_loss"] = counts.focus_losses > rules.max_focus_losses
    if rules.applies("fullscreen_exit"):
        flag["fullscreen_exit"] = counts.fullscreen_exits > rules.max_fullscreen_exits
    if rules.applies("client_time"):
        client = participant["instructions_ms"]
        flag["client_time"] = (server_reading is not None and client is not None
                               and client > server_reading + CLIENT_TIME_TOLERANCE_MS)
    flagged = any(flag.values())

    verdict = {}
    if rules.applies("catch_accuracy"):
        accuracy = counts.catch_correct / counts.catch if counts.catch else None
        verdict["catch_accuracy"] = accuracy is not None and accuracy < rules.min_catch_accuracy
    if rules.applies("one_side"):
        # One side throughout judged by how unlikely it is for an honest participant (analysis.exclusions).
        verdict["one_side"] = (counts.sides == 1
                               and counts.answered >= one_side_min_answers(rules.one_side_alpha))
    if rules.applies("instructions_time"):
        # The browser's figure only for participants stored before the server measured the reading.
        reading = server_reading if participant.get("instructions_at") is not None else participant["instructions_ms"]
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
    if rules.applies("answer_interval"):
        verdict["answer_interval"] = (bool(counts.intervals)
                                      and counts.fast / counts.intervals > rules.max_fast_answer_share)
    if rules.applies("flagged"):
        verdict["flagged"] = flagged
    out = {"excluded": any(verdict.values())}
    out.update({f"excl_{rule}": verdict.get(rule) for rule in RULES})
    out["flagged"] = flagged
    out.update({f"flag_{name}": flag.get(name) for name in FLAGS})
    return out


def participant_flags(study: Study, rules: ExclusionRules | None = None) -> dict[int, dict[str, bool | None]]:
    """Participant pk → its verdicts (`FLAG_COLUMNS`) under the study's rules; three queries in all."""
    rules = rules or ExclusionRules.for_study(study)
    counts = answer_counts(study, rules.min_answer_interval_ms)
    participants = Participant.objects.filter(study=study, is_preview=False).values(*PARTICIPANT_FIELDS)
    return {p["pk"]: flags(rules, p, counts.get(p["pk"])) for p in participants}


def participant_evidence(study: Study, rules: ExclusionRules | None = None, only: Collection[int] | None = None,
                         everyone: bool = False) -> list[dict[str, Any]]:
    """One row per participant who is flagged or excluded (`everyone`: per participant), for the monitor
    and the admin: the verdicts beside the evidence they rest on (server reading time, too-fast answers,
    interaction counts). `only`: the participant pks to look at."""
    rules = rules or ExclusionRules.for_study(study)
    counts = answer_counts(study, rules.min_answer_interval_ms, only)
    participants = Participant.objects.filter(study=study, is_preview=False)
    if only is not None:
        participants = participants.filter(pk__in=only)
    rows = []
    for p in participants.order_by("pk").values(*PARTICIPANT_FIELDS, "status"):
        c = counts.get(p["pk"], AnswerCounts())
        verdict = flags(rules, p, c)
        if not (everyone or verdict["flagged"] or verdict["excluded"]):
            continue
        rows.append({
            "participant": f"P{p['pk']:05d}", "pk": p["pk"], "status": p["status"],
            "reasons": [column for column in FLAG_COLUMNS
                        if column not in ("excluded", "flagged") and verdict[column]],
            "server_instructions_ms": server_instructions_ms(p), "client_instructions_ms": p["instructions_ms"],
            "fast_answers": c.fast, "intervals": c.intervals, "focus_losses": c.focus_losses,
            "fullscreen_exits": c.fullscreen_exits, "webdriver": c.webdriver > 0, **verdict,
        })
    return rows
