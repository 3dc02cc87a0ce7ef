"""The study platform's data: what a researcher configures, what the stimulus workers produce, and what
participants answer. Invariants that matter for the data (one response per trial, one participation per
recruitment id, value ranges) are database constraints, not only form validation."""
import json
import re
import secrets
from collections import defaultdict

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models, transaction
from django.db.models import Q
from django.urls import reverse
from django.utils import timezone

from analysis.exclusions import ONE_SIDE_ALPHA
from stimuli.artifact import ManifestError, query_bands as artifact_query_bands

from . import texts
from .trials import UnitExemplars, build_trial_list, in_query_band, main_pairs_per_unit


class ParticipantJSONField(models.JSONField):
    """A JSONField whose stored value never breaks the page or export that loads it: a value the JSON
    decoder cannot read back (nested deeper than Python's recursion limit, stored before the API refused
    such input) loads as a short note instead of raising, so one row cannot take down a list of them."""

    def from_db_value(self, value, expression, connection):
        try:
            return super().from_db_value(value, expression, connection)
        except (RecursionError, json.JSONDecodeError):
            return {"unreadable": f"stored JSON of {len(value)} characters that cannot be read back"}


class Frozen(ValidationError):
    """A change that would rewrite what stored data means: refused in `clean()` (the admin shows it on the
    form) and again in `save()`, so that no other path (a shell, a command, a script) can make it."""


def _differences(instance, fields, update_fields=None):
    """Field name -> (stored value, new value) for the `fields` of a saved row that `instance` changes;
    one query. Nothing for an instance not saved yet."""
    if instance.pk is None or instance._state.adding:
        return {}
    if update_fields is not None:
        fields = [f for f in fields if f in set(update_fields)]
        if not fields:
            return {}
    attnames = {f: instance._meta.get_field(f).attname for f in fields}
    stored = type(instance).objects.filter(pk=instance.pk).values(*attnames.values()).first()
    if stored is None:
        return {}
    return {f: (stored[a], getattr(instance, a)) for f, a in attnames.items() if stored[a] != getattr(instance, a)}


def named_units(message, keys):
    """An error of the trial builder, which knows units by primary key, with each unit named by its key
    (`conv2:nmf:0`), which is what the researcher sees everywhere else."""
    return re.sub(r"\bunit (\d+)\b", lambda m: f"unit {keys.get(int(m.group(1)), m.group(1))}", message)


class Network(models.Model):
    class Source(models.TextChoices):
        BUILTIN = "builtin", "Built-in demo network"
        TORCHVISION = "torchvision", "torchvision architecture with its weights"
        CHECKPOINT = "checkpoint", "Local checkpoint"

    name = models.CharField(max_length=100, unique=True, help_text="'demo' or a torchvision name, e.g. resnet18")
    source = models.CharField(max_length=20, choices=Source.choices, default=Source.BUILTIN)
    weights = models.CharField(max_length=100, blank=True, help_text="torchvision weights enum, e.g. IMAGENET1K_V1")
    checkpoint = models.CharField(max_length=500, blank=True, help_text="path of a state dict or TorchScript file")
    created = models.DateTimeField(auto_now_add=True)

    def __str__(self):
        return self.name


class ImageSet(models.Model):
    class Source(models.TextChoices):
        BUILTIN = "builtin", "Built-in handwritten digits"
        FOLDER = "folder", "Image folder (class sub-folders)"

    name = models.CharField(max_length=100, unique=True)
    source = models.CharField(max_length=20, choices=Source.choices, default=Source.BUILTIN)
    path = models.CharField(max_length=500, blank=True, help_text="folder in ImageFolder layout")
    created = models.DateTimeField(auto_now_add=True)

    def __str__(self):
        return self.name


class Job(models.Model):
    """What every background job shares: its lifecycle (queued → running → succeeded, failed or
    cancelled, with a cancel request in between), its progress, its error and the heartbeat that tells a
    live worker from a dead one. `studyapp.lifecycle` is the one runner that writes these columns;
    subclasses hold only what their work needs and produces."""

    class Status(models.TextChoices):
        QUEUED = "queued"
        RUNNING = "running"
        SUCCEEDED = "succeeded"
        FAILED = "failed"
        CANCEL_REQUESTED = "cancel_requested", "cancel requested"
        CANCELLED = "cancelled"

    status = models.CharField(max_length=20, choices=Status.choices, default=Status.QUEUED)
    stage = models.CharField(max_length=40, blank=True)
    progress = models.FloatField(default=0.0, help_text="percent of the current stage")
    error = models.TextField(blank=True)
    attempts = models.PositiveIntegerField(default=0)
    heartbeat = models.DateTimeField(null=True, blank=True, help_text="last sign of life of the running worker")
    created = models.DateTimeField(auto_now_add=True)
    started = models.DateTimeField(null=True, blank=True)
    finished = models.DateTimeField(null=True, blank=True)

    class Meta:
        abstract = True
        ordering = ["-created"]
        constraints = [
            models.CheckConstraint(condition=Q(progress__gte=0) & Q(progress__lte=100), name="%(class)s_progress_range"),
        ]


class StimulusJob(Job):
    """One run of the stimulus pipeline: a network's layer turned into units in several bases."""

    network = models.ForeignKey(Network, on_delete=models.PROTECT, related_name="jobs")
    image_set = models.ForeignKey(ImageSet, on_delete=models.PROTECT, related_name="jobs")
    layer = models.CharField(max_length=200)
    bases = models.CharField(max_length=200, default="neuron,pca,nmf", help_text="comma-separated")
    n_units = models.PositiveIntegerField(default=6, validators=[MinValueValidator(1)])
    seed = models.IntegerField(default=0)
    parameters = models.JSONField(default=dict, blank=True, help_text="further pipeline parameters")

    artifact = models.CharField(max_length=500, blank=True, help_text="folder under ARTIFACT_ROOT")
    summary = models.JSONField(default=dict, blank=True, help_text="the manifest without its units")

    #: What the pipeline ran with: once the job has run, its units are this run's, so these never change
    #: in place; other settings are a new job (the admin's "Relaunch as new job").
    PARAMETER_FIELDS = ("network", "image_set", "layer", "bases", "n_units", "seed", "parameters")

    def __str__(self):
        return f"{self.network} {self.layer} [{self.bases}] #{self.pk}"

    def has_run(self):
        """Whether the stored row has been taken up by a worker (or finished): its parameters are history."""
        return self.pk is not None and type(self).objects.filter(pk=self.pk).filter(
            ~Q(status=Job.Status.QUEUED) | Q(started__isnull=False)).exists()

    def parameter_changes(self, update_fields=None):
        changed = _differences(self, self.PARAMETER_FIELDS, update_fields)
        if changed and self.has_run():
            return changed
        return {}

    def _refuse_parameter_changes(self, update_fields=None):
        changed = self.parameter_changes(update_fields)
        if changed:
            raise Frozen(
                f"Stimulus job {self.pk} has run: its units were made with these settings, so "
                f"{', '.join(changed)} cannot change. Use the action \"Relaunch as new job\" to run other settings.")

    def clean(self):
        self._refuse_parameter_changes()

    def save(self, *args, **kwargs):
        self._refuse_parameter_changes(kwargs.get("update_fields"))
        super().save(*args, **kwargs)

    @property
    def basis_list(self):
        return [b.strip() for b in self.bases.split(",") if b.strip()]


