"""What a researcher watches while a study runs: per condition, how many started, finished, returned or
timed out, how long finishing took, catch-trial accuracy, how many would be excluded (the rules of
studyapp.exclusions, which also flag the export's rows), and the accuracy people reach on main trials
beside the machine observer's prediction, available before anyone takes part."""
from collections import Counter, defaultdict
from statistics import mean, median

from django.db.models import Count, Q
from django.db.models.functions import Coalesce

from . import assignment, designs
from .exclusions import PARTICIPANT_FIELDS, AnswerCounts, ExclusionRules, answer_counts, flags
from .export import finite_number
from .models import Condition, Participant, Response, Study


def machine_prediction(condition):
    """The mean Machine Interpretability Score of the condition's units: the machine observer's
    accuracy in the reference 2AFC with natural references, the only task it simulates, at the
    pipeline's α (uncalibrated until the analysis fits α to people's answers); None otherwise or when
    the units carry no score."""
    if (condition.paradigm != Condition.Paradigm.REFERENCE_2AFC
            or condition.reference_type != Condition.ReferenceType.NATURAL):
        return None
    scores = [finite_number(v) for v in condition.units().values_list("measures__mis", flat=True)]
    scores = [s for s in scores if s is not None]
    return mean(scores) if scores else None


#: people's accuracy on the occlusion task in Zimmermann et al. (2021, NeurIPS), per reference type: synthetic
#: 68 ± 4 %, natural about 66-67 ± 3 %, none 60 ± 3 % (README, "The occlusion 2AFC")
OCCLUSION_PUBLISHED = {"synthetic": "68 ± 4 %", "natural": "66-67 ± 3 %", "none": "60 ± 3 %"}


def machine_prediction_reason(condition):
    """Why a condition has no machine prediction (None when it has one), as the monitor says beside "—"."""
    if condition.paradigm == Condition.Paradigm.OCCLUSION_2AFC:
        published = OCCLUSION_PUBLISHED.get(condition.reference_type)
        return ("the network itself decides the occlusion task's answer"
                + (f"; Zimmermann et al. (2021) report {published} for people with {condition.reference_type} "
                   "references" if published else ""))
    if condition.paradigm != Condition.Paradigm.REFERENCE_2AFC:
        return "the machine observer simulates the reference 2AFC only"
    if condition.reference_type != Condition.ReferenceType.NATURAL:
        return "the machine observer simulates natural references only"
    if machine_prediction(condition) is not None:
        return None
    if not condition.job.parameters.get("mis_layer"):
        return "the stimulus job ran without mis_layer"
    return "the condition's units carry no machine score"


def main_accuracy(study):
    """Condition pk → (main trials answered, answered correctly), in one grouped query."""
    # The trial's own condition (a within-participant design's participant does several); a list stored
    # before trials named theirs counts under the participant's.
    rows = (
        Response.objects.filter(participant__study=study, participant__is_preview=False, trial__kind="main")
        .annotate(shown_condition=Coalesce("trial__condition_id", "participant__condition_id"))
        .values("shown_condition")
        .annotate(n=Count("pk"), correct=Count("pk", filter=Q(correct=True)))
        .order_by()
    )
    return {row["shown_condition"]: (row["n"], row["correct"]) for row in rows}


def order_counts(study):
    """A within or mixed study's counterbalancing orders: per order its quota, how many started, are
    active or completed it, and its block sequence (condition names); [] for a between design or a
    design that cannot be satisfied (go-live says why)."""
    if study.design == Study.Design.BETWEEN:
        return []
    try:
        conditions, orders, quota = assignment.study_plan(study)
    except designs.DesignError:
        return []
    rows = (Participant.objects.filter(study=study, is_preview=False, order__isnull=False)
            .values("order", "status").annotate(n=Count("pk")).order_by())
    counts = defaultdict(Counter)
    for row in rows:
        counts[row["order"]][row["status"]] += row["n"]
    return [{"order": order.index, "quota": quota[order.index], "started": sum(counts[order.index].values()),
             "active": counts[order.index][Participant.Status.STARTED],
             "completed": counts[order.index][Participant.Status.COMPLETED],
             "blocks": [conditions[i].name for i in order.blocks]} for order in orders]


def study_monitor(study):
    participants = list(
        Participant.objects.filter(study=study, is_preview=False)
        .values(*PARTICIPANT_FIELDS, "condition_id", "status")
    )
    rules = ExclusionRules.for_study(study)
    counts = answer_counts(study, rules.min_answer_interval_ms)
    answered = main_accuracy(study)
    by_condition = defaultdict(list)
    for p in participants:
        by_condition[p["condition_id"]].append(p)

    rows = []
    for condition in study.conditions.select_related("job"):
        members = by_condition[condition.pk]
        completed = [p for p in members if p["status"] == Participant.Status.COMPLETED]
        durations = [(p["finished_at"] - p["started_at"]).total_seconds() / 60 for p in completed if p["finished_at"]]
        n_catch_correct = sum(counts.get(p["pk"], AnswerCounts()).catch_correct for p in members)
        n_catch = sum(counts.get(p["pk"], AnswerCounts()).catch for p in members)
        excluded = [p for p in completed if flags(rules, p, counts.get(p["pk"]))["excluded"]]
        rows.append({
            "condition": condition.name,
            "paradigm": condition.get_paradigm_display(),
            "quota": study.participants_per_condition,
            "started": len(members),
            "active": sum(p["status"] == Participant.Status.STARTED for p in members),
            "completed": len(completed),
            "returned": sum(p["status"] == Participant.Status.RETURNED for p in members),
            "timed_out": sum(p["status"] == Participant.Status.TIMED_OUT for p in members),
            "screened_out": sum(p["status"] == Participant.Status.SCREENED_OUT for p in members),
            "median_minutes": median(durations) if durations else None,
            "catch_accuracy": n_catch_correct / n_catch if n_catch else None,
            "exclusion_rate": len(excluded) / len(completed) if completed else None,
            "main_accuracy": answered[condition.pk][1] / answered[condition.pk][0] if condition.pk in answered else None,
            "machine_accuracy": machine_prediction(condition),
            "machine_reason": machine_prediction_reason(condition),
        })
    return rows

