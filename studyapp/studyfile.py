"""A study as a file (docs/contracts.md, section 5): written, read, checked and imported here.

The file holds the whole study a researcher sets (texts, trial plan, design, conditions and their factors,
recruitment, exclusion rules and flags) and names each stimulus job it uses by content. It never holds
participants or secrets. It is generic over the models: every editable field of a study and a condition
is written and read, so a field added to a model joins the file (and its schema, `schema()`) without a
change here.

Reading is all-or-nothing: every check runs before the first row is written, the rows are written in one
transaction, and a bad file gets one `StudyFileError` naming the field (`conditions[1].basis`).
The file's JSON Schema (`studyapp/schema/study-v1.json`) is checked with the `jsonschema` library.
"""
import copy
import dataclasses
import hashlib
import json
import re
from pathlib import Path

import jsonschema
from django.core.exceptions import NON_FIELD_ERRORS, ValidationError
from django.core.validators import MaxLengthValidator, MaxValueValidator, MinValueValidator
from django.db import IntegrityError, models, transaction

from .models import Condition, Exemplar, ImageSet, Network, StimulusJob, Study, Unit

SCHEMA_VERSION = 1
SCHEMA_FILE = Path(__file__).parent / "schema" / f"study-v{SCHEMA_VERSION}.json"

# The row's identity, its place in a line of versions and its state: an imported study is a new draft.
# prolific_study_id names one listing on Prolific: a copy run elsewhere is a listing of its own.
_STUDY_NOT_EXPORTED = {"id", "status", "version", "previous_version", "created", "prolific_study_id"}
# A completion code proves to the platform that a person finished: whoever holds it can claim payment
# without doing the study, and a file is meant to be shared (a pre-registration, a repository). A copy of
# the study run elsewhere is a new platform listing with a code of its own anyway.
_SECRET_FIELDS = {"completion_code", "screen_out_code"}
_SECRET_NAME = re.compile(r"secret|password|token|(^|_)key($|_)")
_JOB_KEY = "job-{}"


class StudyFileError(ValueError):
    """A study file that cannot be read or imported: `field` is where (`study.n_main`, `conditions[0].job`,
    `jobs.job-1`, `schema_version`, `(file)`), the message says why."""

    def __init__(self, field, message):
        self.field = field
        self.reason = message
        super().__init__(f"{field}: {message}")


# --- which fields, as JSON ---------------------------------------------------------------------------

def _is_secret(name):
    return name in _SECRET_FIELDS or bool(_SECRET_NAME.search(name))


def _fields(model, skip=()):
    return [f for f in model._meta.concrete_fields
            if f.editable and not f.primary_key and f.name not in skip and not _is_secret(f.name)]


def study_fields():
    return [f for f in _fields(Study, _STUDY_NOT_EXPORTED) if not f.is_relation]


def condition_fields():
    """Every condition field but its study; `job` is written as a key of the file's `jobs`."""
    return [f for f in _fields(Condition, {"study"}) if not f.is_relation or f.name == "job"]


def _plain_fields(model):
    return [f for f in _fields(model, {"created"}) if not f.is_relation]


def _to_json(field, obj):
    value = field.value_from_object(obj)
    if value is None or isinstance(value, (bool, int, float, str, list, dict)):
        return value
    return field.value_to_string(obj)


def _row(model_fields, obj):
    return {f.name: _to_json(f, obj) for f in model_fields}


# --- the schema ---------------------------------------------------------------------------------------

_INTEGER_FIELDS = (models.IntegerField, models.BigIntegerField, models.SmallIntegerField)


