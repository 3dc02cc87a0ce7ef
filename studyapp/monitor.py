"""What a researcher watches while a study runs: per condition, how many started, finished, returned or
timed out, how long finishing took, catch-trial accuracy and how many would be excluded (the rules of
studyapp.exclusions, which also flag the export's rows)."""
from collections import defaultdict
from statistics import median

from .exclusions import AnswerCounts, ExclusionRules, answer_counts, flags
from .models import Participant


def study_monitor(study):
    participants = list(
        Participant.objects.filter(study=study, is_preview=False)
        .values("pk", "condition_id", "status", "started_at", "finished_at", "instructions_ms")
    )
    counts = answer_counts(study)
    rules = ExclusionRules.for_study(study)
    by_condition = defaultdict(list)
    for p in participants:
        by_condition[p["condition_id"]].append(p)

    rows = []
    for condition in study.conditions.all():
        members = by_condition[condition.pk]
        completed = [p for p in members if p["status"] == Participant.Status.COMPLETED]
        durations = [(p["finished_at"] - p["started_at"]).total_seconds() / 60 for p in completed if p["finished_at"]]
        n_catch_correct = sum(counts.get(p["pk"], AnswerCounts()).catch_correct for p in members)
        n_catch = sum(counts.get(p["pk"], AnswerCounts()).catch for p in members)
        excluded = [p for p in completed if flags(rules, p, counts.get(p["pk"]))["excluded"]]
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

