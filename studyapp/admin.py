"""The researcher's door: networks, image sets, stimulus jobs, units, studies and their data."""
import functools
import io
import logging
import re

from django import forms
from django.conf import settings
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db import transaction
from django.db.models import Count, Q
from django.http import Http404, HttpResponse, JsonResponse
from django.middleware.csrf import get_token
from django.shortcuts import get_object_or_404, redirect
from django.template.loader import render_to_string
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.html import format_html, format_html_join
from django.views.static import serve

from stimuli.artifact import ManifestError, figure_files, layer_summaries, sobol_summary, stage_timings

from . import arrivals, assignment, checks, designs, golive, jobs, lifecycle, participation, studyfile, tasks, versions
from .admin_forms import (
    MEASURES,
    ConditionForm,
    StimulusJobForm,
    StudyForm,
    format_number,
    format_ratio,
    measure_help,
    measure_label,
    mis_reason,
)
from .admin_permissions import NoAddOrChange, ViewOnly
from .exclusions import participant_evidence
from .export import write_export
from .models import (
    Condition,
    Exemplar,
    ImageSet,
    Network,
    Participant,
    Response,
    SobolAnalysis,
    StimulusJob,
    Study,
    StudyChange,
    Trial,
    Unit,
)
from .monitor import order_counts, study_monitor
from .recruitment import PLATFORM_PARAMETERS

THUMBNAILS_PER_ROLE = 9
log = logging.getLogger(__name__)
# Pictures in ARTIFACT_ROOT a researcher may look at: a job's images and figures, the region analyses' pictures,
# never its manifest or a folder.
RESEARCH_PICTURE = re.compile(r"(job-\d+/images|regions)/[0-9a-f]{20}\.png|job-\d+/figures/[\w.-]+\.svg")


def recruitment_urls(request, study):
    """The study's link as its recruitment platform wants it pasted, built from the host the researcher
    reached the admin on: (platform, URL, what the platform does with it)."""
    base = request.build_absolute_uri(study.get_absolute_url())
    if study.recruitment == Study.Recruitment.PROLIFIC:
        # Prolific replaces {{%NAME%}} by the participant's values when it sends them to the study.
        id_key, info_keys = PLATFORM_PARAMETERS["prolific"]
        query = "&".join(f"{key}={{{{%{key}%}}}}" for key in (id_key, *info_keys))
        return [("Prolific: the study URL (choose \"URL parameters\")", f"{base}?{query}",
                 "Prolific fills in each participant's id, the study's and the session's.")]
    if study.recruitment == Study.Recruitment.MTURK:
        id_key, info_keys = PLATFORM_PARAMETERS["mturk"]
        return [("MTurk: the ExternalQuestion URL", base,
                 f"MTurk appends {', '.join((id_key, *info_keys))} to it itself; leave the URL without them.")]
    return [("Plain link", base, "Anyone with this link can take part; no platform parameters are expected.")]


def research_picture_url(path):
    return reverse("admin:studyapp_research_picture", args=[path])


@admin.register(Network)
class NetworkAdmin(admin.ModelAdmin):
    list_display = ["name", "source", "weights", "created"]


@admin.register(ImageSet)
class ImageSetAdmin(admin.ModelAdmin):
    list_display = ["name", "source", "path", "created"]


# Every background job shows its lifecycle with the same columns and fields, and is launched and
# cancelled with the same actions.
LIFECYCLE_COLUMNS = ["status", "stage", "progress_percent", "attempts", "created", "finished"]
LIFECYCLE_FIELDS = ["status", "stage", "progress_percent", "error_text", "attempts", "created", "started", "finished"]


