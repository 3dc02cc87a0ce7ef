"""The admin's study change form as a browser would POST it, for tests of the admin's save paths."""
from django.forms.models import model_to_dict

STUDY_FORM_FIELDS = [f for f in ("title", "slug", "status", "seed", "consent_text", "instructions_text",
                                 "debrief_text", "n_practice", "practice_max_attempts", "n_main", "catch_ratio",
                                 "response_lock_ms", "min_width", "min_height", "recruitment", "completion_url",
                                 "completion_code", "participants_per_condition", "time_limit_minutes",
                                 "consent_grace_minutes", "min_catch_accuracy", "min_instructions_seconds", "one_side_alpha",
                                 "min_answer_interval_ms", "max_fast_answer_share", "max_focus_losses",
                                 "max_fullscreen_exits")]
STUDY_FORM_CHECKBOXES = ["practice_feedback", "confidence", "fullscreen", "allow_plain_link", "exclude_one_side",
                         "flag_webdriver", "flag_client_time", "exclude_flagged"]


def study_form(study, conditions=None, **changes):
    """The admin change form's POST for `study` as stored, with `changes`; `conditions` (name → changes)
    edits its condition rows."""
    values = model_to_dict(study)
    data = {k: "" if values.get(k) is None else values[k] for k in STUDY_FORM_FIELDS}
    data.update({k: "on" for k in STUDY_FORM_CHECKBOXES if values.get(k)})
    rows = list(study.conditions.order_by("pk"))
    data.update({"conditions-TOTAL_FORMS": len(rows), "conditions-INITIAL_FORMS": len(rows),
                 "conditions-MIN_NUM_FORMS": 0, "conditions-MAX_NUM_FORMS": 1000})
    for i, row in enumerate(rows):
        fields = {"id": row.pk, "study": study.pk, "name": row.name, "job": row.job_id, "layer": row.layer,
                  "basis": row.basis, "reference_type": row.reference_type, "paradigm": row.paradigm,
                  **(conditions or {}).get(row.name, {})}
        data.update({f"conditions-{i}-{k}": v for k, v in fields.items()})
    data.update(changes)
    return data
