"""Helpers the studyapp tests share (imported from here, never from another test module)."""
import threading

from django.db import connection

from studyapp import participation
from tests.studyapp.test_api import answer, api, arrive, correct_choice, through_instructions


def arrive_together(study, arrivals):
    """Start every arrival at once (a barrier releases the threads together), each on its own database
    connection; the outcomes in completion order: a Participant or the ParticipationError it got."""
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


def play_to_the_questionnaire(client, study, pid=None):
    """Arrive (with a Prolific id `pid`, or by the plain link), read the instructions and answer every trial
    correctly through the API; the participant, now at the questionnaire."""
    participant = arrive(client, study, pid=pid)
    through_instructions(client, participant)
    while True:
        status, batch = api(client, participant, "trials?limit=6")
        if not batch["trials"]:
            break
        for trial in batch["trials"]:
            assert answer(client, participant, trial["id"], correct_choice(trial["id"]))[0] == 201
    assert batch["phase"] == "questionnaire"
    return participant