class JobAdmin(admin.ModelAdmin):
    """A `models.Job`: what the researcher sets (`inputs`), its lifecycle, then what its work produced
    (`results`, `result_columns`)."""

    inputs = []
    results = []
    result_columns = []
    list_filter = ["status", "network"]
    actions = ["launch", "cancel"]

    def get_list_display(self, request):
        return ["__str__", *LIFECYCLE_COLUMNS, *self.result_columns]

    def changelist_view(self, request, extra_context=None):
        # At 1,366 px the navigation sidebar leaves the list too narrow for its columns; the breadcrumbs
        # lead back.
        return super().changelist_view(request, {**(extra_context or {}), "is_nav_sidebar_enabled": False})

    def get_readonly_fields(self, request, obj=None):
        return [*LIFECYCLE_FIELDS, *self.results]

    def get_fields(self, request, obj=None):
        return [*self.inputs, *self.get_readonly_fields(request, obj)]

    # The stages a job's row passes through, in order, for its overall progress; () where the work
    # reports one stage only.
    stages = ()

    class Media:
        js = ["studyapp/admin-job-progress.js"]
        css = {"all": ["studyapp/admin-studyapp.css"]}

    def progress_state(self, job):
        """What the job's progress shows, and what its page's script polls: status, stage and percentages."""
        position = jobs.overall_progress(job, self.stages) if self.stages else None
        overall = position[2] if position else (100.0 if job.status == job.Status.SUCCEEDED else job.progress)
        if job.status == job.Status.SUCCEEDED:
            text = "done"
        elif position and job.stage:
            text = f"stage {position[0]} of {position[1]}: {job.stage} {job.progress:.0f} %"
        elif job.stage:
            text = f"{job.stage} {job.progress:.0f} %"
        else:
            text = "not started" if job.status == job.Status.QUEUED else ""
        return {"status": job.status, "status_display": job.get_status_display(), "stage": job.stage or "",
                "stage_progress": job.progress, "overall": round(overall, 1), "text": text,
                "active": job.status in (job.Status.QUEUED, job.Status.RUNNING, job.Status.CANCEL_REQUESTED)}

    @admin.display(description="progress")
    def progress_percent(self, job):
        state = self.progress_state(job)
        url = reverse(f"admin:{job._meta.app_label}_{job._meta.model_name}_progress")
        return format_html(
            "<span class='job-progress' data-url='{}' data-pk='{}' data-active='{}'>"
            "<progress max='100' value='{}'></progress> <span class='job-overall'>{} %</span>"
            "<span class='job-stage'>{}</span></span>",
            url, job.pk, "1" if state["active"] else "", state["overall"], f"{state['overall']:.0f}", state["text"])

    def get_urls(self):
        info = self.model._meta.app_label, self.model._meta.model_name
        own = [path("progress/", self.admin_site.admin_view(self.progress_view), name=f"{info[0]}_{info[1]}_progress")]
        return own + super().get_urls()

    def progress_view(self, request):
        """The progress of the jobs named by `pk` (repeated), as JSON, for the script that refreshes
        the list and the job's page without reloading them."""
        if not self.has_view_permission(request):
            raise PermissionDenied
        wanted = [int(pk) for pk in request.GET.getlist("pk") if pk.isdigit()][:200]
        rows = self.model.objects.filter(pk__in=wanted)
        return JsonResponse({"jobs": {str(job.pk): self.progress_state(job) for job in rows}})

    @admin.display(description="error")
    def error_text(self, job):
        return format_html("<pre style='white-space:pre-wrap'>{}</pre>", job.error) if job.error else "—"

    def save_model(self, request, obj, form, change):
        super().save_model(request, obj, form, change)
        if not change:
            tasks.launch(obj)
            # After the publish, which waits for the commit: a queue that cannot be reached shows its
            # own page, and no "queued" message is left behind to contradict it.
            name = obj._meta.verbose_name.capitalize()
            transaction.on_commit(
                lambda: messages.info(request, f"{name} {obj.pk} queued; its progress shows in the list."))

    @admin.action(description="Launch (again) the selected %(verbose_name_plural)s")
    def launch(self, request, queryset):
        for job in lifecycle.requeue(queryset):
            tasks.launch(job)
        messages.info(request, "Launched.")

    @admin.action(description="Cancel the selected %(verbose_name_plural)s")
    def cancel(self, request, queryset):
        n = lifecycle.request_cancel(queryset)
        messages.info(request, f"Asked {n} of the selected {queryset.model._meta.verbose_name_plural} to stop.")


def _summary_error(display):
    """A job page's display of the job's summary, showing a summary that breaks the artifact contract as an
    error that names the key (stimuli.artifact.ManifestError) rather than as an empty field."""
    @functools.wraps(display)
    def shown(self, job):
        try:
            return display(self, job)
        except ManifestError as exc:
            log.error("stimulus job %s: its summary breaks the artifact contract: %s", job.pk, exc)
            return format_html("<p class='errornote'>The artifact's summary cannot be read: {}</p>", str(exc))
    return shown


