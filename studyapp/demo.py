"""The embedded demo: the built-in network and digits, one stimulus job in three bases, a live study
with one condition per basis, and an admin account."""
import secrets

from django.contrib.auth import get_user_model
from django.db import transaction

from . import golive
from .models import Condition, ImageSet, Network, StimulusJob, Study

DEMO_LAYER = "conv2"
DEMO_BASES = ("neuron", "pca", "nmf")
DEMO_UNITS = 6


def demo_job():
    """The demo's stimulus job: the latest successful one with the demo settings, or a new one."""
    network, _ = Network.objects.get_or_create(name="demo", defaults={"source": Network.Source.BUILTIN})
    image_set, _ = ImageSet.objects.get_or_create(name="digits", defaults={"source": ImageSet.Source.BUILTIN})
    existing = StimulusJob.objects.filter(
        network=network, image_set=image_set, layer=DEMO_LAYER, bases=",".join(DEMO_BASES),
        n_units=DEMO_UNITS, status=StimulusJob.Status.SUCCEEDED,
    ).first()
    if existing is not None:
        return existing, False
    # relu3, the demo's penultimate layer, embeds the images for each unit's machine score; the
    # attribution overlays let a researcher add an `overlay` condition without running another job;
    # a class of interest gives the job's page the essence curves beside the other measures.
    job = StimulusJob.objects.create(network=network, image_set=image_set, layer=DEMO_LAYER,
                                     bases=",".join(DEMO_BASES), n_units=DEMO_UNITS, seed=0,
                                     parameters={"mis_layer": "relu3", "attribution_overlays": True,
                                                 "influence_class": 3})
    return job, True


@transaction.atomic
def demo_study(job, slug="demo"):
    study, _ = Study.objects.update_or_create(
        slug=slug,
        defaults={"title": "Which images excite this unit? (demo)",
                  "recruitment": Study.Recruitment.PROLIFIC, "completion_code": "DEMO-DONE",
                  # The demo prints a plain link beside the Prolific one; a real study leaves this off.
                  "allow_plain_link": True},
    )
    for basis in DEMO_BASES:
        Condition.objects.update_or_create(
            study=study, name=f"{basis}-{DEMO_LAYER}",
            defaults={"job": job, "layer": DEMO_LAYER, "basis": basis},
        )
    # The same checks as the admin's "Set live": a demo whose job lacks something says so here.
    golive.set_live(study)
    return study


def admin_account(username="admin", password=None):
    """Create or reset the demo's superuser; returns the password in force."""
    password = password or secrets.token_urlsafe(9)
    user, _ = get_user_model().objects.get_or_create(username=username, defaults={"email": ""})
    user.is_staff = user.is_superuser = True
    user.set_password(password)
    user.save()
    return password
