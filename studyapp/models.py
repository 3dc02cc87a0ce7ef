"""The study platform's data: what a researcher configures, what the stimulus workers produce, and what
participants answer. Invariants that matter for the data (one response per trial, one participation per
recruitment id, value ranges) are database constraints, not only form validation."""
import secrets
from collections import defaultdict

import json

from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.db.models import Q
from django.urls import reverse

from . import texts
from .trials import UnitExemplars, build_trial_list


class ParticipantJSONField(models.JSONField):
    """A JSONField whose stored value never breaks the page or export that loads it: a value the JSON
    decoder cannot read back (nested deeper than Python's recursion limit, stored before the API refused
    such input) loads as a short note instead of raising, so one row cannot take down a list of them."""

    def from_db_value(self, value, expression, connection):
        try:
            return super().from_db_value(value, expression, connection)
        except (RecursionError, json.JSONDecodeError):
            return {"unreadable": f"stored JSON of {len(value)} characters that cannot be read back"}


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

    def __str__(self):
        return f"{self.network} {self.layer} [{self.bases}] #{self.pk}"

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

    slug = models.SlugField(unique=True)
    title = models.CharField(max_length=200)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.DRAFT)
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
    participants_per_condition = models.PositiveIntegerField(default=30)
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
        default=True, help_text="exclude a participant who chose the same side on every main and catch trial")
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

    created = models.DateTimeField(auto_now_add=True)

    class Meta:
        verbose_name_plural = "studies"
        constraints = [
            models.CheckConstraint(condition=Q(catch_ratio__gte=0) & Q(catch_ratio__lte=0.5), name="catch_ratio_range"),
        ]

    def clean(self):
        if (self.min_total_minutes is not None and self.max_total_minutes is not None
                and self.min_total_minutes > self.max_total_minutes):
            raise ValidationError({"max_total_minutes": "The upper bound of the total time is below its lower bound."})

    def __str__(self):
        return self.title

    def get_absolute_url(self):
        return reverse("studyapp:landing", args=[self.slug])


# Exemplar lists per unit pk. An import replaces a job's units by new rows (new pks) and never edits a
# unit's exemplars, so an entry never goes stale; a launch burst then reads them once per process, not
# once per arrival.
_UNIT_EXEMPLARS: dict = {}
UNIT_EXEMPLARS_CACHED = 4096


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

    study = models.ForeignKey(Study, on_delete=models.CASCADE, related_name="conditions")
    name = models.CharField(max_length=100)
    job = models.ForeignKey(StimulusJob, on_delete=models.PROTECT, related_name="conditions")
    layer = models.CharField(max_length=200)
    basis = models.CharField(max_length=40)
    reference_type = models.CharField(max_length=20, choices=ReferenceType.choices, default=ReferenceType.NATURAL)
    paradigm = models.CharField(max_length=20, choices=Paradigm.choices, default=Paradigm.REFERENCE_2AFC)

    class Meta:
        ordering = ["study", "pk"]
        constraints = [models.UniqueConstraint(fields=["study", "name"], name="unique_condition_name")]

    def __str__(self):
        return self.name

    def units(self):
        return Unit.objects.filter(job_id=self.job_id, layer=self.layer, basis=self.basis)

    def unit_exemplars(self):
        """The condition's units with their exemplar lists, in the artifact's order: what a trial list is
        built from."""
        indices = dict(self.units().order_by("index").values_list("pk", "index"))
        units = list(indices)
        missing = [pk for pk in units if pk not in _UNIT_EXEMPLARS]
        if missing:
            lists = defaultdict(lambda: defaultdict(list))
            strips = defaultdict(lambda: defaultdict(list))
            exemplars = Exemplar.objects.filter(unit__in=missing).order_by("unit_id", "role", "group", "position")
            for unit_id, role, group, image in exemplars.values_list("unit_id", "role", "group", "image"):
                if role == Exemplar.Role.STRIP:
                    strips[unit_id][group].append(image)
                else:
                    lists[unit_id][role].append(image)
            if len(_UNIT_EXEMPLARS) + len(missing) > UNIT_EXEMPLARS_CACHED:
                _UNIT_EXEMPLARS.clear()
            for pk in missing:
                _UNIT_EXEMPLARS[pk] = UnitExemplars(
                    unit_id=pk, key=f"{self.layer}:{self.basis}:{indices[pk]}",
                    references_max=lists[pk][Exemplar.Role.REFERENCE_MAX],
                    references_min=lists[pk][Exemplar.Role.REFERENCE_MIN],
                    queries_max=lists[pk][Exemplar.Role.QUERY_MAX],
                    queries_min=lists[pk][Exemplar.Role.QUERY_MIN],
                    strips=[strips[pk][group] for group in sorted(strips[pk])],
                    overlays_max=lists[pk][Exemplar.Role.OVERLAY_MAX],
                    synthetic_max=lists[pk][Exemplar.Role.SYNTHETIC_MAX],
                    synthetic_min=lists[pk][Exemplar.Role.SYNTHETIC_MIN],
                )
        return [_UNIT_EXEMPLARS[pk] for pk in units]

    def clean(self):
        """Refuse, when the researcher saves it, a condition that no participant could be given."""
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
            build_trial_list(self.unit_exemplars(), n_practice=self.study.n_practice, n_main=self.study.n_main,
                             catch_ratio=self.study.catch_ratio, reference_type=self.reference_type, seed=0,
                             paradigm=self.paradigm)
        except ValueError as exc:
            raise ValidationError(f"No participant could be given this condition: {exc}.") from None

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

    study = models.ForeignKey(Study, on_delete=models.CASCADE, related_name="participants")
    condition = models.ForeignKey(Condition, on_delete=models.PROTECT, related_name="participants")
    token = models.CharField(max_length=64, unique=True, default=new_token)
    external_id_hash = models.CharField(max_length=64, null=True, blank=True)
    recruitment = models.CharField(max_length=10, choices=Study.Recruitment.choices)
    recruitment_info = ParticipantJSONField(default=dict, blank=True,
                                            help_text="study/session ids, never the person's id")
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.STARTED)
    is_preview = models.BooleanField(default=False, help_text="a researcher's preview: no quota, no export")
    seed = models.BigIntegerField()

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
        ]

    def __str__(self):
        return f"{self.study.slug}/{self.pk}"

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