@admin.register(StimulusJob)
class StimulusJobAdmin(JobAdmin):
    form = StimulusJobForm
    inputs = StimulusJobForm.Meta.fields
    results = ["shard_table", "stage_times", "measures_table", "curves", "region_sobol", "artifact"]
    result_columns = ["unit_count"]
    actions = [*JobAdmin.actions, "relaunch_as_new_job"]

    # A job that has run keeps the settings its units were made with (the model refuses a change too).
    def get_readonly_fields(self, request, obj=None):
        fields = super().get_readonly_fields(request, obj)
        return [*self.inputs, *fields] if obj is not None and obj.has_run() else fields

    def get_fields(self, request, obj=None):
        return list(dict.fromkeys([*self.inputs, *self.get_readonly_fields(request, obj)]))

    @admin.action(description="Relaunch as new job (a copy of the settings to change)")
    def relaunch_as_new_job(self, request, queryset):
        if queryset.count() != 1:
            messages.error(request, "Choose one stimulus job to relaunch as a new job.")
            return None
        return redirect(f"{reverse('admin:studyapp_stimulusjob_add')}?from_job={queryset.get().pk}")

    def get_changeform_initial_data(self, request):
        source = request.GET.get("from_job", "")
        job = StimulusJob.objects.filter(pk=source).first() if source.isdigit() else None
        if job is None:
            return super().get_changeform_initial_data(request)
        return {name: getattr(job, StimulusJob._meta.get_field(name).attname) for name in self.inputs}

    class Media:
        js = ["studyapp/admin-grouped-select.js"]

    stages = jobs.JOB_STAGES

    def changelist_view(self, request, extra_context=None):
        problem = checks.sharding_without_result_backend()
        if problem:
            messages.warning(request, f"{problem}.")
        return super().changelist_view(request, extra_context)

    @admin.display(description="shards of the activation pass")
    def shard_table(self, job):
        """Each shard's state, for a job whose activation pass was split (its progress above is their mean)."""
        shards = list(job.shards.all())
        if not shards:
            return "— (one task)"
        for shard in shards:
            shard.error_line = shard.error.splitlines()[0] if shard.error else ""
        return render_to_string("admin/studyapp/stimulusjob/shard_table.html", {"shards": shards})

    def get_urls(self):
        own = [path("pictures/<path:picture>", self.admin_site.admin_view(self.picture_view),
                    name="studyapp_research_picture")]
        return own + super().get_urls()  # the JobAdmin's progress endpoint among them

    def picture_view(self, request, picture):
        """A picture of the private artifact store, for researchers who may see stimulus jobs."""
        if not self.has_view_permission(request):
            raise PermissionDenied
        if not RESEARCH_PICTURE.fullmatch(picture):
            raise Http404("not a picture")
        return serve(request, picture, document_root=settings.ARTIFACT_ROOT)

    def get_queryset(self, request):
        return super().get_queryset(request).annotate(unit_total=Count("units"))

    @admin.display(description="units imported", ordering="unit_total")
    def unit_count(self, job):
        return job.unit_total

    # The job's summary (the manifest without its units) is read only through stimuli.artifact's typed
    # accessors: a key the contract requires and the summary lacks raises ManifestError. Django's admin shows
    # a ValueError raised by a read-only field as "-", which is how a renamed key once passed unseen, so
    # each display says what is wrong instead (_summary_error), and logs it.
    @admin.display(description="time per stage")
    @_summary_error
    def stage_times(self, job):
        """Where the job's time went (stimuli.artifact.stage_timings): each stage's wall seconds and share."""
        timings = stage_timings(job.summary) if job.summary else None
        if timings is None:
            return "— (not recorded)"
        total = timings.total or 1.0
        return render_to_string("admin/studyapp/stimulusjob/stage_times.html", {
            "stages": [{"name": n, "seconds": s, "share": 100 * s / total} for n, s in timings.stages],
            "measures": [{"name": n, "seconds": s} for n, s in timings.measures], "total": timings.total})

    @admin.display(description="measures per basis")
    @_summary_error
    def measures_table(self, job):
        if not job.summary:
            return "—"
        rows = [{"layer": s.layer, "basis": s.basis, "n_components": s.n_components,
                 "variance": ", ".join(f"{v:.2f}" for v in s.cumulative_explained_variance[:5]),
                 "influence": ", ".join(f"{v:.2f}" for v in (s.influence_concentration or ())[:5]),
                 "completeness": ", ".join(f"{k}: {a:.2f}" for k, a in zip(s.completeness.k, s.completeness.accuracy))
                 if s.completeness else "", "completeness_error": s.completeness_error}
                for s in layer_summaries(job.summary)]
        if not rows:
            return "—"
        return render_to_string("admin/studyapp/stimulusjob/measures_table.html", {"rows": rows})

    @admin.display(description="curves")
    @_summary_error
    def curves(self, job):
        """The artifact's SVG figures (stimuli.figures): explained variance, completeness, essence and
        surrogate fidelity per layer, the bases side by side."""
        figures = figure_files(job.summary) if job.summary else []
        if not figures:
            return "—"
        return render_to_string("admin/studyapp/stimulusjob/curves.html", {"figures": [
            {"url": research_picture_url(f"{job.artifact}/{f.file}"), "title": f.title} for f in figures]})

    @admin.display(description="Sobol region indices of the decision")
    @_summary_error
    def region_sobol(self, job):
        sobol = sobol_summary(job.summary) if job.summary else None
        if sobol is None:
            return "— (set sobol_images in the parameters)"
        images = [{"url": research_picture_url(f"{job.artifact}/{image.image}"), "target_class": image.target_class,
                   "interaction_share": image.interaction_share,
                   "cells": _index_grid(image.ST, sobol.grid) if sobol.grid else None,
                   "values": ", ".join(f"{v:.3f}" for v in image.ST)}
                  for image in sobol.images]
        return render_to_string("admin/studyapp/stimulusjob/region_sobol.html", {"sobol": sobol, "images": images})


class ExemplarInline(admin.TabularInline):
    model = Exemplar
    extra = 0
    can_delete = False
    # About a hundred rows per unit: folded, so the unit's measures and pictures come first.
    classes = ["collapse"]
    fields = ["role", "group", "position", "image"]
    readonly_fields = fields


def _index_grid(values, grid):
    """A region's index as the darkness of its cell, laid out as the image's grid (row-major): rows of
    ``{"value", "alpha"}``."""
    rows, cols = grid
    top = max(max(values), 1e-12)
    return [[{"value": v, "alpha": f"{max(v, 0) / top:.2f}"} for v in values[r * cols:(r + 1) * cols]]
            for r in range(rows)]


def _thumbnails(unit, role):
    """The unit's first images of a role as a 3 × 3 grid, as a trial shows its references; small in the
    list so that its columns fit a 1,366 px screen."""
    images = [e.image for e in unit.exemplars.all() if e.role == role and e.group == 0][:THUMBNAILS_PER_ROLE]
    if not images:
        return ""
    cells = format_html_join("", "<img src='{}' alt='' loading='lazy'>",
                             ((f"{settings.MEDIA_URL}{image}",) for image in images))
    return format_html("<div class='thumb-grid'>{}</div>", cells)


def _measure_header(key, label=None):
    """A column header that explains its measure on hover (the list's legend says it in full)."""
    return format_html("<span class='measure-help' title='{}'>{}</span>", measure_help(key), label or measure_label(key))


class UnitMeasureFilter(admin.SimpleListFilter):
    """Lists a filter's values as they occur among the units (layer, basis)."""

    field = None

    def lookups(self, request, model_admin):
        values = Unit.objects.order_by(self.field).values_list(self.field, flat=True).distinct()
        return [(v, v) for v in values]

    def queryset(self, request, queryset):
        return queryset.filter(**{self.field: self.value()}) if self.value() else queryset


class LayerFilter(UnitMeasureFilter):
    title = parameter_name = field = "layer"


class BasisFilter(UnitMeasureFilter):
    title = parameter_name = field = "basis"