def _field_schema(field):
    if isinstance(field, models.BooleanField):
        out = {"type": "boolean"}
    elif isinstance(field, (*_INTEGER_FIELDS, models.ForeignKey)):
        out = {"type": "integer"}
        if isinstance(field, (models.PositiveIntegerField, models.PositiveSmallIntegerField,
                              models.PositiveBigIntegerField)):
            out["minimum"] = 0
    elif isinstance(field, (models.FloatField, models.DecimalField)):
        out = {"type": "number"}
    elif isinstance(field, models.JSONField):
        out = {}
    else:
        out = {"type": "string"}
    for validator in field.validators:
        if isinstance(validator, MinValueValidator) and "type" in out and out["type"] in ("integer", "number"):
            out["minimum"] = max(out.get("minimum", validator.limit_value), validator.limit_value)
        elif isinstance(validator, MaxValueValidator) and out.get("type") in ("integer", "number"):
            out["maximum"] = validator.limit_value
        elif isinstance(validator, MaxLengthValidator) and out.get("type") == "string":
            out["maxLength"] = validator.limit_value
    if field.choices and out.get("type") in ("string", "integer"):
        out["enum"] = [value for value, _ in field.flatchoices]
    if field.null and "type" in out:
        out["type"] = [out["type"], "null"]
        if "enum" in out:
            out["enum"].append(None)
    if field.help_text:
        out["description"] = str(field.help_text)
    return out


def _object_schema(model_fields, base):
    out = copy.deepcopy(base)
    out.pop("x-model", None)
    properties = {f.name: _field_schema(f) for f in model_fields}
    out["properties"] = {**properties, **out.get("properties", {})}
    out["required"] = sorted({*properties, *out.get("required", [])})
    out["additionalProperties"] = False
    return out


def schema():
    """The file's JSON Schema: `study-v1.json` with its model-backed definitions completed from the models."""
    shipped = json.loads(SCHEMA_FILE.read_text(encoding="utf-8"))
    defs = shipped["$defs"]
    condition = _object_schema(condition_fields(), defs["condition"])
    condition["properties"]["job"] = {"type": "string", "pattern": "^job-[1-9][0-9]*$",
                                      "description": "a key of the file's `jobs`"}
    job_fields = [f for f in _fields(StimulusJob) if f.name in StimulusJob.PARAMETER_FIELDS]
    job = _object_schema(job_fields, defs["job"])
    job["properties"]["network"] = {"$ref": "#/$defs/network"}
    job["properties"]["image_set"] = {"$ref": "#/$defs/image_set"}
    shipped["$defs"] = {
        "study": _object_schema(study_fields(), defs["study"]),
        "condition": condition,
        "job": job,
        "network": _object_schema(_plain_fields(Network), defs["network"]),
        "image_set": _object_schema(_plain_fields(ImageSet), defs["image_set"]),
    }
    return shipped


# --- a job by content ---------------------------------------------------------------------------------

def content_hash(job):
    """sha256 over the job's units and their exemplars (layer, basis, index, role, strip group, position, image),
    and their occlusion pairs where they have any: what its studies show and the answer key. The image names
    are the artifact's content names (the first 20 hex of the sha256 of each PNG's bytes), so the hash
    follows the artifact's images and roles, whatever database, machine or run time it came from; its
    manifest (which records when it was made) does not enter."""
    digest = hashlib.sha256()
    rows = (Exemplar.objects.filter(unit__job=job)
            .order_by("unit__layer", "unit__basis", "unit__index", "role", "group", "position")
            .values_list("unit__layer", "unit__basis", "unit__index", "role", "group", "position", "image"))
    n = 0
    for row in rows.iterator(chunk_size=5000):
        digest.update(json.dumps(row, separators=(",", ":")).encode())
        digest.update(b"\n")
        n += 1
    # the occlusion 2AFC's pairs and their answer key, for the units that have them (a job without
    # occlusion pairs hashes as it always did)
    occluded = (Unit.objects.filter(job=job).exclude(occlusion_trials=[]).order_by("layer", "basis", "index")
                .values_list("layer", "basis", "index", "occlusion_trials"))
    for row in occluded.iterator(chunk_size=500):
        digest.update(json.dumps(row, separators=(",", ":"), sort_keys=True).encode())
        digest.update(b"\n")
    return f"sha256:{digest.hexdigest()}" if n else None


def _job_entry(job, digest):
    entry = {}
    for name in StimulusJob.PARAMETER_FIELDS:
        field = StimulusJob._meta.get_field(name)
        if field.is_relation:
            entry[name] = _row(_plain_fields(field.related_model), getattr(job, name))
        else:
            entry[name] = _to_json(field, job)
    entry["content_hash"] = digest
    return entry


