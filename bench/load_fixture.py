"""Seeds a load-test database: a live study over made-up units, and participants who have consented
and read the instructions, each with a stored trial list. Run inside the stack's environment:

    python bench/load_fixture.py OUT.json 100,250,500

writes, per level, the participants' tokens and their trials' ids in order (the answer keys stay in
the database: the load generator answers without them, as a browser does)."""
import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "studyapp.settings.production")

import django  # noqa: E402

django.setup()

from django.db import transaction  # noqa: E402
from django.utils import timezone  # noqa: E402

from studyapp import participation  # noqa: E402
from studyapp.models import Condition, Exemplar, ImageSet, Network, Participant, StimulusJob, Study, Trial, Unit  # noqa: E402
from studyapp.recruitment import Arrival  # noqa: E402

BASES = ("neuron", "pca", "nmf")


def seed_units():
    job = StimulusJob.objects.create(network=Network.objects.create(name="load"),
                                     image_set=ImageSet.objects.create(name="load"), layer="conv2",
                                     bases=",".join(BASES), status=StimulusJob.Status.SUCCEEDED)
    rows = []
    for basis in BASES:
        for index in range(8):
            unit = Unit.objects.create(job=job, layer="conv2", basis=basis, index=index)
            for role, n in (("reference_max", 9), ("reference_min", 9), ("query_max", 20), ("query_min", 20)):
                rows += [Exemplar(unit=unit, role=role, position=i, image=f"load/{basis}{index}{role}{i}.png")
                         for i in range(n)]
    Exemplar.objects.bulk_create(rows)
    return job


def seed(levels):
    """The plan: per level, that many fresh participants' tokens and their trial ids in order."""
    job = seed_units()
    study = Study.objects.create(slug="load", title="Load", status=Study.Status.LIVE, n_practice=0, n_main=60,
                                 participants_per_condition=10 ** 6, time_limit_minutes=600)
    for basis in BASES:
        Condition.objects.create(study=study, name=basis, job=job, layer="conv2", basis=basis)
    plan = {}
    for level in levels:
        tokens = []
        for i in range(level):
            participant = participation.start(study, Arrival("prolific", f"load-{level}-{i}", {}))
            tokens.append(participant.token)
        with transaction.atomic():
            Participant.objects.filter(token__in=tokens).update(consented_at=timezone.now(), instructions_ms=20000.0)
        trials = {}
        for pid_token, trial_id in Trial.objects.filter(participant__token__in=tokens).order_by(
                "participant", "position").values_list("participant__token", "id"):
            trials.setdefault(pid_token, []).append(trial_id)
        plan[str(level)] = [{"token": t, "trials": trials[t]} for t in tokens]
    return plan


def main(out_path, levels):
    Path(out_path).write_text(json.dumps(seed(levels)))


if __name__ == "__main__":
    main(sys.argv[1], [int(v) for v in sys.argv[2].split(",")])
