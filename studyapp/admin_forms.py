"""The admin's forms and the words it shows beside numbers: layer and basis as choices built from what
exists (the network's layers for a job, the job's units for a condition), settings at a precision a
person reads, and one sentence per measure saying what it means."""
import math
import re
from fractions import Fraction

from django import forms

from . import jobs
from .models import Condition, Network, StimulusJob, Study, Unit

# One sentence per measure a unit carries (docs/contracts.md, section 1, and the stimuli/ modules that
# compute them), shown as column tooltips, in the units list's legend and beside the unit's table.
MEASURES = {
    "explained_variance_ratio": (
        "explained variance",
        "Share of the variance of the layer's pooled activations that this unit alone reconstructs "
        "(0 to 1; stimuli.bases.unit_shares)."),
    "variance_rank": (
        "variance rank", "The unit's place when its basis's units are ordered by explained variance (1: most)."),
    "influence": (
        "influence",
        "Leino et al.'s distributional influence: the mean gradient of the class's logit with respect to the "
        "unit's code over the class's images (stimuli.measures.influence)."),
    "influence_direction": (
        "influence (direction)",
        "The same influence for a unit step along the unit's direction in activation space, comparable across "
        "bases; its sign says whether raising the unit raises the class."),
    "influence_rank": (
        "influence rank", "The unit's place by |influence| among its basis's units (1: most influential)."),
    "mis": (
        "machine score (MIS)",
        "Machine Interpretability Score: the accuracy a machine observer reaches on this unit's 2AFC trials with "
        "natural references, from image embeddings of mis_layer (stimuli.measures.mis)."),
    "mis_mean_delta": (
        "MIS mean Δ",
        "The machine observer's mean evidence Δ for the correct query over the unit's query pairs (larger: easier)."),
    "mis_deltas": (
        "MIS Δ per query pair", "The machine observer's evidence Δ for each query pair, in the order of the pairs."),
    "ablation_accuracy_drop": (
        "ablation: accuracy drop",
        "The network's accuracy minus its accuracy with this unit alone held at its mean code (stimuli.measures.ablation)."),
    "ablation_logit_change": (
        "ablation: logit change",
        "Mean absolute change of the predicted class's logit when this unit is held at its mean code."),
    "top_label_entropy": (
        "label entropy of the top images",
        "Entropy in bits of the class labels of the unit's most activating images: low means one class "
        "(stimuli.measures.purity)."),
    "response_mean": ("response mean", "Mean of the unit's code over the image set."),
    "response_std": ("response sd", "Standard deviation of the unit's code over the image set."),
    "response_min": ("response minimum", "Lowest code of the unit over the image set."),
    "response_max": ("response maximum", "Highest code of the unit over the image set."),
    "query_max_threshold": (
        "top query band from", "Queries from the top band have a code at least this high (the band's percentile)."),
    "query_min_threshold": (
        "bottom query band up to", "Queries from the bottom band have a code at most this high."),
    "synthetic_max_score": (
        "feature visualization score", "The unit's score on its strongest feature visualization (stimuli.featurevis)."),
    "natural_max_score": ("natural maximum score", "The unit's score on its most activating natural image."),
    "natural_min_score": ("natural minimum score", "The unit's score on its least activating natural image."),
    "synthetic_max_ratio": (
        "synthetic / natural maximum",
        "How far the feature visualization drives the unit beyond its best natural image (the ratio of the two "
        "scores)."),
}


def measure_label(key):
    return MEASURES.get(key, (key.replace("_", " "), ""))[0]


def measure_help(key):
    return MEASURES.get(key, ("", ""))[1]


def format_number(value):
    """A measure as a person reads it: four significant digits, integers as they are."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return "—" if value is None else str(value)
    if isinstance(value, int):
        return str(value)
    if not math.isfinite(value):
        return str(value)
    return f"{value:.4g}"


def format_ratio(value):
    """A share such as the catch ratio at three decimals, with "1 in n" where it is one (1/9: `0.111 (1 in 9)`)."""
    if value is None:
        return "—"
    text = f"{value:.3f}"
    n = round(1 / value) if value > 0 else 0
    if n > 1 and math.isclose(value * n, 1.0, rel_tol=1e-9):
        text += f" (1 in {n})"
    return text


def mis_reason(unit):
    """Why a unit has no Machine Interpretability Score, in the words of its job's settings
    (docs/contracts.md: `measures.mis` is present exactly when the job set `mis_layer`)."""
    if isinstance(unit.measures.get("mis"), (int, float)):
        return None
    job = unit.job
    if not job.parameters.get("mis_layer"):
        return "not computed: the job ran without mis_layer (set it in the job's parameters to score units)"
    if job.status != StimulusJob.Status.SUCCEEDED:
        return f"not computed yet: the job is {job.get_status_display().lower()}"
    return "not computed: the unit has no query pair for the machine observer's task"


class ShareField(forms.FloatField):
    """A share typed as a decimal (`0.111`), a fraction (`1/9`) or "1 in 9", and shown as the fraction
    when it is one: 1/9 round-trips exactly, where the decimal a person would type (0.111) would change
    how many catch trials a study of 18 main trials gets (round(18 × 0.111) = 2, but 1.998 elsewhere)."""

    widget = forms.TextInput

    _FRACTION = re.compile(r"\s*(\d+)\s*(?:/|in)\s*(\d+)\s*")

    def to_python(self, value):
        if isinstance(value, str):
            match = self._FRACTION.fullmatch(value)
            if match:
                numerator, denominator = int(match.group(1)), int(match.group(2))
                if denominator == 0:
                    raise forms.ValidationError("The denominator of a share cannot be 0.", code="invalid")
                return numerator / denominator
        return super().to_python(value)

    def prepare_value(self, value):
        if isinstance(value, float):
            short = f"{value:.6g}"
            if float(short) == value:
                return short
            fraction = Fraction(value).limit_denominator(1000)
            if fraction.numerator / fraction.denominator == value:
                return f"{fraction.numerator}/{fraction.denominator}"
            return repr(value)
        return value


class StudyForm(forms.ModelForm):
    catch_ratio = ShareField(
        min_value=0.0, max_value=0.5,
        help_text="Share of main trials whose query is a reference image: a decimal (0.111), a fraction (1/9) "
                  "or '1 in 9'. The number of catch trials is this share of N main, rounded.")

    class Meta:
        model = Study
        fields = "__all__"


class LayerSelect(forms.Select):
    """A select of layer names grouped by what they belong to (a network, a job); the admin's script
    shows only the group of the row's network or job (`data-group-from`: the select that picks it)."""

    def __init__(self, group_from, attrs=None, choices=()):
        super().__init__({**(attrs or {}), "data-group-from": group_from, "class": "studyapp-grouped"}, choices)