def run_hint(entry):
    """The job a file's entry names, said as the command that runs it."""
    network, image_set = entry["network"], entry["image_set"]
    builtin = image_set.get("source") == ImageSet.Source.BUILTIN
    images = "digits" if builtin else image_set.get("path") or image_set["name"]
    parts = [f"--network {network['name']}"]
    if network.get("weights"):
        parts.append(f"--weights {network['weights']}")
    parts += [f"--images {images}", f"--layer {entry['layer']}", f"--bases {entry['bases']}",
              f"--units {entry['n_units']}", f"--seed {entry['seed']}"]
    if entry.get("parameters"):
        parts.append(f"--parameters '{json.dumps(entry['parameters'], sort_keys=True)}'")
    return "python manage.py launch_stimuli " + " ".join(parts)


# --- writing ------------------------------------------------------------------------------------------

def export_study(study):
    """The study as the file's data (a dict); `dumps` gives its text."""
    conditions = list(study.conditions.select_related("job__network", "job__image_set").order_by("pk"))
    keys, jobs = {}, {}
    for condition in conditions:
        if condition.job_id not in keys:
            digest = content_hash(condition.job)
            if digest is None:
                raise StudyFileError(
                    f"conditions[{len(keys)}].job",
                    f"stimulus job {condition.job_id} of condition \"{condition.name}\" has no imported units: a "
                    f"study file names its jobs by the content they produced, so export the study once the job "
                    f"has run")
            keys[condition.job_id] = _JOB_KEY.format(len(keys) + 1)
            jobs[keys[condition.job_id]] = _job_entry(condition.job, digest)
    rows = []
    for condition in conditions:
        row = _row([f for f in condition_fields() if f.name != "job"], condition)
        row["job"] = keys[condition.job_id]
        rows.append(row)
    return {"schema_version": SCHEMA_VERSION, "study": _row(study_fields(), study), "conditions": rows, "jobs": jobs}


def dumps(data):
    """The file's text: sorted keys, two-space indent, a final newline, so that the same study always
    gives the same bytes (and a diff of two versions shows only what changed)."""
    return json.dumps(data, sort_keys=True, indent=2, ensure_ascii=False, allow_nan=False) + "\n"


# --- reading ------------------------------------------------------------------------------------------

def loads(text):
    """Parse a file's text; invalid JSON is a `StudyFileError` naming the line and column."""
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise StudyFileError("(file)", f"not UTF-8 text (byte {exc.start})") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise StudyFileError("(file)", f"not valid JSON: {exc.msg} at line {exc.lineno}, column {exc.colno}") \
            from None
    except RecursionError:
        raise StudyFileError("(file)", "not valid JSON: nested too deeply") from None


def _path(parts):
    out = ""
    for part in parts:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(file)"


def _schema_error(error):
    """One jsonschema error as (field, message), the field being the one at fault (an unknown or missing
    property is named itself, not its parent)."""
    where = list(error.absolute_path)
    if error.validator == "additionalProperties":
        extra = sorted(set(error.instance) - set(error.schema.get("properties", {})))
        return _path(where + [extra[0]]), "unknown field (not in schema version 1 of the study file)"
    if error.validator == "required":
        missing = sorted(set(error.validator_value) - set(error.instance))
        return _path(where + [missing[0]]), "missing field"
    if "propertyNames" in error.absolute_schema_path:
        return _path(where + [error.instance]), "a job's key is job-1, job-2 … (the order conditions first use them)"
    if error.validator == "const" and where == ["schema_version"]:
        return "schema_version", f"{error.instance!r} is not a version this platform reads (it reads {SCHEMA_VERSION})"
    return _path(where), error.message


def validate(data):
    """Check a parsed file against the schema; raises the first error (the one `jsonschema.best_match`
    finds most relevant) as a `StudyFileError`."""
    if not isinstance(data, dict):
        raise StudyFileError("(file)", f"a study file is a JSON object, not {type(data).__name__}")
    if "schema_version" not in data:
        raise StudyFileError("schema_version", "missing field: this is not a study file, or one of an unknown version")
    if data["schema_version"] != SCHEMA_VERSION:
        raise StudyFileError("schema_version", f"{data['schema_version']!r} is not a version this platform reads "
                                               f"(it reads {SCHEMA_VERSION})")
    validator = jsonschema.Draft202012Validator(schema())
    error = jsonschema.exceptions.best_match(validator.iter_errors(data))
    if error is not None:
        raise StudyFileError(*_schema_error(error))


