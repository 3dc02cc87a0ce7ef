"""A study as a file (docs/contracts.md, section 5): the round trip, jobs found by content, and every kind
of bad file refused whole with one error naming the field."""
import io
import json

import jsonschema
import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import IntegrityError
from django.urls import reverse

from studyapp import golive, studyfile
from studyapp.models import Condition, Exemplar, Participant, StimulusJob, Study
from studyapp.studyfile import StudyFileError, design_problem, dumps, export_study, import_study, loads
from tests.studyapp.helpers import make_job, make_study

pytestmark = pytest.mark.django_db


def _study(**fields):
    """A study whose settings are not the defaults, so a field lost on the way shows."""
    job = make_job(bases=("neuron", "pca"))
    values = {"title": "Borowski replication", "consent_text": "I agree — ünïcode too.",
              "instructions_text": "Pick the image.", "n_practice": 2, "n_main": 9, "catch_ratio": 1 / 9,
              "recruitment": Study.Recruitment.PROLIFIC, "completion_code": "C0DE-SECRET",
              "completion_url": "https://app.prolific.com/submissions/complete?cc={code}",
              "min_total_minutes": 2.5, "max_total_minutes": None, "max_focus_losses": None, "seed": 42}
    study = make_study(job, **{**values, **fields})
    Condition.objects.filter(study=study, basis="pca").update(reference_type=Condition.ReferenceType.MAX_ONLY)
    return study, job


def _error(data, **kwargs):
    with pytest.raises(StudyFileError) as caught:
        import_study(data, **kwargs)
    return caught.value


def test_export_import_export_is_byte_identical():
    study, job = _study()
    first = dumps(export_study(study))
    study.delete()
    imported = import_study(loads(first)).study
    assert dumps(export_study(imported)) == first
    assert imported.conditions.count() == 2 and {c.job_id for c in imported.conditions.all()} == {job.pk}


def test_the_file_holds_the_design_and_no_secret_or_participant():
    study, job = _study()
    Participant.objects.create(study=study, condition=study.conditions.first(), seed=1,
                               recruitment=Study.Recruitment.PROLIFIC, external_id_hash="f" * 64)
    data = export_study(study)
    text = dumps(data)
    assert "C0DE-SECRET" not in text and "completion_code" not in data["study"]
    assert "f" * 64 not in text and "participant" not in data
    assert data["study"]["completion_url"].endswith("cc={code}")
    assert data["study"]["min_total_minutes"] == 2.5 and data["study"]["seed"] == 42
    assert [c["reference_type"] for c in data["conditions"]] == ["natural", "max_only"]
    assert data["jobs"]["job-1"]["layer"] == job.layer
    assert data["jobs"]["job-1"]["content_hash"] == studyfile.content_hash(job)
    assert text == dumps(json.loads(text))
    jsonschema.Draft202012Validator(studyfile.schema()).validate(data)


def test_imported_study_is_a_draft_that_goes_live_through_the_checks():
    study, _ = _study(status=Study.Status.LIVE, completion_code="", completion_url="")
    imported = import_study(export_study(study), slug="again").study
    assert imported.status == Study.Status.DRAFT and imported.version == 1 and imported.previous_version is None
    assert golive.problems(imported) == ["A Prolific study needs a completion code or a completion URL: without "
                                         "either, Prolific cannot tell who finished."]


def test_slug_option_keeps_the_original_and_changes_only_the_link_name():
    study, _ = _study()
    data = export_study(study)
    imported = import_study(data, slug="replication-2").study
    assert Study.objects.filter(slug=study.slug).exists()
    again = export_study(imported)
    assert again["study"].pop("slug") == "replication-2"
    data["study"].pop("slug")
    assert again == data


