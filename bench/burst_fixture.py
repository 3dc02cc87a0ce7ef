"""Seeds a launch-burst database: a live Prolific study over made-up units with SLOTS participant slots
in all, split over four conditions (between participants), or, with `within`, over the four
counterbalancing orders of a within-participant study of four conditions (each participant does all
four, 15 main trials each: the same 60 trials a between participant gets). Run inside the stack's
environment:

    python bench/burst_fixture.py SLOTS [between|within]
"""
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "studyapp.settings.production")

import django  # noqa: E402

django.setup()

from load_fixture import seed_units  # noqa: E402

from studyapp.models import Condition, Study  # noqa: E402

CONDITIONS = 4


def seed(slots, design="between"):
    job = seed_units()
    if slots % CONDITIONS:
        sys.exit(f"{slots} slots do not split evenly over {CONDITIONS} conditions")
    if design == "within":
        # a Williams square over four conditions has four orders: SLOTS / 4 participants each
        study = Study.objects.create(slug="burst", title="Burst", status=Study.Status.LIVE, n_practice=0, n_main=15,
                                     recruitment=Study.Recruitment.PROLIFIC, design=Study.Design.WITHIN,
                                     participants_per_condition=slots, time_limit_minutes=600)
        basis = job.basis_list[0]
        for i, (reference_type, n) in enumerate([("natural", 9), ("natural", 1), ("max_only", 9), ("none", 9)]):
            Condition.objects.create(study=study, name=f"{reference_type}-{n}-{i}", job=job, layer="conv2",
                                     basis=basis, reference_type=reference_type, n_references=n,
                                     block_instructions=f"Block {i}")
        return
    study = Study.objects.create(slug="burst", title="Burst", status=Study.Status.LIVE, n_practice=0, n_main=60,
                                 recruitment=Study.Recruitment.PROLIFIC,
                                 participants_per_condition=slots // CONDITIONS, time_limit_minutes=600)
    bases = job.basis_list
    for i in range(CONDITIONS):
        basis = bases[i % len(bases)]
        Condition.objects.create(study=study, name=f"{basis}-{i}", job=job, layer="conv2", basis=basis)


if __name__ == "__main__":
    seed(int(sys.argv[1]), *sys.argv[2:3])