def _first_error(exc, prefix):
    """A model's ValidationError as one (field, message)."""
    if hasattr(exc, "error_dict"):
        name, errors = next(iter(exc.message_dict.items()))
        field = prefix if name == NON_FIELD_ERRORS else f"{prefix}.{name}"
        return field, " ".join(errors)
    return prefix, " ".join(exc.messages)


def _values(model_fields, row, prefix):
    out = {}
    for field in model_fields:
        try:
            out[field.attname] = field.to_python(row[field.name])
        except ValidationError as exc:
            raise StudyFileError(f"{prefix}.{field.name}", " ".join(exc.messages)) from None
    return out


def _find_job(key, entry, bound):
    """The stimulus job here for the file's job `key`: `bound` (an id the researcher gave) when given, else
    the job whose content hash is the file's."""
    if bound is not None:
        job = StimulusJob.objects.select_related("network").filter(pk=bound).first()
        if job is None:
            raise StudyFileError(f"jobs.{key}", f"--job {bound}: there is no stimulus job {bound}")
        if job.network.name != entry["network"]["name"] or job.layer != entry["layer"]:
            raise StudyFileError(
                f"jobs.{key}", f"--job {bound} is network {job.network.name!r}, layer {job.layer!r}; the file's job "
                               f"is network {entry['network']['name']!r}, layer {entry['layer']!r}")
        digest = content_hash(job)
        if digest == entry["content_hash"]:
            return job, "bound by --job"
        return job, f"bound by --job, its content differing from the file's ({digest})"
    candidates = StimulusJob.objects.filter(layer=entry["layer"], status=StimulusJob.Status.SUCCEEDED).order_by("pk")
    bases = set(_items(entry["bases"]))
    for job in candidates:
        # Units of other bases give another hash: no need to read their exemplars.
        if set(job.basis_list) == bases and content_hash(job) == entry["content_hash"]:
            return job, "matched by content hash"
    raise StudyFileError(
        f"jobs.{key}", f"no stimulus job here has content hash {entry['content_hash']}. Run it (network "
                       f"{entry['network']['name']}, image set {entry['image_set']['name']}, layer {entry['layer']}, "
                       f"bases {entry['bases']}, {entry['n_units']} units, seed {entry['seed']}, parameters "
                       f"{json.dumps(entry['parameters'], sort_keys=True)}): {run_hint(entry)}; or bind an existing "
                       f"job of that network and layer with --job {key}=ID")


def _items(value):
    """A design field's entries: a list of strings, or one comma-separated string; nothing for other values
    (a flag, a number), which name no factor."""
    if isinstance(value, str):
        items = value.split(",")
    elif isinstance(value, list):
        items = [v for v in value if isinstance(v, str)]
    else:
        return []
    return [item.strip() for item in items if item.strip()]


# Study fields of a design that may name condition levels (`reference_type=synthetic`); `between_factors`
# names condition factors (`reference_type`), `practice_block` a condition or a level. A field with a fixed
# list of choices says neither (its values are checked by the schema) and is left to it.
LEVEL_FIELDS = ("between_factors", "block_group_by", "block_alternate", "practice_block")


def design_problem(study, conditions, unit_counts, fixed=()):
    """The first reason the file's design cannot be satisfied, as (field, message), or None. Each check
    runs where its fields are in the file and is skipped where they are not. (A query band the job cannot
    serve is refused before, by the condition's own check, `Condition.query_band_error`, which reads the
    job's candidates.)

    `study`, `conditions`: the file's dicts; `unit_counts[i]`: units condition i has in its job;
    `fixed`: study fields whose values are a fixed list of choices."""
    blocks = study.get("blocks_per_condition")
    if isinstance(blocks, int) and not isinstance(blocks, bool):
        for i, condition in enumerate(conditions):
            if blocks > unit_counts[i]:
                return ("study.blocks_per_condition",
                        f"{blocks} blocks per condition, but condition \"{condition['name']}\" has "
                        f"{unit_counts[i]} unit{'s' if unit_counts[i] != 1 else ''}: a block would have none")
    factors = set(conditions[0]) - {"job"} if conditions else set()
    levels = {str(value) for c in conditions for key, value in c.items() if key not in ("job", "name")}
    for name in LEVEL_FIELDS:
        if name in fixed:
            continue
        for item in _items(study.get(name)):
            factor, sep, level = item.partition("=")
            if sep:
                if not any(str(c.get(factor.strip())) == level.strip() for c in conditions):
                    return f"study.{name}", f"no condition has {factor.strip()}={level.strip()}"
            elif name == "between_factors" and item not in factors:
                return f"study.{name}", f"{item!r} is not a condition factor (they are {', '.join(sorted(factors))})"
            elif name == "practice_block" and item not in levels and not any(c["name"] == item for c in conditions):
                return f"study.{name}", f"no condition is named {item!r} or has it as a level"
    return None