class StimulusShard(Job):
    """One shard of a sharded stimulus job's activation pass (`stimuli.shards`): a range of the image
    set, run by its own task on the gpu queue and written to the job's private shard folder. It lives
    a job's lifecycle of its own (claim, heartbeat, retry on a dead worker); a cancel is asked of the
    stimulus job, which every shard reads (`studyapp.shards`)."""

    job = models.ForeignKey(StimulusJob, on_delete=models.CASCADE, related_name="shards")
    index = models.PositiveIntegerField()
    worker = models.CharField(max_length=200, blank=True, help_text="the Celery worker that took it up last")

    class Meta(Job.Meta):
        ordering = ["job", "index"]
        constraints = [
            *Job.Meta.constraints,
            models.UniqueConstraint(fields=["job", "index"], name="unique_shard_per_job"),
        ]

    def __str__(self):
        return f"shard {self.index + 1} of stimulus job {self.job_id}"


class Unit(models.Model):
    """A unit of a layer in one basis: a neuron, a principal component or a sparse-code atom."""

    job = models.ForeignKey(StimulusJob, on_delete=models.CASCADE, related_name="units")
    layer = models.CharField(max_length=200)
    basis = models.CharField(max_length=40)
    index = models.PositiveIntegerField()
    measures = models.JSONField(default=dict, blank=True)
    # The occlusion 2AFC's pairs (stimuli.measures.occlusion) with published image names: each
    # {"kind": "main"|"catch", "a", "b", "correct", "delta_a", "delta_b"}. The answer key: never served.
    occlusion_trials = models.JSONField(default=list, blank=True)

    class Meta:
        ordering = ["job", "layer", "basis", "index"]
        constraints = [
            models.UniqueConstraint(fields=["job", "layer", "basis", "index"], name="unique_unit_per_job"),
        ]

    def __str__(self):
        return self.key

    @property
    def key(self):
        return f"{self.layer}:{self.basis}:{self.index}"


class Exemplar(models.Model):
    class Role(models.TextChoices):
        REFERENCE_MAX = "reference_max", "maximally activating reference"
        REFERENCE_MIN = "reference_min", "minimally activating reference"
        QUERY_MAX = "query_max", "query from the top band"
        QUERY_MIN = "query_min", "query from the bottom band"
        STRIP = "strip", "ordered strip"
        OVERLAY_MAX = "overlay_max", "attribution overlay of a maximally activating reference"
        SYNTHETIC_MAX = "synthetic_max", "feature visualization raising the unit"
        SYNTHETIC_MIN = "synthetic_min", "feature visualization lowering the unit"

    unit = models.ForeignKey(Unit, on_delete=models.CASCADE, related_name="exemplars")
    role = models.CharField(max_length=20, choices=Role.choices)
    group = models.PositiveSmallIntegerField(
        default=0, help_text="which of the unit's ordered strips (role strip); 0 for every other role")
    position = models.PositiveIntegerField()
    image = models.CharField(max_length=300, help_text="published image: a file name in MEDIA_ROOT")
    percentile = models.FloatField(
        null=True, blank=True,
        help_text="a query candidate's activation percentile (stimuli.exemplars); empty for other roles and for "
                  "artifacts written before candidates recorded it")

    class Meta:
        ordering = ["unit", "role", "group", "position"]
        constraints = [
            models.UniqueConstraint(fields=["unit", "role", "group", "position"], name="unique_exemplar_slot"),
        ]

    def __str__(self):
        group = f"{self.group}:" if self.role == self.Role.STRIP else ""
        return f"{self.unit} {self.role}[{group}{self.position}]"


