"""Helpers the studyapp tests share (imported from here, never from another test module)."""
import threading

from django.db import connection

from studyapp import participation


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