@admin.register(Unit)
class UnitAdmin(NoAddOrChange, admin.ModelAdmin):
    list_display = ["key", "job_short", "explained_variance", "influence", "machine_score", "most_activating",
                    "least_activating"]
    list_filter = ["job", LayerFilter, BasisFilter]
    list_select_related = ["job"]
    list_per_page = 50
    # A unit is what its job's artifact says: shown, never edited (its measures as a table, not a JSON box).
    fields = readonly_fields = ["job", "layer", "basis", "index", "measures_table", "most_activating",
                                "least_activating", "attribution_overlays", "first_ordered_strip",
                                "synthetic_vs_natural"]
    inlines = [ExemplarInline]
    change_list_template = "admin/studyapp/unit/change_list.html"

    class Media:
        css = {"all": ["studyapp/admin-studyapp.css"]}

    def get_queryset(self, request):
        return super().get_queryset(request).prefetch_related("exemplars")

    def changelist_view(self, request, extra_context=None):
        legend = [(measure_label(k), measure_help(k)) for k in ("explained_variance_ratio", "influence_direction", "mis")]
        # The navigation sidebar would take 300 of a 1,366 px screen's pixels from the thumbnails; the
        # breadcrumbs lead back.
        return super().changelist_view(request, {**(extra_context or {}), "measure_legend": legend,
                                                 "is_nav_sidebar_enabled": False})

    @admin.display(description="job", ordering="job")
    def job_short(self, unit):
        return format_html("<span title='{}'>#{}</span>", str(unit.job), unit.job_id)

    @admin.display(description=_measure_header("explained_variance_ratio"))
    def explained_variance(self, unit):
        value = unit.measures.get("explained_variance_ratio")
        return f"{value:.3f}" if isinstance(value, (int, float)) else "—"

    @admin.display(description=_measure_header("mis", "machine score"))
    def machine_score(self, unit):
        value = unit.measures.get("mis")
        if isinstance(value, (int, float)):
            return f"{value:.3f}"
        return format_html("<span class='measure-help' title='{}'>—</span>", mis_reason(unit))

    @admin.display(description=_measure_header("influence_direction", "influence"))
    def influence(self, unit):
        value = unit.measures.get("influence_direction", unit.measures.get("influence"))
        if not isinstance(value, (int, float)):
            return format_html("<span class='measure-help' title='{}'>—</span>",
                               "not computed: the job ran without influence_class")
        return f"{value:+.3f} (rank {unit.measures.get('influence_rank', '?')})"

    @admin.display(description="measures")
    def measures_table(self, unit):
        """Each measure on its own row, with what it means; MIS's absence says why."""
        # The known measures in the order of MEASURES (variance, influence, machine score, ...), then the
        # rest; a missing machine score keeps its row, saying why it is missing.
        order = {key: i for i, key in enumerate(MEASURES)}
        measures = {"mis": None, **unit.measures} if "mis" not in unit.measures else dict(unit.measures)
        rows = []
        for key, value in sorted(measures.items(), key=lambda item: (order.get(item[0], len(order)), item[0])):
            if key == "mis" and not isinstance(value, (int, float)):
                shown = f"— ({mis_reason(unit)})"
            elif isinstance(value, list):
                shown = ", ".join(format_number(v) for v in value[:12]) + (" …" if len(value) > 12 else "")
            elif isinstance(value, dict):
                shown = ", ".join(f"{k}: {format_number(v)}" for k, v in value.items())
            else:
                shown = format_number(value)
            rows.append({"label": measure_label(key), "value": shown, "help": measure_help(key)})
        if not rows:
            return "—"
        return render_to_string("admin/studyapp/unit/measures_table.html", {"rows": rows})

    @admin.display(description="most activating")
    def most_activating(self, unit):
        return _thumbnails(unit, Exemplar.Role.REFERENCE_MAX)

    @admin.display(description="least activating")
    def least_activating(self, unit):
        return _thumbnails(unit, Exemplar.Role.REFERENCE_MIN)

    @admin.display(description="attribution overlays (most activating)")
    def attribution_overlays(self, unit):
        return _thumbnails(unit, Exemplar.Role.OVERLAY_MAX) or "— (the job ran without attribution_overlays)"

    @admin.display(description="synthetic vs natural references")
    def synthetic_vs_natural(self, unit):
        synthetic_max = _thumbnails(unit, Exemplar.Role.SYNTHETIC_MAX)
        if not synthetic_max:
            return "— (the job ran without feature_vis)"
        ratio = unit.measures.get("synthetic_max_ratio")
        ratio = f"{ratio:.2f}×" if isinstance(ratio, (int, float)) else "—"
        return render_to_string("admin/studyapp/unit/synthetic_vs_natural.html", {
            "synthetic_max": synthetic_max, "natural_max": _thumbnails(unit, Exemplar.Role.REFERENCE_MAX),
            "synthetic_min": _thumbnails(unit, Exemplar.Role.SYNTHETIC_MIN),
            "natural_min": _thumbnails(unit, Exemplar.Role.REFERENCE_MIN), "ratio": ratio,
            "synthetic_score": format_number(unit.measures.get("synthetic_max_score")),
            "natural_score": format_number(unit.measures.get("natural_max_score"))})

    @admin.display(description="ordered strip, lowest first")
    def first_ordered_strip(self, unit):
        return _thumbnails(unit, Exemplar.Role.STRIP) or "—"


class ConditionFormSet(forms.BaseInlineFormSet):
    """The study's conditions as the form would leave them: a study with answers keeps its conditions
    (each form's own `Condition.clean` refuses a change), and a study set live here passes the go-live
    checks with these conditions."""

    def clean(self):
        super().clean()
        if any(self.errors):
            return
        study = self.instance
        kept = [form for form in self.forms if form.has_changed() or form.instance.pk]
        removed = [form.instance for form in kept if self._should_delete_form(form) and form.instance.pk]
        if removed and study.has_answers():
            raise forms.ValidationError(
                f"Study \"{study.slug}\" has answers, and its conditions define what they mean: removing "
                f"{', '.join(c.name for c in removed)} is refused. {study.new_version_hint()}")
        if study.status == Study.Status.LIVE:
            conditions = [form.instance for form in kept if not self._should_delete_form(form)]
            found = golive.problems(study, conditions)
            if found:
                raise forms.ValidationError(["The study cannot be live:", *found])