class Study(models.Model):
    class Status(models.TextChoices):
        DRAFT = "draft"
        LIVE = "live"
        PAUSED = "paused"
        CLOSED = "closed"

    class Recruitment(models.TextChoices):
        PROLIFIC = "prolific", "Prolific"
        MTURK = "mturk", "Amazon Mechanical Turk"
        LINK = "link", "Plain link"

    slug = models.SlugField(unique=True, help_text="the participant link's name, /s/<slug>/; a new version of the "
                                                    "study gets its own, <slug>-v2, -v3 …")
    title = models.CharField(max_length=200)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.DRAFT)
    version = models.PositiveIntegerField(default=1, editable=False,
                                          help_text="1 for a new study; one more for each new version of it")
    previous_version = models.ForeignKey(
        "self", null=True, blank=True, editable=False, on_delete=models.PROTECT, related_name="next_versions",
        help_text="the version this one was made from, whose answers stay with it")
    seed = models.IntegerField(default=0, help_text="trial lists are drawn from this seed and the participant")

    consent_text = models.TextField(blank=True, default=texts.DEFAULT_CONSENT, help_text="Markdown")
    instructions_text = models.TextField(blank=True, default=texts.DEFAULT_INSTRUCTIONS, help_text="Markdown")
    debrief_text = models.TextField(blank=True, default=texts.DEFAULT_DEBRIEF, help_text="Markdown")

    n_practice = models.PositiveIntegerField(default=5)
    practice_max_attempts = models.PositiveIntegerField(default=3, validators=[MinValueValidator(1)])
    practice_feedback = models.BooleanField(default=True)
    n_main = models.PositiveIntegerField(default=18, help_text="main trials, catch trials included")
    catch_ratio = models.FloatField(
        default=1 / 9, validators=[MinValueValidator(0.0), MaxValueValidator(0.5)],
        help_text="share of main trials whose query is a reference image",
    )
    response_lock_ms = models.PositiveIntegerField(default=1500)
    confidence = models.BooleanField(default=True, help_text="six buttons (query × confidence 1–3) or two")
    fullscreen = models.BooleanField(default=True)
    min_width = models.PositiveIntegerField(default=800)
    min_height = models.PositiveIntegerField(default=600)

    recruitment = models.CharField(max_length=10, choices=Recruitment.choices, default=Recruitment.LINK)
    completion_url = models.CharField(
        max_length=500, blank=True,
        help_text="where a participant goes when done; {code} and the link's parameters fill in, e.g. "
                  "https://app.prolific.com/submissions/complete?cc={code} or "
                  "{turkSubmitTo}/mturk/externalSubmit?assignmentId={assignmentId}",
    )
    completion_code = models.CharField(max_length=100, blank=True)
    allow_plain_link = models.BooleanField(
        default=False, help_text="also admit arrivals without the platform's parameters (a plain link); "
                                 "a Prolific or MTurk study otherwise requires them")
    participants_per_condition = models.PositiveIntegerField(
        default=30, help_text="between: participants per condition; within and mixed: participants per group of "
                              "between-participant levels, spread over the counterbalancing orders")

    class Design(models.TextChoices):
        BETWEEN = "between", "between participants: each participant does one condition"
        WITHIN = "within", "within participants: each participant does every condition, in blocks"
        MIXED = "mixed", "mixed: the between-participant factors vary across participants, the rest within"

    class Counterbalancing(models.TextChoices):
        WILLIAMS = "williams", "balanced Latin square (Williams design, first-order carry-over)"
        PERMUTATIONS = "permutations", "all orders"
        NONE = "none", "one order for everybody"

    class UnitAllocation(models.TextChoices):
        ALL = "all", "every participant sees every unit in every condition"
        DISJOINT = "disjoint", "a participant sees each unit in at most one condition (Latin-square rotation)"

    design = models.CharField(max_length=10, choices=Design.choices, default=Design.BETWEEN)
    between_factors = models.JSONField(
        default=list, blank=True, help_text="mixed designs: the condition factors that vary between participants, "
                                            "e.g. [\"basis\"]")
    trials_per_block = models.PositiveIntegerField(
        default=0, help_text="within and mixed: main trials per block; 0: all of a condition's trials (n_main) in "
                             "its blocks, split evenly")
    blocks_per_condition = models.PositiveIntegerField(default=1, validators=[MinValueValidator(1)])
    block_group_by = models.JSONField(
        default=list, blank=True, help_text="factors whose blocks stay together, e.g. [\"n_references\", "
                                            "\"min_references\"] (Borowski et al.'s reference sets)")
    block_alternate = models.CharField(
        max_length=20, blank=True, help_text="a factor that alternates inside each group, e.g. reference_type; "
                                             "blank: none")
    counterbalancing = models.CharField(max_length=20, choices=Counterbalancing.choices,
                                        default=Counterbalancing.WILLIAMS)
    unit_allocation = models.CharField(max_length=10, choices=UnitAllocation.choices, default=UnitAllocation.ALL)
    practice_block = models.CharField(
        max_length=100, blank=True, help_text="the condition whose trials the practice shows; blank: the first "
                                              "block's")
    time_limit_minutes = models.PositiveIntegerField(
        default=60, help_text="a participant slot is released after this long without finishing",
    )
    consent_grace_minutes = models.PositiveIntegerField(
        default=10, validators=[MinValueValidator(1)],
        help_text="a slot whose participant has not consented after this long is released",
    )

    min_catch_accuracy = models.FloatField(default=0.8, validators=[MinValueValidator(0), MaxValueValidator(1)])
    min_instructions_seconds = models.FloatField(default=15.0)
    exclude_one_side = models.BooleanField(
        default=True, help_text="exclude a participant who chose the same side on every main and catch trial, "
                                "once that many answers make it unlikely by chance (see the next setting)")
    one_side_alpha = models.FloatField(
        default=ONE_SIDE_ALPHA, validators=[MinValueValidator(1e-9), MaxValueValidator(0.5)],
        help_text="the one-side rule's false-positive rate: with a fair coin for the correct side, an honest "
                  "participant uses one side on all n answers with chance 2^(1-n), so the rule applies from the "
                  "first n where that is below this rate (0.001: from 11 answers)")
    min_total_minutes = models.FloatField(null=True, blank=True, validators=[MinValueValidator(0)],
                                          help_text="exclude faster finishers; empty: no lower bound")
    max_total_minutes = models.FloatField(null=True, blank=True, validators=[MinValueValidator(0)],
                                          help_text="exclude slower finishers; empty: no upper bound")
    min_answer_interval_ms = models.PositiveIntegerField(
        null=True, blank=True,
        help_text="an answer that reaches the server sooner than this after the previous one is too fast for a "
                  "person (the buttons stay locked for the response lock, and the answer still has to travel); "
                  "empty: the response lock")
    max_fast_answer_share = models.FloatField(
        null=True, blank=True, default=0.25, validators=[MinValueValidator(0), MaxValueValidator(1)],
        help_text="exclude a participant when more than this share of their answers arrived too fast; a "
                  "connection that stalls and then sends the waiting answers at once makes a few; empty: off")

    # Flags: evidence of automation or inattention, shown per participant and exported as flag_* columns.
    flag_webdriver = models.BooleanField(
        default=True, help_text="flag a browser that reports it is driven by automation (navigator.webdriver)")
    max_focus_losses = models.PositiveIntegerField(
        null=True, blank=True, default=2,
        help_text="flag a participant who left the study's window or tab more often than this during the "
                  "trials; empty: off")
    max_fullscreen_exits = models.PositiveIntegerField(
        null=True, blank=True, default=1,
        help_text="flag a participant who left full screen more often than this during the trials; empty: off")
    flag_client_time = models.BooleanField(
        default=True, help_text="flag a browser whose instructions reading time is longer than the server "
                                "measured between serving the instructions and receiving the answer")
    exclude_flagged = models.BooleanField(
        default=True, help_text="count flagged participants as excluded (excl_flagged); off: flagged, kept")

    # Eligibility and the participant's screen (studyapp.screening).
    desktop_only = models.BooleanField(
        default=False, help_text="turn away phones and tablets (screen-out redirect below)")
    supported_browsers = models.CharField(
        max_length=200, blank=True,
        help_text="comma-separated browsers admitted (chrome, firefox, edge, safari, opera); blank: any")
    virtual_chinrest = models.BooleanField(
        default=False, help_text="before the practice, measure the screen's pixels per cm (credit-card method) "
                                 "and the viewing distance (blind-spot task) with jsPsych's virtual-chinrest plugin")
    min_viewing_distance_cm = models.FloatField(
        null=True, blank=True, validators=[MinValueValidator(0)],
        help_text="screen out a viewing distance the chinrest measures below this; empty: no check")
    max_viewing_distance_cm = models.FloatField(
        null=True, blank=True, validators=[MinValueValidator(0)],
        help_text="screen out a viewing distance the chinrest measures above this; empty: no check")
    image_visual_angle_deg = models.FloatField(
        null=True, blank=True, validators=[MinValueValidator(0.1), MaxValueValidator(60)],
        help_text="scale each query image to this visual angle (degrees) from the chinrest's measurement; "
                  "empty: images at their own pixel size")
    screen_out_code = models.CharField(
        max_length=100, blank=True,
        help_text="Prolific's screen-out completion code: a participant who fails an eligibility check is sent "
                  "to the screen-out URL with it (and paid the study's fixed screen-out amount)")
    screen_out_url = models.CharField(
        max_length=500, blank=True,
        help_text="where a screened-out participant goes; {code} and the link's parameters fill in, e.g. "
                  "https://app.prolific.com/submissions/complete?cc={code}")

    # Review of Prolific submissions and bonuses (studyapp.prolific).
    prolific_study_id = models.CharField(
        max_length=100, blank=True,
        help_text="the study's id on Prolific, for bonus payments; blank: the STUDY_ID its participants arrived with")
    class FailedCatch(models.TextChoices):
        REJECT = "reject", "reject (Prolific's category FAILED_CHECK, with the evidence)"
        REVIEW = "review", "review by hand"

    failed_catch_decision = models.CharField(
        max_length=10, choices=FailedCatch.choices, default=FailedCatch.REJECT,
        help_text="prolific_review: what a completed submission whose catch-trial accuracy is below the minimum "
                  "gets")
    bonus_per_correct = models.FloatField(
        default=0.0, validators=[MinValueValidator(0)],
        help_text="bonus per correct main trial (catch trials not counted), in the Prolific study's currency, "
                  "e.g. 0.05; 0: no bonus")
    bonus_cap = models.FloatField(
        null=True, blank=True, validators=[MinValueValidator(0)],
        help_text="the most bonus one participant gets; empty: no cap")

    created = models.DateTimeField(auto_now_add=True)

    #: What an answer means: the trial plan every participant's list was built from, and the link and
    #: seed that name the study and its draws. Frozen once the study has an answer (`has_answers`);
    #: texts, recruitment, quotas, time limits, exclusion rules and flags stay editable and are logged
    #: (`StudyChange`). The conditions have their own list (`Condition.MEANING_FIELDS`).
    MEANING_FIELDS = ("slug", "seed", "n_practice", "practice_max_attempts", "practice_feedback", "n_main",
                      "catch_ratio", "response_lock_ms", "confidence", "fullscreen", "min_width", "min_height",
                      "design", "between_factors", "trials_per_block", "blocks_per_condition", "block_group_by",
                      "block_alternate", "counterbalancing", "unit_allocation", "practice_block")
    #: Every field a researcher sets; a change to any of them is logged.
    LOGGED_FIELDS = None  # filled below the class: every editable concrete field

    class Meta:
        verbose_name_plural = "studies"
        constraints = [
            models.CheckConstraint(condition=Q(catch_ratio__gte=0) & Q(catch_ratio__lte=0.5), name="catch_ratio_range"),
            # A version has at most one next version: versions form a line, never a tree.
            models.UniqueConstraint(fields=["previous_version"], name="one_next_version",
                                    condition=Q(previous_version__isnull=False)),
        ]

    def main_trials_per_condition(self):
        """Main trials (catch trials included) a participant does in each of their conditions: a within or
        mixed design's blocks of `trials_per_block`, else `n_main` (designs.block_sizes)."""
        if self.design != self.Design.BETWEEN and self.trials_per_block:
            return self.trials_per_block * self.blocks_per_condition
        return self.n_main

    def has_answers(self):
        """Whether a participant (not a researcher's preview) has answered a trial of this study."""
        return self.pk is not None and Response.objects.filter(
            participant__study_id=self.pk, participant__is_preview=False).exists()

    def frozen_message(self, fields):
        return (f"Study \"{self.slug}\" (version {self.version}) has answers, and {', '.join(fields)} "
                f"define{'s' if len(fields) == 1 else ''} what they mean, so "
                f"{'it' if len(fields) == 1 else 'they'} cannot change in place. {self.new_version_hint()}")

    def version_ids(self):
        """This version's pk and its earlier versions', newest first; no query for a first version."""
        ids, previous = [self.pk], self.previous_version_id
        while previous is not None:
            ids.append(previous)
            previous = Study.objects.filter(pk=previous).values_list("previous_version_id", flat=True).first()
        return ids

    def new_version_hint(self):
        return (f"Make version {self.version + 1} of the study (the button at the top of its page, or the action "
                f"\"New version\" in the study list) and change it there; the answers stay with version "
                f"{self.version}.")

    def _check_frozen(self, changes):
        frozen = [f for f in self.MEANING_FIELDS if f in changes]
        if frozen and self.has_answers():
            raise Frozen(self.frozen_message(frozen))

    def clean(self):
        if (self.min_total_minutes is not None and self.max_total_minutes is not None
                and self.min_total_minutes > self.max_total_minutes):
            raise ValidationError({"max_total_minutes": "The upper bound of the total time is below its lower bound."})
        self._check_frozen(_differences(self, self.MEANING_FIELDS))

    def save(self, *args, **kwargs):
        """Refuses a change of what answers mean (`MEANING_FIELDS`) once there are answers, and logs every
        other change with its author: set `changed_by` (a user) on the instance before saving."""
        changes = _differences(self, self.LOGGED_FIELDS, kwargs.get("update_fields"))
        self._check_frozen(changes)
        with transaction.atomic():
            super().save(*args, **kwargs)
            log_changes(self, changes, getattr(self, "changed_by", None))

    def __str__(self):
        return self.title

    def get_absolute_url(self):
        return reverse("studyapp:landing", args=[self.slug])