def test_a_job_is_matched_by_content_hash_not_by_id_or_name():
    study, job = _study()
    other = make_job(bases=("neuron", "pca"))  # same layer, other images
    data = export_study(study)
    # The same content under another job row (a second server imported the same artifact).
    twin = make_job(bases=("neuron", "pca"))
    Exemplar.objects.filter(unit__job=twin).delete()
    rows = []
    for unit in twin.units.all():
        source = job.units.get(basis=unit.basis, index=unit.index)
        rows += [Exemplar(unit=unit, role=e.role, group=e.group, position=e.position, image=e.image)
                 for e in source.exemplars.all()]
        unit.occlusion_trials = source.occlusion_trials
        unit.save(update_fields=["occlusion_trials"])
    Exemplar.objects.bulk_create(rows)
    assert studyfile.content_hash(twin) == studyfile.content_hash(job) != studyfile.content_hash(other)
    study.delete()
    job.conditions.all().delete()
    Exemplar.objects.filter(unit__job=job).delete()
    imported = import_study(data)
    assert {c.job_id for c in imported.study.conditions.all()} == {twin.pk}
    assert imported.jobs["job-1"] == (twin, "matched by content hash")


def test_a_missing_job_says_which_job_to_run():
    study, job = _study()
    data = export_study(study)
    data["jobs"]["job-1"]["content_hash"] = "sha256:" + "0" * 64
    error = _error(data, slug="x")
    assert error.field == "jobs.job-1"
    assert "no stimulus job here has content hash sha256:0000" in str(error)
    assert (f"python manage.py launch_stimuli --network {job.network.name} --images digits "
            f"--layer conv2 --bases neuron,pca --units 6 --seed 0") in str(error)
    assert "--job job-1=ID" in str(error)


def test_job_option_binds_a_job_of_the_same_network_and_layer():
    study, job = _study()
    data = export_study(study)
    data["jobs"]["job-1"]["content_hash"] = "sha256:" + "0" * 64
    other = make_job(bases=("neuron", "pca"))
    StimulusJob.objects.filter(pk=other.pk).update(network=job.network)
    imported = import_study(data, slug="bound", bindings=studyfile.parse_bindings([str(other.pk)], data))
    assert {c.job_id for c in imported.study.conditions.all()} == {other.pk}
    assert imported.jobs["job-1"] == (other, "bound by --job, its content differing from the file's "
                                             f"({studyfile.content_hash(other)})")
    same = import_study(export_study(study), slug="bound-same", bindings={"job-1": job.pk})
    assert same.jobs["job-1"] == (job, "bound by --job")
    assert export_study(imported.study)["jobs"]["job-1"]["content_hash"] == studyfile.content_hash(other)


def test_job_option_refuses_another_network_or_layer_or_no_job():
    study, _ = _study()
    data = export_study(study)
    stranger = make_job(bases=("neuron", "pca"))
    error = _error(data, slug="x", bindings={"job-1": stranger.pk})
    assert error.field == "jobs.job-1" and f"--job {stranger.pk} is network {stranger.network.name!r}" in str(error)
    error = _error(data, slug="x", bindings={"job-1": 987654})
    assert str(error) == "jobs.job-1: --job 987654: there is no stimulus job 987654"
    error = _error(data, slug="x", bindings={"job-7": stranger.pk})
    assert str(error) == "jobs.job-7: --job names 'job-7', which the file does not have (it has job-1)"


