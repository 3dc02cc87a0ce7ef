"""Synthetic references (feature visualizations) in studies: imported from the artifact, shown in a
`synthetic` or `mixed` condition with natural queries, exported with the condition's reference type."""
import json

import pandas as pd
import pytest

from studyapp.artifacts import import_artifact, published_name
from studyapp.export import write_export
from studyapp.models import Condition, Exemplar, Trial
from tests.studyapp.helpers import add_synthetic, make_job, make_study, play_to_the_questionnaire


@pytest.mark.django_db
def test_a_synthetic_condition_plays_to_the_end_and_exports_its_reference_type(client, tmp_path):
    job = add_synthetic(make_job(bases=("neuron",)))
    study = make_study(job)
    Condition.objects.filter(study=study).update(reference_type=Condition.ReferenceType.SYNTHETIC)
    synthetic = set(Exemplar.objects.filter(role__in=["synthetic_max", "synthetic_min"]).values_list("image", flat=True))
    participant = play_to_the_questionnaire(client, study)
    for trial in Trial.objects.filter(participant=participant):
        assert trial.references_max and set(trial.references_max) | set(trial.references_min) <= synthetic
    raw = client.get(f"/api/p/{participant.token}/trials?limit=50").content.decode()
    for word in ("correct", "synthetic", "smax", "smin", "qmax"):
        assert word not in raw
    path = tmp_path / "out.csv"
    assert write_export(study, path, "csv") == study.n_practice + study.n_main
    assert set(pd.read_csv(path)["reference_type"]) == {"synthetic"}


@pytest.mark.django_db
def test_a_conditions_units_carry_the_feature_visualizations(db):
    job = add_synthetic(make_job(bases=("pca",), n_units=2))
    study = make_study(job)
    condition = study.conditions.get()
    condition.reference_type = "mixed"
    condition.save()
    for unit in condition.unit_exemplars():
        assert len(unit.synthetic_max) == len(unit.synthetic_min) == 3
        assert len(unit.references_max) == 9


@pytest.mark.django_db
def test_the_artifact_importer_reads_synthetic_lists(settings, tmp_path, db):
    from studyapp.models import ImageSet, Network, StimulusJob

    settings.MEDIA_ROOT = str(tmp_path / "media")
    settings.ARTIFACT_ROOT = str(tmp_path / "artifacts")
    folder = tmp_path / "artifacts" / "a"
    (folder / "images").mkdir(parents=True)
    spec = {"index": 0, "measures": {"synthetic_max_ratio": 1.7}}
    for key, n in (("references_max", 9), ("references_min", 9), ("queries_max", 2), ("queries_min", 2),
                   ("synthetic_max", 2), ("synthetic_min", 2)):
        spec[key] = [f"images/{key}{i}.png" for i in range(n)]
        for name in spec[key]:
            (folder / name).write_bytes(name.encode())
    (folder / "manifest.json").write_text(json.dumps(
        {"schema_version": 1, "layers": [{"layer": "conv2", "basis": "neuron", "units": [spec]}]}))
    job = StimulusJob.objects.create(network=Network.objects.create(name="n"),
                                     image_set=ImageSet.objects.create(name="i"), layer="conv2", bases="neuron")
    import_artifact(job, folder)
    roles = list(Exemplar.objects.filter(unit__job=job, role__startswith="synthetic")
                 .order_by("role", "position").values_list("role", "image"))
    # published under the hash of their bytes, like every image a participant is shown
    assert roles == [(role, published_name(f"images/{role}{i}.png".encode()))
                     for role in ("synthetic_max", "synthetic_min") for i in range(2)]


@pytest.mark.django_db
def test_the_unit_page_shows_synthetic_and_natural_references_with_the_ratio(admin_client):
    job = add_synthetic(make_job(bases=("neuron",), n_units=1))
    unit = job.units.get()
    page = admin_client.get(f"/admin/studyapp/unit/{unit.pk}/change/").content.decode()
    assert "synthetic vs natural references" in page.lower() and "2.00×" in page
    synthetic = Exemplar.objects.filter(unit=unit, role="synthetic_max").first().image
    natural = Exemplar.objects.filter(unit=unit, role="reference_max").first().image
    assert synthetic in page and natural in page


@pytest.mark.django_db
def test_a_synthetic_condition_over_a_job_without_feature_visualizations_is_refused():
    from django.core.exceptions import ValidationError

    study = make_study(make_job(bases=("neuron",)))
    condition = study.conditions.get()
    condition.reference_type = "synthetic"
    with pytest.raises(ValidationError, match="feature_vis"):
        condition.full_clean()
    condition.reference_type = "natural"
    condition.full_clean()