Study.LOGGED_FIELDS = tuple(f.name for f in Study._meta.concrete_fields if f.editable and not f.primary_key
                            and not isinstance(f, (models.DateTimeField,)))


def _shown(value):
    if value is None:
        return ""
    if isinstance(value, (dict, list)):
        return json.dumps(value, sort_keys=True)
    return str(value)


def log_changes(study, changes, author=None, prefix=""):
    """One `StudyChange` row per changed field: field name (with `prefix`), old and new value, author, time."""
    author = author if getattr(author, "pk", None) is not None else None
    StudyChange.objects.bulk_create([
        StudyChange(study=study, field=f"{prefix}{name}", old=_shown(old), new=_shown(new), author=author,
                    author_name=author.get_username() if author else "")
        for name, (old, new) in changes.items()
        # A form strips the text it saves: the trailing newline of a default text is not a change.
        if not (isinstance(old, str) and isinstance(new, str) and old.strip() == new.strip())
    ])


class StudyChange(models.Model):
    """One change of a study or one of its conditions, as saved: which field, its old and new value, who and
    when. Django's admin log says only that an object changed; this says what it was before."""

    study = models.ForeignKey(Study, on_delete=models.CASCADE, related_name="changes")
    field = models.CharField(max_length=200)
    old = models.TextField(blank=True)
    new = models.TextField(blank=True)
    author = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                               related_name="+")
    author_name = models.CharField(max_length=150, blank=True,
                                   help_text="the author's user name when it was made; empty: a command or script")
    at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["study", "at", "pk"]

    def __str__(self):
        return f"{self.study.slug}: {self.field} {self.old!r} → {self.new!r}"


