"""Seeds a launch-burst database: a live Prolific study over made-up units with SLOTS participant slots
in all, split over four conditions. Run inside the stack's environment:

    python bench/burst_fixture.py SLOTS
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


def seed(slots):
    job = seed_units()
    if slots % CONDITIONS:
        sys.exit(f"{slots} slots do not split evenly over {CONDITIONS} conditions")
    study = Study.objects.create(slug="burst", title="Burst", status=Study.Status.LIVE, n_practice=0, n_main=60,
                                 recruitment=Study.Recruitment.PROLIFIC,
                                 participants_per_condition=slots // CONDITIONS, time_limit_minutes=600)
    bases = job.basis_list
    for i in range(CONDITIONS):
        basis = bases[i % len(bases)]
        Condition.objects.create(study=study, name=f"{basis}-{i}", job=job, layer="conv2", basis=basis)


if __name__ == "__main__":
    seed(int(sys.argv[1]))
