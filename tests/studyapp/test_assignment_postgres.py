"""Simultaneous arrivals on PostgreSQL: the conditions' row locks keep assignment balanced and quota-exact."""
import threading
from collections import Counter

import pytest
from django.db import connection

from studyapp import participation
from studyapp.models import Participant
from studyapp.recruitment import Arrival
from tests.studyapp.conftest import make_job, make_study

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]


def arrive_together(study, arrivals):
    barrier = threading.Barrier(len(arrivals))
    outcomes = []

    def one(arrival):
        try:
            barrier.wait()
            outcomes.append(participation.start(study, arrival))
        except participation.ParticipationError as exc:
            outcomes.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=one, args=(a,)) for a in arrivals]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return outcomes


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