class ConditionInline(admin.TabularInline):
    model = Condition
    formset = ConditionFormSet
    form = ConditionForm
    extra = 1
    fields = ["name", "job", "layer", "basis", "reference_type", "paradigm", "n_references", "min_references",
              "query_band_low", "query_band_high", "block_instructions"]

    class Media:
        js = ["studyapp/admin-grouped-select.js"]

    def formfield_for_dbfield(self, db_field, request, **kwargs):
        # The design factors came after forms that post only the older fields: a factor left out of a
        # POST keeps its stored value (Django skips an omitted field that has a default), so a choice
        # list, not a checkbox, whose absence would read as "off".
        if db_field.name == "min_references":
            return forms.TypedChoiceField(
                choices=[(True, "shown"), (False, "not shown")], coerce=lambda v: v in (True, "True"),
                required=False, label="minimal references", initial=True, help_text=db_field.help_text)
        field = super().formfield_for_dbfield(db_field, request, **kwargs)
        if db_field.name == "n_references" and field is not None:
            field.required = False
        if db_field.name == "block_instructions" and field is not None:
            field.widget.attrs.update(rows=2, cols=30)
        return field


class StudyFileForm(forms.Form):
    file = forms.FileField(help_text="a study file (JSON) written by \"Export as a study file\" or export_study")
    slug = forms.SlugField(required=False, help_text="the new study's link name; empty: the file's")
    job = forms.CharField(required=False, help_text="a stimulus job to use: its id (the file has one job) or "
                                                    "job-1=ID; empty: the job here with the file's content hash")