# Exemplar lists per unit pk. An import replaces a job's units by new rows (new pks) and never edits a
# unit's exemplars, so an entry never goes stale; a launch burst then reads them once per process, not
# once per arrival.
_UNIT_EXEMPLARS: dict = {}
UNIT_EXEMPLARS_CACHED = 4096


def _load_unit_exemplars(keys, occlusion=None):
    """Unit pk -> UnitExemplars, in one query; `keys`: unit pk -> its key (`conv2:nmf:0`), which messages
    name it by; `occlusion`: unit pk -> its `occlusion_trials`, read with the keys."""
    unit_ids = list(keys)
    occlusion = occlusion or {}
    lists = defaultdict(lambda: defaultdict(list))
    strips = defaultdict(lambda: defaultdict(list))
    percentiles = defaultdict(lambda: defaultdict(list))
    exemplars = Exemplar.objects.filter(unit__in=unit_ids).order_by("unit_id", "role", "group", "position")
    for unit_id, role, group, image, percentile in exemplars.values_list("unit_id", "role", "group", "image",
                                                                         "percentile"):
        if role == Exemplar.Role.STRIP:
            strips[unit_id][group].append(image)
        else:
            lists[unit_id][role].append(image)
            if percentile is not None:
                percentiles[unit_id][role].append(percentile)
    return {pk: UnitExemplars(
        unit_id=pk, key=keys[pk],
        references_max=lists[pk][Exemplar.Role.REFERENCE_MAX],
        references_min=lists[pk][Exemplar.Role.REFERENCE_MIN],
        queries_max=lists[pk][Exemplar.Role.QUERY_MAX],
        queries_min=lists[pk][Exemplar.Role.QUERY_MIN],
        strips=[strips[pk][group] for group in sorted(strips[pk])],
        overlays_max=lists[pk][Exemplar.Role.OVERLAY_MAX],
        synthetic_max=lists[pk][Exemplar.Role.SYNTHETIC_MAX],
        synthetic_min=lists[pk][Exemplar.Role.SYNTHETIC_MIN],
        queries_max_percentile=percentiles[pk][Exemplar.Role.QUERY_MAX],
        queries_min_percentile=percentiles[pk][Exemplar.Role.QUERY_MIN],
        occlusion=[p for p in occlusion.get(pk) or [] if p.get("kind") != "catch"],
        occlusion_catch=[p for p in occlusion.get(pk) or [] if p.get("kind") == "catch"],
    ) for pk in unit_ids}