@pytest.mark.parametrize("edit, field, message", [
    (lambda d: d["study"].update(favourite_colour="blue"), "study.favourite_colour",
     "unknown field (not in schema version 1 of the study file)"),
    (lambda d: d.update(participants=[]), "participants", "unknown field (not in schema version 1 of the study file)"),
    (lambda d: d["conditions"][1].update(colour="red"), "conditions[1].colour",
     "unknown field (not in schema version 1 of the study file)"),
    (lambda d: d["jobs"]["job-1"].update(gpu="h100"), "jobs.job-1.gpu",
     "unknown field (not in schema version 1 of the study file)"),
    (lambda d: d["study"].update(completion_code="X"), "study.completion_code",
     "unknown field (not in schema version 1 of the study file)"),
    (lambda d: d["study"].pop("n_main"), "study.n_main", "missing field"),
    (lambda d: d["conditions"][0].pop("basis"), "conditions[0].basis", "missing field"),
    (lambda d: d["jobs"]["job-1"].pop("content_hash"), "jobs.job-1.content_hash", "missing field"),
    (lambda d: d.pop("jobs"), "jobs", "missing field"),
    (lambda d: d["study"].update(n_main="ten"), "study.n_main", "'ten' is not of type 'integer'"),
    (lambda d: d["study"].update(catch_ratio=0.9), "study.catch_ratio", "0.9 is greater than the maximum of 0.5"),
    (lambda d: d["conditions"][0].update(reference_type="optimised"), "conditions[0].reference_type",
     "'optimised' is not one of ['natural', 'max_only', 'none', 'overlay', 'synthetic', 'mixed']"),
    (lambda d: d["conditions"][0].update(job="job-2"), "conditions[0].job", "'job-2' is not among the file's jobs"),
    (lambda d: d["conditions"][1].update(name=d["conditions"][0]["name"]), "conditions[1].name",
     "two conditions are named 'neuron'"),
    (lambda d: d["jobs"].update({"job-2": d["jobs"]["job-1"]}), "jobs.job-2", "no condition uses this job"),
    (lambda d: d["jobs"].update({"j1": d["jobs"].pop("job-1")}), "jobs.j1",
     "a job's key is job-1, job-2 … (the order conditions first use them)"),
    (lambda d: d["jobs"]["job-1"]["network"].pop("weights"), "jobs.job-1.network.weights", "missing field"),
    (lambda d: d["jobs"]["job-1"].update(content_hash="md5:1"), "jobs.job-1.content_hash",
     "'md5:1' does not match '^sha256:[0-9a-f]{64}$'"),
    (lambda d: d.update(conditions={}), "conditions", "{} is not of type 'array'"),
    (lambda d: d["study"].update(title=""), "study.title", "This field cannot be blank."),
    (lambda d: d.update(schema_version=True), "schema_version", "True is not a version this platform reads (it reads 1)"),
    (lambda d: d.update(schema_version=2), "schema_version", "2 is not a version this platform reads (it reads 1)"),
    (lambda d: d.pop("schema_version"), "schema_version",
     "missing field: this is not a study file, or one of an unknown version"),
    (lambda d: d["study"].update(min_total_minutes=9, max_total_minutes=3), "study.max_total_minutes",
     "The upper bound of the total time is below its lower bound."),
])
def test_a_bad_file_gets_one_error_naming_the_field_and_writes_nothing(edit, field, message):
    study, _ = _study()
    data = export_study(study)
    edit(data)
    studies, conditions = Study.objects.count(), Condition.objects.count()
    error = _error(data, slug="fresh")
    assert (error.field, error.reason) == (field, message)
    assert str(error) == f"{field}: {message}"
    assert (Study.objects.count(), Condition.objects.count()) == (studies, conditions)


def test_a_condition_the_job_cannot_serve_is_refused():
    study, job = _study()
    data = export_study(study)
    data["conditions"][1]["basis"] = "nmf"
    error = _error(data, slug="fresh")
    assert error.field == "conditions[1]"
    assert error.reason == f"Job {job.pk} has no units for layer 'conv2' and basis 'nmf'; it has conv2 / neuron, conv2 / pca."


def test_an_existing_slug_says_to_choose_another():
    study, _ = _study()
    error = _error(export_study(study))
    assert str(error) == f"study.slug: a study with the link name {study.slug!r} exists already; import with --slug NEW"


@pytest.mark.parametrize("text, message", [
    (b"{\"schema_version\": 1,", "(file): not valid JSON: Expecting property name enclosed in double quotes at line 1, "
                                 "column 22"),
    (b"\xff\xfe", "(file): not UTF-8 text (byte 0)"),
    (b"[1, 2]", "(file): a study file is a JSON object, not list"),
])
def test_text_that_is_not_a_study_file(text, message):
    with pytest.raises(StudyFileError) as caught:
        import_study(loads(text))
    assert str(caught.value) == message


@pytest.mark.parametrize("exception", [IntegrityError("duplicate key"), RuntimeError("disk full")])
def test_a_failure_late_in_the_import_leaves_no_rows(monkeypatch, exception):
    study, _ = _study()
    data = export_study(study)
    studies, conditions = Study.objects.count(), Condition.objects.count()
    saved = []
    original = Condition.save

    def save_then_fail(self, *args, **kwargs):
        saved.append(self.name)
        if len(saved) == 2:  # the last row of the import: the study and one condition are written by then
            raise exception
        return original(self, *args, **kwargs)

    monkeypatch.setattr(Condition, "save", save_then_fail)
    with pytest.raises((StudyFileError, RuntimeError)) as caught:
        import_study(data, slug="late")
    assert saved == ["neuron", "pca"]
    if isinstance(exception, IntegrityError):
        assert str(caught.value).startswith("study: the import was refused by the database, nothing was written")
    assert (Study.objects.count(), Condition.objects.count()) == (studies, conditions)
    assert not Study.objects.filter(slug="late").exists()