@admin.register(Study)
class StudyAdmin(admin.ModelAdmin):
    change_list_template = "admin/studyapp/study/change_list.html"
    form = StudyForm
    change_form_template = "admin/studyapp/study/change_form.html"
    list_display = ["title", "slug", "status", "started", "completed", "participant_link", "tools"]
    list_filter = ["status"]
    prepopulated_fields = {"slug": ["title"]}
    inlines = [ConditionInline]
    actions = ["go_live", "pause", "close", "new_version", "duplicate", "export_csv", "export_study_file"]
    readonly_fields = ["trial_plan_summary", "version", "previous_version", "change_log"]
    fieldsets = [
        (None, {"fields": ["title", "slug", "status", "version", "previous_version", "seed"]}),
        ("Texts (Markdown)", {"fields": ["consent_text", "instructions_text", "debrief_text"]}),
        ("Trial plan", {"fields": ["trial_plan_summary", "n_practice", "practice_max_attempts", "practice_feedback",
                                   "n_main",
                                   "catch_ratio", "response_lock_ms", "confidence", "fullscreen",
                                   "min_width", "min_height"]}),
        ("Design", {"fields": ["design", "between_factors", "trials_per_block", "blocks_per_condition",
                               "block_group_by", "block_alternate", "counterbalancing", "unit_allocation",
                               "practice_block"],
                    "description": "Within and mixed designs: every participant does the conditions (of their "
                                   "between-participant group) in blocks, in a counterbalanced order; the schedule "
                                   "preview shows what the next arrivals would get."}),
        ("Recruitment", {"fields": ["recruitment", "allow_plain_link", "completion_url", "completion_code",
                                    "participants_per_condition", "time_limit_minutes", "consent_grace_minutes"]}),
        ("Exclusion rules", {"fields": ["min_catch_accuracy", "min_instructions_seconds", "exclude_one_side", "one_side_alpha",
                                        "min_total_minutes", "max_total_minutes", "min_answer_interval_ms",
                                        "max_fast_answer_share"]}),
        ("Integrity flags", {"fields": ["flag_webdriver", "max_focus_losses", "max_fullscreen_exits",
                                        "flag_client_time", "exclude_flagged"]}),
        ("Change log", {"fields": ["change_log"], "classes": ["collapse"]}),
    ]

    #: design fields a POST from before designs existed leaves out: omitted, they keep their stored value
    DESIGN_FIELDS = ("design", "trials_per_block", "blocks_per_condition", "counterbalancing", "unit_allocation")

    def get_form(self, request, obj=None, **kwargs):
        form = super().get_form(request, obj, **kwargs)
        for name in self.DESIGN_FIELDS:
            if name in form.base_fields:
                form.base_fields[name].required = False
        return form

    @admin.display(description="changes (field, old and new value, author, time)")
    def change_log(self, study):
        """The study's `StudyChange` rows, newest first: read-only, written by the models' save. (A table
        here rather than an inline, which every POST of the form would have to carry.)"""
        changes = list(study.changes.order_by("-at", "-pk")) if study.pk else []
        if not changes:
            return "—"
        return render_to_string("admin/studyapp/study/change_log.html", {"changes": changes})

    def get_queryset(self, request):
        return super().get_queryset(request).annotate(
            n_started=Count("participants"),
            n_completed=Count("participants", filter=Q(participants__status=Participant.Status.COMPLETED)),
        )

    class Media:
        js = ["studyapp/admin-copy.js"]
        css = {"all": ["studyapp/admin-studyapp.css"]}

    @admin.display(description="in short")
    def trial_plan_summary(self, study):
        if study.pk is None:
            return "—"
        n_catch = int(round(study.n_main * study.catch_ratio))
        return format_html(
            "{} practice trials (up to {} attempts), then {} main trials of which {} catch trials "
            "(catch ratio {}); buttons unlock after {} s", study.n_practice, study.practice_max_attempts,
            study.n_main, n_catch, format_ratio(study.catch_ratio), format_number(study.response_lock_ms / 1000))

    @admin.display(description="started", ordering="n_started")
    def started(self, study):
        return study.n_started

    @admin.display(description="completed", ordering="n_completed")
    def completed(self, study):
        return study.n_completed

    @admin.display(description="participant link")
    def participant_link(self, study):
        url = study.get_absolute_url()
        return format_html("<a href='{}' target='_blank'>{}</a>", url, url)

    @admin.display(description="")
    def tools(self, study):
        links = format_html("<a href='{}'>monitor</a> · <a href='{}'>preview</a>",
                            reverse("admin:studyapp_study_monitor", args=[study.pk]),
                            reverse("admin:studyapp_study_preview", args=[study.pk]))
        if study.design == Study.Design.BETWEEN:
            return links
        return format_html("{} · <a href='{}'>schedule</a>", links,
                           reverse("admin:studyapp_study_schedule", args=[study.pk]))

    def get_urls(self):
        own = [
            path("<int:study_id>/monitor/", self.admin_site.admin_view(self.monitor_view), name="studyapp_study_monitor"),
            path("<int:study_id>/preview/", self.admin_site.admin_view(self.preview_view), name="studyapp_study_preview"),
            path("<int:study_id>/schedule/", self.admin_site.admin_view(self.schedule_view),
                 name="studyapp_study_schedule"),
            path("<int:study_id>/new-version/", self.admin_site.admin_view(self.new_version_view),
                 name="studyapp_study_new_version"),
            path("import-file/", self.admin_site.admin_view(self.import_file_view), name="studyapp_study_import_file"),
        ]
        return own + super().get_urls()

    def change_view(self, request, object_id, form_url="", extra_context=None):
        study = Study.objects.filter(pk=object_id).first() if str(object_id).isdigit() else None
        if (request.method == "GET" and study is not None and self.has_change_permission(request, study)
                and study.has_answers()):
            # Said before the researcher edits, with the way out one click away.
            messages.warning(request, format_html(
                "This version has answers: its trial plan and conditions are frozen (texts, recruitment and "
                "exclusion rules stay editable). <form method='post' action='{}' style='display:inline'>"
                "<input type='hidden' name='csrfmiddlewaretoken' value='{}'>"
                "<button type='submit'>Make version {} to change them</button></form>",
                reverse("admin:studyapp_study_new_version", args=[study.pk]), get_token(request), study.version + 1))
        extra = {"recruitment_urls": recruitment_urls(request, study)} if study is not None else {}
        # The conditions inline is a table of eleven columns: the page gives it the sidebar's width.
        extra["is_nav_sidebar_enabled"] = False
        return super().change_view(request, object_id, form_url, {**(extra_context or {}), **extra})

    def new_version_view(self, request, study_id):
        """POST: the study's next version (`versions.new_version`), opened for editing."""
        study = get_object_or_404(Study, pk=study_id)
        if not (self.has_add_permission(request) and self.has_view_permission(request, study)):
            raise PermissionDenied
        if request.method != "POST":
            return redirect("admin:studyapp_study_change", study.pk)
        return self._made(request, Study.objects.filter(pk=study.pk), versions.new_version, "New version") or \
            redirect("admin:studyapp_study_change", study.pk)

    def schedule_view(self, request, study_id):
        """The schedule preview: for the next arrivals of a within or mixed study, the order, the blocks
        (condition, trials, block screen) and the units per condition each would get."""
        study = get_object_or_404(Study, pk=study_id)
        if not self.has_view_permission(request, study):
            raise PermissionDenied
        try:
            n = min(max(int(request.GET.get("n", 8)), 1), 100)
        except ValueError:
            n = 8
        arrivals_, problem = [], None
        if study.design == Study.Design.BETWEEN:
            problem = "This is a between-participants study: each participant does one condition, no schedule."
        else:
            try:
                conditions = list(study.conditions.select_related("job"))
                names = {c.pk: c.name for c in conditions}
                for order, slot in assignment.next_arrivals(study, n):
                    plans, schedule, practice = participation.design_schedule(study, order, slot, conditions)
                    arrivals_.append({
                        "order": order, "slot": slot, "practice": practice.name,
                        "blocks": [{"index": i, "condition": names[pk], "trials": size}
                                   for i, (pk, size) in enumerate(schedule)],
                        "units": [{"condition": names[pk], "units": [u.name for u in plan.units]}
                                  for pk, plan in plans.items()],
                    })
            except designs.DesignError as exc:
                problem = f"The design cannot be satisfied: {exc}."
        context = {**self.admin_site.each_context(request), "study": study, "arrivals": arrivals_, "n": n,
                   "problem": problem, "orders": order_counts(study),
                   "title": f"Schedule preview: {study.title}", "opts": self.model._meta}
        return TemplateResponse(request, "admin/studyapp/study_schedule.html", context)

    def monitor_view(self, request, study_id):
        study = get_object_or_404(Study, pk=study_id)
        if not self.has_view_permission(request, study):
            raise PermissionDenied
        context = {**self.admin_site.each_context(request), "study": study, "rows": study_monitor(study),
                   "orders": order_counts(study),
                   "participants": participant_evidence(study),
                   "arrivals": arrivals.per_minute(study),
                   "title": f"Monitor: {study.title}", "opts": self.model._meta}
        return TemplateResponse(request, "admin/studyapp/study_monitor.html", context)

    def preview_view(self, request, study_id):
        """Walk the study as a participant of one condition. GET only shows the choice: a participant
        row is created on POST, so a link prefetcher or a crawler following the link starts nothing."""
        study = get_object_or_404(Study, pk=study_id)
        # A preview stores a participant row and its trials: for those who may change the study.
        if not self.has_change_permission(request, study):
            raise PermissionDenied
        conditions = list(study.conditions.all())
        if request.method == "POST":
            condition = next((c for c in conditions if str(c.pk) == request.POST.get("condition")), None)
            if condition is None:
                messages.error(request, "Choose one of the study's conditions to preview.")
                return redirect("admin:studyapp_study_preview", study.pk)
            try:
                participant = participation.start_preview(study, condition)
            except ValueError as exc:
                messages.error(request, f"Cannot preview condition {condition}: {exc}")
                return redirect("admin:studyapp_study_preview", study.pk)
            return redirect("studyapp:experiment", token=participant.token)
        selected = int(request.GET["condition"]) if request.GET.get("condition", "").isdigit() else None
        context = {**self.admin_site.each_context(request), "study": study, "conditions": conditions,
                   "selected": selected, "title": f"Preview: {study.title}", "opts": self.model._meta}
        return TemplateResponse(request, "admin/studyapp/study_preview.html", context)

    def save_model(self, request, obj, form, change):
        obj.changed_by = request.user
        super().save_model(request, obj, form, change)

    def save_formset(self, request, form, formset, change):
        for instance in formset.save(commit=False):
            instance.changed_by = request.user
            instance.save()
        for instance in formset.deleted_objects:
            instance.delete()
        formset.save_m2m()

    def _set_status(self, request, queryset, status):
        # Row by row, so that each change is logged with its author.
        for study in queryset:
            study.status = status
            study.changed_by = request.user
            study.save(update_fields=["status"])
        messages.info(request, f"{len(queryset)} study(ies) now {status}.")

    @admin.action(description="Go live (after the go-live checks)")
    def go_live(self, request, queryset):
        for study in queryset:
            try:
                closed = golive.set_live(study, author=request.user)
            except golive.GoLiveRefused as exc:
                messages.error(request, format_html(
                    "Study \"{}\" cannot go live:<ul>{}</ul>", study.slug,
                    format_html_join("", "<li>{}</li>", ((p,) for p in exc.problems))))
                continue
            note = f"; earlier version(s) {', '.join(s.slug for s in closed)} closed to new arrivals" if closed else ""
            messages.info(request, f"Study \"{study.slug}\" is live{note}.")

    def _made(self, request, queryset, make, what):
        made = []
        for study in queryset:
            try:
                made.append(make(study, author=request.user))
            except versions.VersionError as exc:
                messages.error(request, str(exc))
        for study in made:
            messages.info(request, format_html("{} \"<a href='{}'>{}</a>\" made as a draft.", what,
                                               reverse("admin:studyapp_study_change", args=[study.pk]), study.slug))
        if len(made) == 1:
            return redirect("admin:studyapp_study_change", made[0].pk)
        return None

    @admin.action(description="New version (a draft copy to change; answers stay with this one)")
    def new_version(self, request, queryset):
        return self._made(request, queryset, versions.new_version, "New version")

    @admin.action(description="Duplicate (a new draft study with the same conditions and settings)")
    def duplicate(self, request, queryset):
        return self._made(request, queryset, versions.duplicate, "Copy")

    @admin.action(description="Pause")
    def pause(self, request, queryset):
        self._set_status(request, queryset, Study.Status.PAUSED)

    @admin.action(description="Close")
    def close(self, request, queryset):
        self._set_status(request, queryset, Study.Status.CLOSED)

    @admin.action(description="Export responses (CSV)")
    def export_csv(self, request, queryset):
        if queryset.count() != 1:
            messages.error(request, "Export one study at a time.")
            return None
        study = queryset.get()
        buffer = io.StringIO()
        write_export(study, buffer, "csv")
        response = HttpResponse(buffer.getvalue(), content_type="text/csv")
        response["Content-Disposition"] = f'attachment; filename="{study.slug}-responses.csv"'
        return response

    @admin.action(description="Export as a study file (JSON: the design, never participants or secrets)")
    def export_study_file(self, request, queryset):
        if queryset.count() != 1:
            messages.error(request, "Export one study at a time.")
            return None
        study = queryset.get()
        try:
            text = studyfile.dumps(studyfile.export_study(study))
        except studyfile.StudyFileError as exc:
            messages.error(request, f"Study \"{study.slug}\" cannot be written as a file: {exc}")
            return None
        response = HttpResponse(text, content_type="application/json; charset=utf-8")
        response["Content-Disposition"] = f'attachment; filename="{study.slug}.study.json"'
        return response

    def import_file_view(self, request):
        """A study file made into a draft study (`studyfile.import_study`); a bad file is refused whole,
        its one error shown above the form."""
        if not self.has_add_permission(request):
            raise PermissionDenied
        form = StudyFileForm(request.POST or None, request.FILES or None)
        if request.method == "POST" and form.is_valid():
            try:
                data = studyfile.loads(form.cleaned_data["file"].read())
                bound = [form.cleaned_data["job"]] if form.cleaned_data["job"] else []
                imported = studyfile.import_study(data, slug=form.cleaned_data["slug"] or None,
                                                  bindings=studyfile.parse_bindings(bound, data), author=request.user)
            except studyfile.StudyFileError as exc:
                form.add_error(None, str(exc))
            else:
                found = "; ".join(f"{key}: stimulus job {job.pk}, {how}" for key, (job, how) in
                                  sorted(imported.jobs.items()))
                messages.info(request, f"Study \"{imported.study.slug}\" imported as a draft ({found}).")
                return redirect("admin:studyapp_study_change", imported.study.pk)
        context = {**self.admin_site.each_context(request), "form": form, "title": "Import a study file",
                   "opts": self.model._meta}
        return TemplateResponse(request, "admin/studyapp/study_import.html", context)