class Condition(models.Model):
    """One arm of a study: units of one basis of one layer, shown with one kind of references."""

    class ReferenceType(models.TextChoices):
        NATURAL = "natural", "9 + 9 natural references"
        MAX_ONLY = "max_only", "maximally activating references only"
        NONE = "none", "no references (chance baseline)"
        OVERLAY = "overlay", "9 + 9 natural references, the most activating with attribution heat maps"
        SYNTHETIC = "synthetic", "feature visualizations as references (queries stay natural)"
        MIXED = "mixed", "feature visualizations and natural references side by side"

    class Paradigm(models.TextChoices):
        REFERENCE_2AFC = "reference_2afc", "reference 2AFC (Borowski et al.)"
        ORDERED_STRIP = "ordered_strip", "ordered strip vs shuffled strip (Dey et al.)"
        OCCLUSION_2AFC = "occlusion_2afc", "occlusion 2AFC: which occlusion changes the unit more (Zimmermann et al.)"

    study = models.ForeignKey(Study, on_delete=models.CASCADE, related_name="conditions")
    name = models.CharField(max_length=100)
    job = models.ForeignKey(StimulusJob, on_delete=models.PROTECT, related_name="conditions")
    layer = models.CharField(max_length=200)
    basis = models.CharField(max_length=40)
    reference_type = models.CharField(max_length=20, choices=ReferenceType.choices, default=ReferenceType.NATURAL)
    paradigm = models.CharField(max_length=20, choices=Paradigm.choices, default=Paradigm.REFERENCE_2AFC)
    n_references = models.PositiveSmallIntegerField(
        default=9, validators=[MinValueValidator(1), MaxValueValidator(9)], help_text="references per side, 1-9")
    min_references = models.BooleanField(
        default=True, help_text="show the minimally activating references (the max_only reference type never does)")
    query_band_low = models.FloatField(
        null=True, blank=True, validators=[MinValueValidator(0), MaxValueValidator(100)],
        help_text="lowest activation percentile of the maximal query; empty: the job's own band")
    query_band_high = models.FloatField(
        null=True, blank=True, validators=[MinValueValidator(0), MaxValueValidator(100)],
        help_text="highest activation percentile of the maximal query; empty: the job's own band")
    block_instructions = models.TextField(blank=True, help_text="Markdown: the short screen opening each of its blocks")

    #: What an answer in this condition means; frozen, like adding or removing a condition, once the study
    #: has answers. (The design factors of a within-participant design join this list when they land.)
    MEANING_FIELDS = ("study", "name", "job", "layer", "basis", "reference_type", "paradigm", "n_references",
                      "min_references", "query_band_low", "query_band_high")

    class Meta:
        ordering = ["study", "pk"]
        constraints = [models.UniqueConstraint(fields=["study", "name"], name="unique_condition_name")]

    def __str__(self):
        return self.name

    def _check_frozen(self, changes, action=None):
        if not (changes or action) or self.study_id is None:
            return
        study = Study.objects.filter(pk=self.study_id).first()
        if study is not None and study.has_answers():
            what = action or f"changing the {', '.join(changes)} of the condition \"{self.name}\""
            raise Frozen(f"Study \"{study.slug}\" (version {study.version}) has answers, and its conditions define "
                         f"what they mean: {what} is refused. {study.new_version_hint()}")

    def _changes(self, update_fields=None):
        if self.pk is None or self._state.adding:
            return {}
        return _differences(self, self.MEANING_FIELDS, update_fields)

    def save(self, *args, **kwargs):
        adding = self.pk is None or self._state.adding
        changes = self._changes(kwargs.get("update_fields"))
        self._check_frozen(changes, action=f"adding the condition \"{self.name}\"" if adding else None)
        with transaction.atomic():
            super().save(*args, **kwargs)
            if changes:
                log_changes(self.study, changes, getattr(self, "changed_by", None),
                            prefix=f"condition \"{self.name}\": ")

    def delete(self, *args, **kwargs):
        self._check_frozen({}, action=f"removing the condition \"{self.name}\"")
        return super().delete(*args, **kwargs)

    def units(self):
        return Unit.objects.filter(job_id=self.job_id, layer=self.layer, basis=self.basis)

    def query_band_limits(self, job=None):
        """(low, high) percentiles of the band the maximal query is drawn from: the condition's own band, or
        its job's own (`job`, when given, stands for it) where it sets none."""
        if self.query_band_low is not None and self.query_band_high is not None:
            return self.query_band_low, self.query_band_high
        return job_query_bands(job or self.job)[0]

    def query_band_for(self, units):
        """The band a trial list over `units` (this condition's, as `unit_exemplars` gives them) draws its
        queries from, for `trials.in_query_band`; None where they carry no percentiles (their job's one
        band). Built per arrival: the job's bands come from a per-process cache, not its row."""
        if not any(u.queries_max_percentile for u in units):
            return None
        if self.query_band_low is not None and self.query_band_high is not None:
            return self.query_band_low, self.query_band_high
        return cached_job_query_bands(self.job_id, units[0].unit_id)[0]

    def query_band(self, job=None):
        """The band of `query_band_limits` as the export writes it, e.g. "90-100"."""
        return band_name(self.query_band_limits(job))

    def query_band_error(self):
        """Why the job cannot serve the condition's query band; None when it can.

        A job renders query candidates for the bands of its `query_bands` (stimuli.exemplars), each with its
        activation percentile; the condition draws from those in its band (trials.in_query_band), and the
        band is served when each of its units has a query pair for each main trial it gets. An artifact
        written before candidates carried their percentile serves its one band only."""
        if self.query_band_low is None and self.query_band_high is None:
            return None
        if self.query_band_low is None or self.query_band_high is None:
            return "set both ends of the query band, or neither (the job's own band)"
        if not 0 <= self.query_band_low < self.query_band_high <= 100:
            return f"the query band {self.query_band_low:g}-{self.query_band_high:g} is not a percentile range"
        if self.job_id is None or not self.layer or not self.basis:
            return None
        units = self.unit_exemplars(fresh=True)
        if not units:
            return None  # what clean() says of a condition without units
        band = (self.query_band_low, self.query_band_high)
        bands = job_query_bands(self.job)
        served = ", ".join(band_name(b) for b in bands)
        if not any(u.queries_max_percentile for u in units):
            if band != bands[0]:
                return (f"job {self.job_id} renders query candidates from the band {served} only (its artifact "
                        f"records no percentile per candidate); for the band {band_name(band)} run a job whose "
                        f"query_bands include {band_name(band)}")
            return None
        study = self.study
        n_main = study.main_trials_per_condition()
        needed = max(1, main_pairs_per_unit(n_main, study.catch_ratio, len(units)))
        pairs = [(u.name, len(in_query_band(u, band).queries_max)) for u in units]
        short = [(name, n) for name, n in pairs if n < needed]
        if not short:
            return None
        name, n = min(short, key=lambda item: item[1])
        others = f" (and {len(short) - 1} more of its units fewer than that)" if len(short) > 1 else ""
        return (f"job {self.job_id} renders query candidates for the band{'s' if len(bands) > 1 else ''} {served}; "
                f"in the band {band_name(band)} unit {name} has {n} query pair{'' if n == 1 else 's'}{others}, and "
                f"{n_main} main trials over {len(units)} units need {needed} per unit: choose a band the job "
                f"serves, or run a job whose query_bands include {band_name(band)}")

    def unit_exemplars(self, fresh=False):
        """The condition's units with their exemplar lists, in the artifact's order: what a trial list is
        built from. `fresh`: read from the database, past the per-process cache (a check that must see
        the rows as they are now)."""
        rows = list(self.units().order_by("index").values_list("pk", "index", "occlusion_trials"))
        keys = {pk: f"{self.layer}:{self.basis}:{index}" for pk, index, _ in rows}
        occlusion = {pk: pairs for pk, _, pairs in rows}
        units = list(keys)
        if fresh:
            loaded = _load_unit_exemplars(keys, occlusion)
            return [loaded[pk] for pk in units]
        missing = [pk for pk in units if pk not in _UNIT_EXEMPLARS]
        if missing:
            if len(_UNIT_EXEMPLARS) + len(missing) > UNIT_EXEMPLARS_CACHED:
                _UNIT_EXEMPLARS.clear()
            _UNIT_EXEMPLARS.update(_load_unit_exemplars({pk: keys[pk] for pk in missing}, occlusion))
        return [_UNIT_EXEMPLARS[pk] for pk in units]

    def clean(self):
        """Refuse, when the researcher saves it, a condition that changes what answers mean or that no
        participant could be given."""
        adding = self.pk is None or self._state.adding
        self._check_frozen(self._changes(), action=f"adding the condition \"{self.name}\"" if adding else None)
        band_error = self.query_band_error()
        if band_error:
            raise ValidationError({"query_band_low": band_error})
        if self.job_id is None or not self.layer or not self.basis:
            return
        units = self.units()
        if not units.exists():
            available = sorted({f"{layer} / {basis}" for layer, basis in
                                Unit.objects.filter(job=self.job).values_list("layer", "basis")})
            raise ValidationError(
                f"Job {self.job_id} has no units for layer {self.layer!r} and basis {self.basis!r}"
                + (f"; it has {', '.join(available)}." if available else "; its artifact is not imported yet."))
        # Everything else a participant's trial list needs (strips, overlays, query pairs) is what
        # building one checks: build one, as an arriving participant would.
        try:
            band = self.query_band_limits()
            build_trial_list([in_query_band(u, band) for u in self.unit_exemplars(fresh=True)],
                             n_practice=self.study.n_practice, n_main=self.study.n_main,
                             catch_ratio=self.study.catch_ratio, reference_type=self.reference_type, seed=0,
                             paradigm=self.paradigm)
        except ValueError as exc:
            keys = {unit.pk: unit.key for unit in units}
            raise ValidationError(f"No participant could be given this condition: {named_units(str(exc), keys)}.") \
                from None

#: the stimulus pipeline's default query_percentile (stimuli.config), for a job whose summary predates it
DEFAULT_QUERY_PERCENTILE = 10.0


def job_query_bands(job):
    """The (low, high) bands a job renders query candidates for, its own band first: as its artifact's
    summary records them (stimuli.artifact.query_bands), else as its parameters ask (a job not run yet, or
    one imported before summaries kept its parameters)."""
    summary = job.summary or {}
    if isinstance(summary.get("parameters"), dict):
        try:
            return artifact_query_bands(summary)
        except ManifestError:
            pass
    parameters = job.parameters or {}
    if parameters.get("query_bands"):
        return [(float(low), float(high)) for low, high in parameters["query_bands"]]
    return [(100.0 - float(parameters.get("query_percentile") or DEFAULT_QUERY_PERCENTILE), 100.0)]