def _layer_groups(networks):
    """Choices of the job form's layer: one group per network that can be built here, its layers in
    the order `python -m stimuli layers` prints them; a network that cannot be built shows why."""
    groups = [("", "— choose the network first, then its layer —")]
    for network in networks:
        try:
            layers = jobs.network_layers(network)
        except ValueError as exc:
            groups.append((str(network), [("", f"({exc})")]))
            continue
        groups.append((str(network), [(layer, layer) for layer in layers]))
    return groups


class BasesField(forms.MultipleChoiceField):
    """The bases of a job as ticks; stored as the comma-separated list the pipeline reads. A single
    comma-separated value (what the model field held) is read too."""

    def to_python(self, value):
        items = super().to_python(value)
        return [b.strip() for item in items for b in item.split(",") if b.strip()]

    def prepare_value(self, value):
        if isinstance(value, str):
            return [b.strip() for b in value.split(",") if b.strip()]
        return value


def basis_choices():
    """The bases registered in stimuli.bases (imported when a job form is built, not when the admin loads)."""
    from stimuli.bases import basis_names

    return [(b, b) for b in basis_names()]


class StimulusJobForm(forms.ModelForm):
    bases = BasesField(widget=forms.CheckboxSelectMultiple, choices=basis_choices,
                       help_text="the unit bases fitted to the layer's activations (stimuli.bases)")

    class Meta:
        model = StimulusJob
        fields = ["network", "image_set", "layer", "bases", "n_units", "seed", "parameters"]
        help_texts = {"layer": "a layer of the chosen network, as `python -m stimuli layers` prints them"}

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if "layer" in self.fields:
            groups = _layer_groups(Network.objects.all())
            # A layer given already (a relaunched job's, a bound form's) stays selectable even where this
            # host cannot list its network's layers, so the form shows what the job asks for.
            current = self.initial.get("layer") or getattr(self.instance, "layer", "")
            network = self.initial.get("network") or getattr(self.instance, "network_id", None)
            network = Network.objects.filter(pk=getattr(network, "pk", network)).first() if network else None
            listed = {value for _, options in groups[1:] for value, _ in options}
            if current and network is not None and current not in listed:
                # In the network's own group: the admin's script shows only the chosen network's group.
                groups = [(label, [*(o for o in options if o[0]), (current, current)]) if label == str(network)
                          else (label, options) for label, options in groups]
            self.fields["layer"].widget = LayerSelect("network", choices=groups)

    def clean_bases(self):
        return ",".join(self.cleaned_data["bases"])

    def clean(self):
        cleaned = super().clean()
        if self.errors or not all(k in cleaned for k in ("network", "image_set", "layer")):
            return cleaned  # a job that has run shows its inputs read-only: nothing to check
        network, layer = cleaned.get("network"), cleaned.get("layer")
        if network is not None and layer:
            try:
                layers = jobs.network_layers(network)
            except ValueError as exc:
                raise forms.ValidationError({"layer": str(exc)}) from None
            if layer not in layers:
                raise forms.ValidationError({"layer": f"{network} has no layer {layer!r}; its layers are: "
                                                      f"{', '.join(layers)}."})
        # The pipeline's own validation, so a bad layer list or parameter is refused here rather than
        # failing on a GPU worker minutes later.
        try:
            jobs.pipeline_config(StimulusJob(**{k: cleaned[k] for k in self.Meta.fields if k in cleaned}))
        except ValueError as exc:
            raise forms.ValidationError(str(exc)) from None
        return cleaned


def _unit_groups(field):
    """Choices of a condition's layer or basis: per stimulus job, the values its imported units have."""
    pairs = Unit.objects.order_by("job_id", field).values_list("job_id", field).distinct()
    names = {job.pk: str(job) for job in StimulusJob.objects.filter(units__isnull=False).distinct()}
    groups = {}
    for job_id, value in pairs:
        groups.setdefault(job_id, []).append((value, value))
    return [("", "—"), *((names[job_id], values) for job_id, values in groups.items())]


class ConditionForm(forms.ModelForm):
    """Layer and basis picked from the units the chosen job's artifact holds. They stay free values for
    the model's own check (Condition.clean), so a pair the job lacks is refused with what it has."""

    class Meta:
        model = Condition
        fields = ["name", "job", "layer", "basis", "reference_type", "paradigm"]

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        # A field the admin shows read-only (a study with answers) is not in the form.
        for name in ("layer", "basis"):
            if name in self.fields:
                self.fields[name].widget = LayerSelect("job", choices=_unit_groups(name))