def test_export_refuses_a_job_that_has_not_produced_units():
    study, job = _study()
    Exemplar.objects.filter(unit__job=job).delete()
    with pytest.raises(StudyFileError) as caught:
        export_study(study)
    assert caught.value.field == "conditions[0].job" and "has no imported units" in str(caught.value)


# --- the design checks, on the file's own dicts: each runs where its fields are, skipped where not ------------

def _design(**study):
    conditions = [
        {"name": "natural-1", "reference_type": "natural", "n_references": 1, "job": "job-1",
         "query_band_low": 90, "query_band_high": 100},
        {"name": "synthetic-1", "reference_type": "synthetic", "n_references": 1, "job": "job-1",
         "query_band_low": 95, "query_band_high": 100},
    ]
    return study, conditions


def test_design_without_design_fields_has_nothing_to_check():
    assert design_problem({"n_main": 9}, [{"name": "a", "basis": "pca", "job": "job-1"}], [3]) is None


def test_design_that_can_be_satisfied():
    study, conditions = _design(blocks_per_condition=2, block_alternate="reference_type",
                                between_factors=["n_references"], practice_block="reference_type=natural")
    assert design_problem(study, conditions, [3, 3]) is None


def test_design_more_blocks_than_units():
    study, conditions = _design(blocks_per_condition=4)
    assert design_problem(study, conditions, [4, 3]) == (
        "study.blocks_per_condition", "4 blocks per condition, but condition \"synthetic-1\" has 3 units: a block "
                                      "would have none")


def test_design_a_factor_level_no_condition_has():
    study, conditions = _design(practice_block="reference_type=optimized")
    assert design_problem(study, conditions, [3, 3]) == (
        "study.practice_block", "no condition has reference_type=optimized")
    study, conditions = _design(block_alternate="reference_type=natural,reference_type=none")
    assert design_problem(study, conditions, [3, 3]) == (
        "study.block_alternate", "no condition has reference_type=none")
    study, conditions = _design(between_factors=["query_difficulty"])
    assert design_problem(study, conditions, [3, 3]) == (
        "study.between_factors", "'query_difficulty' is not a condition factor (they are n_references, name, "
                                 "query_band_high, query_band_low, reference_type)")
    study, conditions = _design(practice_block="warm-up")
    assert design_problem(study, conditions, [3, 3]) == (
        "study.practice_block", "no condition is named 'warm-up' or has it as a level")
    study, conditions = _design(practice_block="synthetic-1")
    assert design_problem(study, conditions, [3, 3]) is None
    study, conditions = _design(practice_block="warm-up", block_alternate=True)
    assert design_problem(study, conditions, [3, 3], fixed={"practice_block"}) is None


# --- the schema, the commands and the admin --------------------------------------------------------------------

def test_schema_is_valid_and_names_every_exported_field():
    shipped = json.loads(studyfile.SCHEMA_FILE.read_text())
    jsonschema.Draft202012Validator.check_schema(shipped)
    full = studyfile.schema()
    jsonschema.Draft202012Validator.check_schema(full)
    assert set(full["$defs"]["study"]["required"]) == {f.name for f in studyfile.study_fields()}
    assert "completion_code" not in full["$defs"]["study"]["properties"]
    assert set(full["$defs"]["condition"]["required"]) == {f.name for f in studyfile.condition_fields()}


def test_commands_round_trip(tmp_path):
    study, job = _study()
    first = tmp_path / "first.json"
    out = io.StringIO()
    call_command("export_study", study.slug, out=str(first), stdout=out)
    assert out.getvalue() == f"wrote study {study.slug!r} to {first}\n"
    study.delete()
    out = io.StringIO()
    call_command("import_study", str(first), stdout=out)
    assert f"job-1 -> stimulus job {job.pk}" in out.getvalue() and "matched by content hash" in out.getvalue()
    second = tmp_path / "second.json"
    call_command("export_study", study.slug, out=str(second), stdout=io.StringIO())
    assert second.read_bytes() == first.read_bytes()