@admin.register(StudyChange)
class StudyChangeAdmin(ViewOnly, admin.ModelAdmin):
    """The change log of every study, read-only: rows are written by the models' save, never by hand."""

    list_display = ["at", "study", "field", "old", "new", "author_name"]
    list_filter = ["study"]
    search_fields = ["field", "old", "new"]


class PreviewFilter(admin.SimpleListFilter):
    """Researchers' previews are left out of the participant list unless asked for: they are no one's
    data (no quota, no export)."""

    title = "who"
    parameter_name = "who"

    def lookups(self, request, model_admin):
        return [("previews", "researchers' previews only"), ("all", "participants and previews")]

    def choices(self, changelist):
        yield {"selected": self.value() is None,
               "query_string": changelist.get_query_string(remove=[self.parameter_name]),
               "display": "participants (previews hidden)"}
        for value, label in self.lookup_choices:
            yield {"selected": self.value() == value,
                   "query_string": changelist.get_query_string({self.parameter_name: value}), "display": label}

    def queryset(self, request, queryset):
        if self.value() == "all":
            return queryset
        return queryset.filter(is_preview=self.value() == "previews")


class TrialInline(NoAddOrChange, admin.TabularInline):
    """A participant's trials in their order, each with the answer given: read only."""

    model = Trial
    extra = 0
    can_delete = False
    fields = readonly_fields = ["position", "block", "kind", "unit_key", "answer", "correct", "confidence",
                                "rt", "answered_at"]
    verbose_name = "trial and answer"
    verbose_name_plural = "trials and answers"

    def get_queryset(self, request):
        return super().get_queryset(request).select_related("unit", "response")

    @staticmethod
    def _response(trial):
        try:
            return trial.response
        except Response.DoesNotExist:
            return None

    @admin.display(description="unit")
    def unit_key(self, trial):
        return trial.unit.key

    @admin.display(description="answer")
    def answer(self, trial):
        response = self._response(trial)
        return f"query {response.choice.upper()}" if response else "— (not answered)"

    @admin.display(description="correct")
    def correct(self, trial):
        response = self._response(trial)
        return "—" if response is None else ("yes" if response.correct else "no")

    @admin.display(description="confidence (1–3)")
    def confidence(self, trial):
        response = self._response(trial)
        return "—" if response is None or response.confidence is None else response.confidence

    @admin.display(description="RT")
    def rt(self, trial):
        response = self._response(trial)
        return "—" if response is None else f"{response.rt_ms / 1000:.2f} s"

    @admin.display(description="answered at (server)")
    def answered_at(self, trial):
        response = self._response(trial)
        return "—" if response is None else response.server_time.strftime("%Y-%m-%d %H:%M:%S")