# A job's bands per (job pk, pk of one of its units). An import replaces a job's units by new rows and writes
# its summary in the same transaction, so an entry never goes stale; arrivals read a job's row once per
# process, not once per condition and arrival.
_JOB_BANDS: dict = {}


def cached_job_query_bands(job_id, unit_pk):
    key = (job_id, unit_pk)
    if key not in _JOB_BANDS:
        if len(_JOB_BANDS) >= UNIT_EXEMPLARS_CACHED:
            _JOB_BANDS.clear()
        _JOB_BANDS[key] = job_query_bands(StimulusJob.objects.only("summary", "parameters").get(pk=job_id))
    return _JOB_BANDS[key]


def band_name(band):
    """A band as studies and the export write it: `90-100`."""
    return f"{band[0]:g}-{band[1]:g}"


def new_token():
    return secrets.token_urlsafe(24)


class Participant(models.Model):
    """One participation in a study. The trial list is stored at start; `answered` counts the answered
    prefix of it, so "the first unanswered trial" is the one at that position."""

    class Status(models.TextChoices):
        STARTED = "started"
        COMPLETED = "completed"
        RETURNED = "returned"
        TIMED_OUT = "timed_out", "timed out"
        SCREENED_OUT = "screened_out", "screened out"

    study = models.ForeignKey(Study, on_delete=models.CASCADE, related_name="participants")
    condition = models.ForeignKey(Condition, on_delete=models.PROTECT, related_name="participants")
    token = models.CharField(max_length=64, unique=True, default=new_token)
    external_id_hash = models.CharField(max_length=64, null=True, blank=True)
    recruitment = models.CharField(max_length=10, choices=Study.Recruitment.choices)
    recruitment_info = ParticipantJSONField(default=dict, blank=True,
                                            help_text="study/session ids, never the person's id")
    status = models.CharField(max_length=20, choices=Status.choices, default=Status.STARTED)
    is_preview = models.BooleanField(default=False, help_text="a researcher's preview: no quota, no export")
    seed = models.BigIntegerField()
    # The condition as it was when the participant was assigned: what they were shown, which the export
    # reports whatever happens to the condition's row later (`Participant.save` fills them in).
    condition_name = models.CharField(max_length=100, blank=True)
    stimulus_job = models.ForeignKey(StimulusJob, null=True, blank=True, on_delete=models.PROTECT, related_name="+")
    layer = models.CharField(max_length=200, blank=True)
    basis = models.CharField(max_length=40, blank=True)
    reference_type = models.CharField(max_length=20, blank=True)
    paradigm = models.CharField(max_length=20, blank=True)
    # Within and mixed designs: the counterbalancing order (a slot with its own quota, as a condition is
    # in a between design) and the participant's place among that order's slots, which rotates the units
    # over the conditions in a disjoint allocation.
    order = models.PositiveIntegerField(null=True, blank=True)
    order_slot = models.PositiveIntegerField(null=True, blank=True)

    consented_at = models.DateTimeField(null=True, blank=True)
    instructions_ms = models.FloatField(null=True, blank=True)
    answered = models.PositiveIntegerField(default=0)
    practice_end = models.PositiveIntegerField(default=0, help_text="position of the first main trial")
    trial_count = models.PositiveIntegerField(default=0)
    practice_attempts = models.PositiveIntegerField(default=1)
    instructions_at = models.DateTimeField(
        null=True, blank=True, help_text="when the server received the instructions' end (it served them at consent)")
    questionnaire = ParticipantJSONField(null=True, blank=True)
    user_agent = models.CharField(max_length=300, blank=True)
    # Eligibility and the screen (studyapp.screening): why a participant was screened out, and what the
    # virtual chinrest measured.
    screen_out_reason = models.CharField(max_length=20, blank=True)
    px_per_cm = models.FloatField(null=True, blank=True, validators=[MinValueValidator(0)])
    viewing_distance_cm = models.FloatField(null=True, blank=True, validators=[MinValueValidator(0)])
    image_px = models.FloatField(null=True, blank=True, validators=[MinValueValidator(0)],
                                 help_text="the query image's width on the participant's screen, in CSS pixels")

    started_at = models.DateTimeField(auto_now_add=True)
    last_seen = models.DateTimeField(auto_now_add=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["study", "started_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["study", "external_id_hash"], name="one_participation_per_recruitment_id",
                condition=Q(external_id_hash__isnull=False),
            ),
            models.CheckConstraint(condition=Q(answered__lte=models.F("trial_count")), name="answered_within_trials"),
            # An order's quota held by the database: one occupying participant per slot of an order.
            models.UniqueConstraint(
                fields=["study", "order", "order_slot"], name="one_participant_per_order_slot",
                condition=Q(order__isnull=False, is_preview=False, status__in=["started", "completed"]),
            ),
        ]

    def __str__(self):
        return f"{self.study.slug}/{self.pk}"

    #: the participant's own copy of the condition's fields, taken at assignment
    ASSIGNED = {"condition_name": "name", "stimulus_job_id": "job_id", "layer": "layer", "basis": "basis",
                "reference_type": "reference_type", "paradigm": "paradigm"}

    def save(self, *args, **kwargs):
        if (self.pk is None or self._state.adding) and self.condition_id is not None and not self.condition_name:
            # The caller's condition object (the assignment's locked row): no further query.
            for own, theirs in self.ASSIGNED.items():
                setattr(self, own, getattr(self.condition, theirs))
        super().save(*args, **kwargs)

    @property
    def pseudonym(self):
        return f"P{self.pk:05d}"


class Trial(models.Model):
    class Block(models.TextChoices):
        PRACTICE = "practice"
        MAIN = "main"

    class Kind(models.TextChoices):
        PRACTICE = "practice"
        MAIN = "main"
        CATCH = "catch"

    participant = models.ForeignKey(Participant, on_delete=models.CASCADE, related_name="trials")
    position = models.PositiveIntegerField()
    block = models.CharField(max_length=10, choices=Block.choices)
    # The condition the trial belongs to (a within-participant design shows several) and its block's
    # place in the participant's schedule; null in lists stored before designs existed.
    condition = models.ForeignKey("Condition", null=True, blank=True, on_delete=models.PROTECT,
                                  related_name="trials")
    block_index = models.PositiveIntegerField(null=True, blank=True)
    kind = models.CharField(max_length=10, choices=Kind.choices)
    attempt = models.PositiveIntegerField(null=True, blank=True)
    unit = models.ForeignKey(Unit, on_delete=models.PROTECT, related_name="trials")
    # Published image names, fixed when the trial list is built so that serving a trial is a lookup.
    references_min = models.JSONField(default=list)
    references_max = models.JSONField(default=list)
    query_a = models.CharField(max_length=300, blank=True)
    query_b = models.CharField(max_length=300, blank=True)
    # The ordered-strip paradigm shows two rows instead of references and queries.
    strip_a = models.JSONField(default=list, blank=True)
    strip_b = models.JSONField(default=list, blank=True)
    # The occlusion 2AFC: the unit's score change under the occluder shown as query a and as query b.
    occlusion_delta_a = models.FloatField(null=True, blank=True)
    occlusion_delta_b = models.FloatField(null=True, blank=True)
    correct_query = models.CharField(max_length=1, choices=[("a", "a"), ("b", "b")])
    served_at = models.DateTimeField(null=True, blank=True, help_text="when a trial list first held this trial")

    class Meta:
        ordering = ["participant", "position"]
        constraints = [
            models.UniqueConstraint(fields=["participant", "position"], name="unique_trial_position"),
            models.CheckConstraint(condition=Q(correct_query__in=["a", "b"]), name="trial_correct_query_ab"),
        ]

    def __str__(self):
        return f"{self.participant} #{self.position} ({self.kind})"


