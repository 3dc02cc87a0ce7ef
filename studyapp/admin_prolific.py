"""The admin's part of running a study on Prolific: the study's eligibility, screen and review settings,
the participant list searchable by recruitment id (hashed with the study's key, as stored), a withdrawal
action that deletes a participant's data with an audit line, and the record of Prolific actions.

Kept beside admin.py so that the Prolific pieces stay in one place: the app's ready() imports it once the
admin has discovered admin.py, and it extends the classes registered there (taken from the admin site, so
that neither module imports the other)."""

from django.contrib import admin, messages

from . import withdrawal
from .admin_permissions import ViewOnly
from .models import Participant, ProlificAction, Study

StudyAdmin = type(admin.site._registry[Study])
BaseParticipantAdmin = type(admin.site._registry[Participant])

ELIGIBILITY = (
    "Eligibility and screen",
    {
        "fields": [
            "desktop_only",
            "supported_browsers",
            "virtual_chinrest",
            "min_viewing_distance_cm",
            "max_viewing_distance_cm",
            "image_visual_angle_deg",
            "screen_out_code",
            "screen_out_url",
        ],
        "description": "A participant who fails a check (window too small after resizing, phone or tablet in a "
        "desktop-only study, unsupported browser, viewing distance outside the range) is screened "
        "out: sent to the screen-out URL with Prolific's screen-out code, and their slot freed.",
    },
)
REVIEW = (
    "Prolific review and bonuses",
    {
        "fields": ["prolific_study_id", "failed_catch_decision", "bonus_per_correct", "bonus_cap"],
        "description": "What `manage.py prolific_review` decides: approve a completed, unexcluded, unflagged "
        "submission; reject failed catch trials (or review them, as set); review other exclusions, "
        "flags and screen-outs; ask timed-out and returned submissions to return. The bonus is "
        "per correct main trial, capped.",
    },
)


def _add_fieldsets():
    names = [name for name, _ in StudyAdmin.fieldsets]
    if ELIGIBILITY[0] in names:
        return
    # Before the change log, which stays last.
    at = names.index("Change log") if "Change log" in names else len(names)
    StudyAdmin.fieldsets = [*StudyAdmin.fieldsets[:at], ELIGIBILITY, REVIEW, *StudyAdmin.fieldsets[at:]]


_add_fieldsets()
# A form posted without them (from before these settings) keeps the stored values, as the design fields do.
_KEPT_WHEN_OMITTED = ("failed_catch_decision", "bonus_per_correct")
StudyAdmin.DESIGN_FIELDS = (
    *StudyAdmin.DESIGN_FIELDS,
    *(f for f in _KEPT_WHEN_OMITTED if f not in StudyAdmin.DESIGN_FIELDS),
)


class ParticipantAdmin(BaseParticipantAdmin):
    # The search box takes a Prolific id or MTurk worker id: it is hashed as stored, never kept.
    search_fields = ["external_id_hash"]
    search_help_text = "a Prolific id or MTurk worker id (hashed with the study's key, as stored)"
    actions = ["withdraw"]

    def get_search_results(self, request, queryset, search_term):
        if not search_term.strip():
            return queryset, False
        return withdrawal.search(queryset, search_term), False

    @admin.action(description="Delete the selected participants' data (withdrawal)", permissions=["delete"])
    def withdraw(self, request, queryset):
        n = 0
        for participant in queryset:
            withdrawal.delete_participant(participant, author=request.user)
            n += 1
        self.message_user(
            request,
            f"Deleted {n} participant(s) with their trials and responses; the study's change log records it.",
            messages.SUCCESS,
        )

    def delete_model(self, request, obj):
        withdrawal.delete_participant(obj, author=request.user)

    def delete_queryset(self, request, queryset):
        for participant in queryset:
            withdrawal.delete_participant(participant, author=request.user)


admin.site.unregister(Participant)
admin.site.register(Participant, ParticipantAdmin)


@admin.register(ProlificAction)
class ProlificActionAdmin(ViewOnly, admin.ModelAdmin):
    list_display = ["study", "kind", "submission_id", "bulk_id", "state", "created", "finished"]
    list_filter = ["study", "kind", "state"]
    readonly_fields = [f.name for f in ProlificAction._meta.fields]