@dataclasses.dataclass
class Imported:
    study: Study
    jobs: dict  # file key -> (StimulusJob, how it was found)


def import_study(data, slug=None, bindings=None, author=None):
    """Make a draft study from a parsed file. `slug`: its link name instead of the file's; `bindings`: file
    job key -> id of a stimulus job here (of the same network and layer) to use instead of a match by
    content hash. Checks everything first, then writes in one transaction; raises `StudyFileError`."""
    validate(data)
    bindings = dict(bindings or {})
    for key in bindings:
        if key not in data["jobs"]:
            raise StudyFileError(f"jobs.{key}", f"--job names {key!r}, which the file does not have "
                                                f"(it has {', '.join(sorted(data['jobs'])) or 'no jobs'})")
    for i, row in enumerate(data["conditions"]):
        if row["job"] not in data["jobs"]:
            raise StudyFileError(f"conditions[{i}].job", f"{row['job']!r} is not among the file's jobs")
    used = {row["job"] for row in data["conditions"]}
    for key in data["jobs"]:
        if key not in used:
            raise StudyFileError(f"jobs.{key}", "no condition uses this job")
    names = [row["name"] for row in data["conditions"]]
    for i, name in enumerate(names):
        if name in names[:i]:
            raise StudyFileError(f"conditions[{i}].name", f"two conditions are named {name!r}")
    found = {key: _find_job(key, entry, bindings.get(key)) for key, entry in sorted(data["jobs"].items())}

    values = _values(study_fields(), data["study"], "study")
    if slug:
        values["slug"] = slug
    study = Study(**values, status=Study.Status.DRAFT)
    try:
        study.full_clean()
    except ValidationError as exc:
        field, message = _first_error(exc, "study")
        if field == "study.slug" and Study.objects.filter(slug=study.slug).exists():
            message = f"a study with the link name {study.slug!r} exists already; import with --slug NEW"
        raise StudyFileError(field, message) from None

    conditions = []
    plain = [f for f in condition_fields() if f.name != "job"]
    for i, row in enumerate(data["conditions"]):
        condition = Condition(study=study, job=found[row["job"]][0], **_values(plain, row, f"conditions[{i}]"))
        try:
            condition.full_clean(exclude=["study"])
        except ValidationError as exc:
            raise StudyFileError(*_first_error(exc, f"conditions[{i}]")) from None
        conditions.append(condition)
    problem = design_problem(data["study"], data["conditions"], [c.units().count() for c in conditions],
                             fixed={f.name for f in study_fields() if f.choices})
    if problem:
        raise StudyFileError(*problem)

    try:
        with transaction.atomic():
            study.changed_by = author
            study.save()
            for condition in conditions:
                condition.study = study
                condition.changed_by = author
                condition.save()
    except IntegrityError as exc:
        raise StudyFileError("study", f"the import was refused by the database, nothing was written: {exc}") \
            from None
    return Imported(study, found)


def parse_bindings(values, data):
    """`--job` values as file key -> job id: `job-1=7`, or a plain `7` where the file has one job."""
    out = {}
    for value in values or []:
        key, sep, ident = str(value).rpartition("=")
        if not sep:
            keys = sorted((data.get("jobs") or {}) if isinstance(data, dict) else {})
            if len(keys) != 1:
                raise StudyFileError("--job", f"the file has {len(keys)} jobs ({', '.join(keys)}): say which, "
                                              f"as --job KEY=ID")
            key = keys[0]
        if not ident.strip().isdigit():
            raise StudyFileError("--job", f"{value!r}: a stimulus job's id is a number")
        out[key.strip()] = int(ident)
    return out