@admin.register(Participant)
class ParticipantAdmin(admin.ModelAdmin):
    list_display = ["pseudonym", "study", "condition", "status", "answered", "trial_count", "started_at", "finished_at"]
    list_filter = [PreviewFilter, "study", "status", "condition"]
    list_select_related = ["study", "condition"]
    # The token is the participant's credential: researchers never need to see it.
    readonly_fields = ["integrity", *(f.name for f in Participant._meta.fields if f.name not in ("id", "token"))]
    exclude = ["token"]
    inlines = [TrialInline]

    class Media:
        css = {"all": ["studyapp/admin-studyapp.css"]}

    @admin.display(description="exclusions and flags")
    def integrity(self, participant):
        """The study's verdicts on this participant and the evidence behind them (studyapp.exclusions)."""
        if participant.pk is None or participant.is_preview:
            return "—"
        rows = participant_evidence(participant.study, only=[participant.pk], everyone=True)
        if not rows:
            return "—"
        row = rows[0]
        server = row["server_instructions_ms"]
        client = row["client_instructions_ms"]
        return format_html(
            "<strong>{}</strong><br>instructions: {} s by the server, {} s by the browser · answers too fast: "
            "{} of {} · focus losses: {} · full-screen exits: {} · webdriver: {}",
            ", ".join(row["reasons"]) or "not excluded, not flagged",
            "—" if server is None else f"{server / 1000:.1f}", "—" if client is None else f"{client / 1000:.1f}",
            row["fast_answers"], row["intervals"], row["focus_losses"], row["fullscreen_exits"],
            "yes" if row["webdriver"] else "no")

    def has_add_permission(self, request):
        return False


@admin.register(Response)
class ResponseAdmin(NoAddOrChange, admin.ModelAdmin):
    list_display = ["trial", "participant", "choice", "confidence", "correct", "rt_ms", "server_time"]
    list_filter = ["participant__study", "correct"]
    readonly_fields = [f.name for f in Response._meta.fields if f.name != "id"]


@admin.register(SobolAnalysis)
class SobolAnalysisAdmin(JobAdmin):
    inputs = ["network", "image_set", "image_index", "target_class", "grid", "n_samples", "perturbation", "seed"]
    results = ["pictures", "indices"]
    result_columns = ["interaction"]

    @admin.display(description="interaction share (1 − ΣS1)")
    def interaction(self, analysis):
        return f"{analysis.result['interaction_share']:.3f}" if analysis.result else "—"

    @admin.display(description="image and total-order indices")
    def pictures(self, analysis):
        if not analysis.overlay:
            return "—"
        return format_html("<img src='{}' width='224'> <img src='{}' width='224'>",
                           research_picture_url(analysis.image), research_picture_url(analysis.overlay))

    @admin.display(description="indices per region (row by row)")
    def indices(self, analysis):
        result = analysis.result
        if not result:
            return "—"
        g = analysis.grid
        cells = [[{"S1": f"{result['S1'][r * g + c]:.3f}", "ST": f"{result['ST'][r * g + c]:.3f}"} for c in range(g)]
                 for r in range(g)]
        return render_to_string("admin/studyapp/sobolanalysis/indices.html", {
            "target_class": result["target_class"], "n_forwards": result["n_forwards"],
            "interaction_share": f"{result['interaction_share']:.3f}", "cells": cells})