class Response(models.Model):
    trial = models.OneToOneField(Trial, on_delete=models.CASCADE, related_name="response")
    participant = models.ForeignKey(Participant, on_delete=models.CASCADE, related_name="responses")
    idempotency_key = models.CharField(max_length=64)
    choice = models.CharField(max_length=1, choices=[("a", "a"), ("b", "b")])
    confidence = models.PositiveSmallIntegerField(null=True, blank=True)
    correct = models.BooleanField()
    rt_ms = models.FloatField()
    client_time = models.DateTimeField(null=True, blank=True)
    server_time = models.DateTimeField(auto_now_add=True)
    # What the browser saw since the previous answer (jsPsych's interaction data); null: not reported.
    focus_losses = models.PositiveSmallIntegerField(null=True, blank=True)
    fullscreen_exits = models.PositiveSmallIntegerField(null=True, blank=True)
    webdriver = models.BooleanField(null=True, blank=True)

    class Meta:
        ordering = ["participant", "trial__position"]
        constraints = [
            models.CheckConstraint(condition=Q(choice__in=["a", "b"]), name="response_choice_ab"),
            models.CheckConstraint(
                condition=Q(confidence__isnull=True) | (Q(confidence__gte=1) & Q(confidence__lte=3)),
                name="response_confidence_range",
            ),
            models.CheckConstraint(condition=Q(rt_ms__gte=0), name="response_rt_nonnegative"),
            # A constraint rather than unique=True, which on PostgreSQL adds a second (LIKE) index that
            # every answer's insert would have to update and no query uses.
            models.UniqueConstraint(fields=["idempotency_key"], name="unique_response_idempotency_key"),
        ]

    def __str__(self):
        return f"{self.trial}: {self.choice}"


class SobolAnalysis(Job):
    """Sobol-SBSA indices of one image's regions for a network's decision: which regions, alone and
    together, move the output."""

    class Perturbation(models.TextChoices):
        INPAINT_BLUR = "inpaint-blur", "blurred image"
        MEAN = "mean", "image mean"

    network = models.ForeignKey(Network, on_delete=models.PROTECT, related_name="sobol_analyses")
    image_set = models.ForeignKey(ImageSet, on_delete=models.PROTECT, related_name="sobol_analyses")
    image_index = models.PositiveIntegerField()
    target_class = models.IntegerField(null=True, blank=True, help_text="empty: the network's own prediction")
    grid = models.PositiveIntegerField(default=4, validators=[MinValueValidator(1), MaxValueValidator(16)],
                                       help_text="regions per side")
    n_samples = models.PositiveIntegerField(default=256, validators=[MinValueValidator(8)],
                                            help_text="quasi-Monte-Carlo base samples (rounded up to a power of 2)")
    perturbation = models.CharField(max_length=20, choices=Perturbation.choices, default=Perturbation.INPAINT_BLUR)
    seed = models.IntegerField(default=0)

    result = models.JSONField(null=True, blank=True)
    image = models.CharField(max_length=300, blank=True, help_text="path under ARTIFACT_ROOT")
    overlay = models.CharField(max_length=300, blank=True, help_text="path under ARTIFACT_ROOT")

    class Meta(Job.Meta):
        verbose_name = "Sobol region analysis"
        verbose_name_plural = "Sobol region analyses"

    def __str__(self):
        return f"{self.network} image {self.image_index} ({self.grid}x{self.grid})"


class ProlificAction(models.Model):
    """One request to Prolific's API that `prolific_review` makes or made: recorded (state `pending`)
    before it is sent, and its outcome after. Prolific's ids stand here (the submission id, the bulk bonus
    payment's id), never a participant's id, which the platform keeps only as a keyed hash.

    A bulk bonus is two actions: its set-up (`bonus_setup`, whose `bulk_id` is Prolific's answer) and its
    payment (`bonus_pay`, one per set-up, which the database holds to one). Prolific's payment endpoint is
    not idempotent, so a payment recorded as pending whose outcome never arrived (a crash, a timeout, a
    5xx) is never sent again: studyapp.prolific_api reports it for a person to check."""

    class Kind(models.TextChoices):
        APPROVE = "approve"
        REJECT = "reject"
        RETURN = "return", "request return"
        BONUS_SETUP = "bonus_setup", "bonus set-up"
        BONUS_PAY = "bonus_pay", "bonus payment"

    class State(models.TextChoices):
        PENDING = "pending", "recorded, outcome unknown"
        DONE = "done"
        FAILED = "failed", "refused by Prolific"
        ABANDONED = "abandoned", "set-up never answered; replaced"

    study = models.ForeignKey(Study, on_delete=models.CASCADE, related_name="prolific_actions")
    kind = models.CharField(max_length=20, choices=Kind.choices)
    submission_id = models.CharField(max_length=100, blank=True)
    setup = models.ForeignKey("self", null=True, blank=True, on_delete=models.PROTECT, related_name="payments",
                              help_text="a payment's bulk bonus set-up")
    bulk_id = models.CharField(max_length=100, blank=True, help_text="Prolific's bulk bonus payment id")
    request = models.JSONField(default=dict, help_text="what was sent: method, path and body")
    state = models.CharField(max_length=20, choices=State.choices, default=State.PENDING)
    response = models.JSONField(null=True, blank=True)
    error = models.TextField(blank=True)
    created = models.DateTimeField(default=timezone.now)
    finished = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["study", "created", "pk"]
        constraints = [
            # Prolific's payment is not idempotent: one payment per set-up, whatever its outcome.
            models.UniqueConstraint(fields=["setup"], condition=Q(kind="bonus_pay"), name="one_payment_per_bonus_setup"),
        ]

    def __str__(self):
        target = self.submission_id or self.bulk_id or "bulk bonus"
        return f"{self.study.slug}: {self.kind} {target} ({self.state})"
