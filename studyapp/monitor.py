"""What a researcher watches while a study runs: per condition, how many started, finished, returned or
timed out, how long finishing took, catch-trial accuracy and how many would be excluded."""
from collections import defaultdict
from statistics import median

from django.db.models import Count, Q

from .models import Participant, Response


def study_monitor(study):
    participants = list(
        Participant.objects.filter(study=study, is_preview=False)
        .values("pk", "condition_id", "status", "started_at", "finished_at", "instructions_ms")
    )
    catch = {
        row["participant_id"]: (row["n_correct"], row["n"])
        for row in Response.objects.filter(participant__study=study, participant__is_preview=False,
                                           trial__kind="catch")
        .values("participant_id").annotate(n=Count("pk"), n_correct=Count("pk", filter=Q(correct=True)))
    }
    by_condition = defaultdict(list)
    for p in participants:
        by_condition[p["condition_id"]].append(p)

    rows = []
    for condition in study.conditions.all():
        members = by_condition[condition.pk]
        completed = [p for p in members if p["status"] == Participant.Status.COMPLETED]
        durations = [(p["finished_at"] - p["started_at"]).total_seconds() / 60 for p in completed if p["finished_at"]]
        n_catch_correct = sum(catch.get(p["pk"], (0, 0))[0] for p in members)
        n_catch = sum(catch.get(p["pk"], (0, 0))[1] for p in members)
        excluded = [p for p in completed if _would_exclude(study, p, catch.get(p["pk"]))]
        rows.append({
            "condition": condition.name,
            "quota": study.participants_per_condition,
            "started": len(members),
            "active": sum(p["status"] == Participant.Status.STARTED for p in members),
            "completed": len(completed),
            "returned": sum(p["status"] == Participant.Status.RETURNED for p in members),
            "timed_out": sum(p["status"] == Participant.Status.TIMED_OUT for p in members),
            "median_minutes": median(durations) if durations else None,
            "catch_accuracy": n_catch_correct / n_catch if n_catch else None,
            "exclusion_rate": len(excluded) / len(completed) if completed else None,
        })
    return rows


def _would_exclude(study, participant, catch):
    if catch and catch[1] and catch[0] / catch[1] < study.min_catch_accuracy:
        return True
    reading = participant["instructions_ms"]
    return reading is not None and reading < 1000 * study.min_instructions_seconds