def test_import_command_reports_the_error_and_the_job_option(tmp_path):
    study, job = _study()
    path = tmp_path / "study.json"
    data = export_study(study)
    data["jobs"]["job-1"]["content_hash"] = "sha256:" + "1" * 64
    path.write_text(dumps(data))
    with pytest.raises(CommandError, match=r"jobs\.job-1: no stimulus job here has content hash"):
        call_command("import_study", str(path), slug="copy", stdout=io.StringIO())
    out = io.StringIO()
    call_command("import_study", str(path), slug="copy", job=[f"job-1={job.pk}"], stdout=out)
    assert f"job-1 -> stimulus job {job.pk}" in out.getvalue() and "bound by --job" in out.getvalue()
    with pytest.raises(CommandError, match=r"--job: 'x': a stimulus job's id is a number"):
        call_command("import_study", str(path), slug="copy2", job=["x"], stdout=io.StringIO())
    with pytest.raises(CommandError, match="no study with slug 'nope'"):
        call_command("export_study", "nope", stdout=io.StringIO())


def test_admin_exports_and_imports_a_study_file(admin_client):
    study, job = _study()
    response = admin_client.post(reverse("admin:studyapp_study_changelist"),
                                 {"action": "export_study_file", "_selected_action": [study.pk]})
    assert response["Content-Disposition"] == f'attachment; filename="{study.slug}.study.json"'
    text = response.content
    assert text.decode() == dumps(export_study(study))
    changelist = admin_client.get(reverse("admin:studyapp_study_changelist"))
    assert reverse("admin:studyapp_study_import_file").encode() in changelist.content

    url = reverse("admin:studyapp_study_import_file")
    assert admin_client.get(url).status_code == 200
    bad = json.loads(text)
    bad["study"]["n_main"] = -1
    upload = io.BytesIO(dumps(bad).encode())
    upload.name = "bad.json"
    response = admin_client.post(url, {"file": upload, "slug": "from-admin"})
    assert response.status_code == 200
    assert b"study.n_main: -1 is less than the minimum of 0" in response.content
    assert not Study.objects.filter(slug="from-admin").exists()

    upload = io.BytesIO(text)
    upload.name = "study.json"
    response = admin_client.post(url, {"file": upload, "slug": "from-admin", "job": str(job.pk)})
    imported = Study.objects.get(slug="from-admin")
    assert response.status_code == 302 and response["Location"] == reverse("admin:studyapp_study_change",
                                                                           args=[imported.pk])
    assert imported.status == Study.Status.DRAFT and imported.conditions.count() == 2


def test_import_runs_the_design_checks_with_each_conditions_units(monkeypatch):
    study, job = _study()
    data = export_study(study)
    seen = []

    def refuse(study_row, conditions, unit_counts, fixed=()):
        seen.append((unit_counts, "recruitment" in fixed))
        return "study.blocks_per_condition", "refused"

    monkeypatch.setattr(studyfile, "design_problem", refuse)
    studies = Study.objects.count()
    assert str(_error(data, slug="designed")) == "study.blocks_per_condition: refused"
    assert seen == [([3, 3], True)]
    assert Study.objects.count() == studies


def test_every_field_a_researcher_sets_is_in_the_file_or_named_as_left_out():
    # A field a model gains later (a design setting, a condition factor) joins the file by itself; one the
    # file cannot carry (a relation other than a condition's job) fails here rather than going missing.
    left_out = {"id", "status", "version", "previous_version", "created", "completion_code", "screen_out_code",
                "prolific_study_id"}
    exported = {f.name for f in studyfile.study_fields()}
    for field in Study._meta.concrete_fields:
        if field.editable:
            assert field.name in exported or field.name in left_out, field.name
    exported = {f.name for f in studyfile.condition_fields()}
    for field in Condition._meta.concrete_fields:
        if field.editable:
            assert field.name in exported or field.name in {"id", "study"}, field.name
