"""Factories for the web app's tests: a stimulus job with units and exemplar rows made directly (the
stimulus pipeline has tests of its own), and a live study over them."""
import hashlib
import itertools

import pytest

from studyapp.models import Condition, Exemplar, ImageSet, Network, StimulusJob, Study, Unit

_counter = itertools.count()


def image_name(job, basis, index, role, i):
    """Content-addressed-looking names, as the importer publishes them: flat, nothing in a name tells its
    role, its unit or its job."""
    digest = hashlib.sha256(f"{job.pk}-{basis}-{index}-{role}-{i}".encode()).hexdigest()[:20]
    return f"{digest}.png"


def band_percentiles(bands, n_queries):
    """Query candidates' percentiles as an artifact with `query_bands` records them: `n_queries` per band and
    side, band by band, most extreme first, the maximal ones spread over (low, high], the minimal ones over
    the mirror [100 - high, 100 - low)."""
    q_max, q_min = [], []
    for low, high in bands:
        step = (high - low) / n_queries
        q_max += [high - step * i for i in range(n_queries)]
        q_min += [100 - high + step * i for i in range(n_queries)]
    return q_max, q_min


def occlusion_pairs(job, basis, index, n_pairs, n_catch=2):
    """A unit's stored occlusion pairs (Unit.occlusion_trials, as the importer writes them): distinct
    changes, the correct side the larger |change|, the pair's margin falling with its number."""
    pairs = []
    for kind, n in (("main", n_pairs), ("catch", n_catch)):
        for i in range(n):
            strong, weak = -(1.0 + 0.1 * (n - i)), 0.05 * (i % 3)
            a_first = (i + index) % 2 == 0
            delta_a, delta_b = (strong, weak) if a_first else (weak, strong)
            pairs.append({"kind": kind, "a": image_name(job, basis, index, f"{kind}-occa", i),
                          "b": image_name(job, basis, index, f"{kind}-occb", i),
                          "correct": "a" if a_first else "b", "delta_a": delta_a, "delta_b": delta_b})
    return pairs


def make_job(bases=("neuron", "pca"), n_units=3, n_queries=6, layer="conv2", n_strips=4, overlays=True,
             query_bands=None, n_occlusion=6):
    """`query_bands`: the job renders `n_queries` candidates per side for each band, each with its
    percentile; None: an artifact of one band whose candidates carry none (written before they did).
    `n_occlusion`: each unit's stored occlusion pairs (and two catch pairs)."""
    n = next(_counter)
    network = Network.objects.create(name=f"net{n}")
    image_set = ImageSet.objects.create(name=f"images{n}")
    summary = {"parameters": {"query_percentile": 10.0, "query_bands": query_bands}} if query_bands else {}
    job = StimulusJob.objects.create(network=network, image_set=image_set, layer=layer, bases=",".join(bases),
                                     status=StimulusJob.Status.SUCCEEDED, summary=summary)
    n_candidates = n_queries * len(query_bands) if query_bands else n_queries
    percentiles = band_percentiles(query_bands, n_queries) if query_bands else None
    rows = []
    for basis in bases:
        for index in range(n_units):
            unit = Unit.objects.create(job=job, layer=layer, basis=basis, index=index,
                                       occlusion_trials=occlusion_pairs(job, basis, index, n_occlusion)
                                       if n_occlusion else [])
            lists = {
                Exemplar.Role.REFERENCE_MAX: [image_name(job, basis, index, "rmax", i) for i in range(9)],
                Exemplar.Role.REFERENCE_MIN: [image_name(job, basis, index, "rmin", i) for i in range(9)],
                Exemplar.Role.QUERY_MAX: [image_name(job, basis, index, "qmax", i) for i in range(n_candidates)],
                Exemplar.Role.QUERY_MIN: [image_name(job, basis, index, "qmin", i) for i in range(n_candidates)],
            }
            if overlays:
                lists[Exemplar.Role.OVERLAY_MAX] = [image_name(job, basis, index, "omax", i) for i in range(9)]
            for role, images in lists.items():
                side = {Exemplar.Role.QUERY_MAX: 0, Exemplar.Role.QUERY_MIN: 1}.get(role)
                rows += [Exemplar(unit=unit, role=role, position=i, image=img,
                                  percentile=percentiles[side][i] if percentiles and side is not None else None)
                         for i, img in enumerate(images)]
            for group in range(n_strips):
                rows += [Exemplar(unit=unit, role=Exemplar.Role.STRIP, group=group, position=i,
                                  image=image_name(job, basis, index, f"strip{group}", i)) for i in range(9)]
    Exemplar.objects.bulk_create(rows)
    return job


def make_study(job=None, slug=None, **fields):
    job = job or make_job()
    defaults = {"title": "Test study", "status": Study.Status.LIVE, "n_practice": 3, "n_main": 9,
                "catch_ratio": 1 / 9, "participants_per_condition": 10}
    study = Study.objects.create(slug=slug or f"study{next(_counter)}", **{**defaults, **fields})
    for basis in job.basis_list:
        Condition.objects.create(study=study, name=basis, job=job, layer=job.layer, basis=basis)
    return study


@pytest.fixture
def job(db):
    return make_job()


@pytest.fixture
def study(job):
    return make_study(job)


class Clock:
    """The server's clock under a test's control: `timezone.now()` (and so every server-side time the
    app records) reads this clock, which moves only when the test advances it, as a participant's time
    passes between requests."""

    def __init__(self):
        from django.utils import timezone

        self.now = timezone.now()

    def __call__(self):
        return self.now

    def advance(self, seconds):
        from datetime import timedelta

        self.now += timedelta(seconds=seconds)


@pytest.fixture
def clock(monkeypatch):
    from django.utils import timezone

    fake = Clock()
    monkeypatch.setattr(timezone, "now", fake)
    return fake
