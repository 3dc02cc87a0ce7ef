"""Helpers the studyapp tests share, imported from here and never from a test module or a conftest:
factories for a stimulus job with units and exemplar rows made directly (the stimulus pipeline has tests
of its own) and a live study over them, a small artifact on disk, a clock under the test's control, and
a participant through the API with Django's test client."""
import hashlib
import itertools
import json
import threading
import uuid
from datetime import timedelta

from django.db import connection
from django.utils import timezone

from studyapp import participation
from studyapp.models import Condition, Exemplar, ImageSet, Network, Participant, StimulusJob, Study, Trial, Unit

# -- factories ----------------------------------------------------------------------------------------
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


def add_synthetic(job, n=3):
    rows = []
    for unit in job.units.all():
        for role, tag in ((Exemplar.Role.SYNTHETIC_MAX, "smax"), (Exemplar.Role.SYNTHETIC_MIN, "smin")):
            rows += [Exemplar(unit=unit, role=role, position=i, image=image_name(job, unit.basis, unit.index, tag, i))
                     for i in range(n)]
        unit.measures = {"synthetic_max_score": 2.0, "natural_max_score": 1.0, "synthetic_max_ratio": 2.0}
        unit.save(update_fields=["measures"])
    Exemplar.objects.bulk_create(rows)
    return job


# -- a stimulus artifact on disk, as the pipeline writes one --------------------------------------------
def write_artifact(out_dir, bases=("neuron", "pca"), n_units=2, progress=None, occlusion=0):
    """A small artifact as the pipeline writes one; `occlusion`: occlusion pairs per unit (and one catch
    pair), their changes made up, the correct side the larger |change|."""
    out_dir.mkdir(parents=True)
    (out_dir / "images").mkdir()
    layers = []
    for basis in bases:
        units = []
        for index in range(n_units):
            lists = {}
            for key, n in (("references_max", 9), ("references_min", 9), ("queries_max", 4), ("queries_min", 4)):
                names = [f"images/{basis}{index}{key}{i}.png" for i in range(n)]
                for name in names:
                    (out_dir / name).write_bytes(name.encode())
                lists[key] = names
            for key, n in (("occlusion_trials", occlusion), ("occlusion_catch_trials", 1 if occlusion else 0)):
                lists[key] = []
                for i in range(n):
                    files = {side: f"images/{basis}{index}{key}{side}{i}.png" for side in ("query", "a", "b")}
                    for name in files.values():
                        (out_dir / name).write_bytes(name.encode())
                    delta_a, delta_b = (-0.9 + 0.1 * i, 0.05) if (i + index) % 2 else (0.02, 0.8 - 0.1 * i)
                    lists[key].append({**files, "correct": "a" if abs(delta_a) > abs(delta_b) else "b",
                                       "delta_a": delta_a, "delta_b": delta_b})
            units.append({"index": index, "measures": {"explained_variance_ratio": 0.1}, **lists})
        layers.append({"layer": "conv2", "basis": basis, "n_components": 4,
                       "cumulative_explained_variance": [0.4, 0.7, 0.9, 1.0], "units": units})
        if progress:
            progress("bases", 1.0)
    (out_dir / "manifest.json").write_text(json.dumps({"schema_version": 1, "network": {"name": "demo"}, "layers": layers}))
    return out_dir


# -- the server's clock and settings ------------------------------------------------------------------
class Clock:
    """The server's clock under a test's control: `timezone.now()` (and so every server-side time the
    app records) reads this clock, which moves only when the test advances it, as a participant's time
    passes between requests."""

    def __init__(self):
        self.now = timezone.now()

    def __call__(self):
        return self.now

    def advance(self, seconds):
        self.now += timedelta(seconds=seconds)


def no_rate_limits(settings):
    # All simulated participants come from 127.0.0.1; the test settings turn the limits off, and this
    # keeps them off whatever an earlier test left behind (settings are process-wide, the live server
    # runs in a thread of this process).
    settings.PARTICIPANT_RATE_LIMIT_PER_IP = 0
    settings.PARTICIPANT_RATE_LIMIT_PER_TOKEN = 0


# -- a participant through the API ----------------------------------------------------------------------
def arrive(client, study, pid=None):
    data = {"PROLIFIC_PID": pid, "STUDY_ID": "s1", "SESSION_ID": "x"} if pid else {}
    response = client.post(f"/s/{study.slug}/start", data)
    assert response.status_code == 302, response.content
    token = response["Location"].rstrip("/").split("/")[-1]
    return Participant.objects.get(token=token)


def api(client, participant, name, body=None, method=None):
    url = f"/api/p/{participant.token}/{name}"
    if body is None and method != "post":
        response = client.get(url)
    else:
        response = client.post(url, json.dumps(body or {}), content_type="application/json")
    return response.status_code, response.json()


def answer(client, participant, trial_id, choice="a", key=None, confidence=2):
    return api(client, participant, "responses", {
        "trial": trial_id, "idempotency_key": key or str(uuid.uuid4()), "choice": choice,
        "confidence": confidence, "rt_ms": 812.5, "client_time": "2026-11-23T10:00:00.000Z",
    })


def correct_choice(trial_id):
    return Trial.objects.get(pk=trial_id).correct_query


def through_instructions(client, participant):
    assert api(client, participant, "consent", {"consent": True})[0] == 200
    status, session = api(client, participant, "instructions", {"reading_ms": 20000})
    assert status == 200
    return session


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
