"""A researcher's study configuration is checked when it is saved, not when the first participant
arrives: conditions must name units that exist and that carry what their paradigm shows."""
import pytest
from django.core.exceptions import ValidationError

from studyapp.models import Condition, Study
from tests.studyapp.helpers import make_job


def condition(job, **fields):
    study = Study.objects.create(slug=f"s{job.pk}", title="s")
    return Condition(study=study, name="c", job=job, **{"layer": job.layer, "basis": "neuron", **fields})


@pytest.mark.django_db
def test_a_condition_over_units_that_exist_is_accepted():
    job = make_job()
    for fields in ({}, {"paradigm": "ordered_strip"}, {"reference_type": "overlay"}, {"reference_type": "none"}):
        condition(job, **fields).full_clean()
        Study.objects.all().delete()


@pytest.mark.django_db
def test_a_condition_naming_a_layer_or_basis_the_job_lacks_is_refused_with_what_it_has():
    job = make_job(bases=("neuron", "pca"))
    with pytest.raises(ValidationError, match="no units for layer 'fc1'.*it has conv2 / neuron, conv2 / pca"):
        condition(job, layer="fc1").full_clean()


@pytest.mark.django_db
def test_an_overlay_condition_needs_overlays_and_a_strip_condition_needs_strips_of_three():
    job = make_job(overlays=False, n_strips=0)
    with pytest.raises(ValidationError, match="no attribution overlay for each maximal reference"):
        condition(job, reference_type="overlay").full_clean()
    Study.objects.all().delete()
    with pytest.raises(ValidationError, match="no ordered strip of at least 3 images"):
        condition(job, paradigm="ordered_strip").full_clean()


@pytest.mark.django_db
def test_the_study_form_shows_the_conditions_error_and_saves_nothing(admin_client):
    job = make_job()
    form = {
        "title": "T", "slug": "t", "status": "draft", "seed": 0, "consent_text": "c", "instructions_text": "i",
        "debrief_text": "d", "n_practice": 3, "practice_max_attempts": 3, "practice_feedback": "on", "n_main": 9,
        "catch_ratio": 0.1, "response_lock_ms": 0, "confidence": "on", "min_width": 800, "min_height": 600,
        "recruitment": "link", "completion_url": "", "completion_code": "", "participants_per_condition": 5,
        "time_limit_minutes": 60, "consent_grace_minutes": 10, "min_catch_accuracy": 0.8, "min_instructions_seconds": 0,
        "one_side_alpha": 0.001,
        "conditions-TOTAL_FORMS": 1, "conditions-INITIAL_FORMS": 0, "conditions-MIN_NUM_FORMS": 0,
        "conditions-MAX_NUM_FORMS": 1000, "conditions-0-name": "a", "conditions-0-job": job.pk,
        "conditions-0-layer": "conv9", "conditions-0-basis": "neuron", "conditions-0-reference_type": "natural",
        "conditions-0-paradigm": "reference_2afc",
    }
    response = admin_client.post("/admin/studyapp/study/add/", form)
    assert response.status_code == 200 and "no units for layer" in response.content.decode()
    assert not Study.objects.exists()
    response = admin_client.post("/admin/studyapp/study/add/", {**form, "conditions-0-layer": "conv2"})
    assert response.status_code == 302
    assert Study.objects.get().conditions.get().layer == "conv2"


@pytest.mark.django_db
def test_a_strip_condition_whose_strips_are_too_short_is_refused():
    from studyapp.models import Exemplar

    job = make_job()
    Exemplar.objects.filter(unit__job=job, role="strip", position__gte=2).delete()
    with pytest.raises(ValidationError, match="no ordered strip of at least 3 images"):
        condition(job, paradigm="ordered_strip").full_clean()
