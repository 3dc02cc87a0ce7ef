"""Simultaneous arrivals on PostgreSQL: the conditions' row locks keep assignment balanced and quota-exact."""
from collections import Counter

import pytest

from studyapp import participation
from studyapp.models import Participant
from studyapp.recruitment import Arrival
from tests.studyapp.helpers import arrive_together, make_job, make_study

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]


def test_simultaneous_arrivals_fill_conditions_evenly_and_never_past_the_quota():
    study = make_study(make_job(bases=("neuron", "pca", "nmf")), participants_per_condition=4)
    outcomes = arrive_together(study, [Arrival("prolific", f"pid-{i}", {}) for i in range(16)])
    joined = [o for o in outcomes if isinstance(o, Participant)]
    refused = [o for o in outcomes if isinstance(o, participation.ParticipationError)]
    assert len(joined) == 12 and len(refused) == 4
    assert {e.code for e in refused} == {"study_full"}
    assert Counter(p.condition.basis for p in Participant.objects.all()) == {"neuron": 4, "pca": 4, "nmf": 4}


def test_the_same_person_arriving_twice_at_once_gets_one_participation():
    study = make_study(make_job())
    outcomes = arrive_together(study, [Arrival("prolific", "same", {})] * 4)
    assert len({o.pk for o in outcomes}) == 1
    assert Participant.objects.count() == 1
