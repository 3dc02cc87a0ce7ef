"""The participant API's lookup by token reads the same objects the ORM's select_related reads."""

import secrets

import pytest

from studyapp.lookup import participant_by_token
from studyapp.models import Participant, Study
from tests.studyapp.helpers import arrive, make_study


def fields(obj):
    return {f.attname: getattr(obj, f.attname) for f in type(obj)._meta.concrete_fields}


@pytest.mark.django_db
def test_the_lookup_reads_participant_study_and_condition_as_select_related_does(
    client, job, django_assert_num_queries
):
    study = make_study(job)
    participant = arrive(client, study)
    # Every JSON column with a value of its own, so that the fields' converters are seen at work.
    Participant.objects.filter(pk=participant.pk).update(
        recruitment_info={"PROLIFIC_PID": "p1", "nested": [1, {"a": None}]}, questionnaire={"strategy": "shapes"}
    )
    Study.objects.filter(pk=study.pk).update(
        between_factors={"reference_type": ["natural"]}, block_group_by=["reference_type"]
    )
    expected = Participant.objects.select_related("study", "condition").get(token=participant.token)

    with django_assert_num_queries(1):
        found = participant_by_token(participant.token)
        assert fields(found) == fields(expected)
        assert fields(found.study) == fields(expected.study)
        assert fields(found.condition) == fields(expected.condition)
    assert found.recruitment_info["nested"] == [1, {"a": None}] and found.study.block_group_by == ["reference_type"]
    assert not found._state.adding and found._state.db == expected._state.db
    found.save(update_fields=["last_seen"])  # an instance the ORM can write back


@pytest.mark.django_db
def test_a_token_no_participant_has_finds_none(client, study):
    arrive(client, study)
    assert participant_by_token(secrets.token_urlsafe(24)) is None
