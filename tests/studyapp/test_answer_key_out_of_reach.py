"""The cheater of issue 13: someone who knows the code, the artifact layout (docs/contracts.md §1) and
the job ids, takes part once, and then asks the web for anything that maps a shown image to its role.

On the old layout `GET /media/artifacts/job-1/manifest.json` answered the whole manifest, and with it
every trial's answer. Now the only files the web serves are the published images, flat and named by
their content; everything else the cheater can think of is a 404, and what the images' responses carry
besides their bytes is the same for the correct and the wrong query."""
import json

import pytest
from django.test import Client, override_settings

from stimuli import pipeline
from studyapp import jobs
from studyapp.models import Condition, ImageSet, Network, Participant, StimulusJob, Study, Trial
from tests.studyapp.helpers import write_artifact


@pytest.fixture(params=["reference_2afc", "occlusion_2afc"])
def imported_study(tmp_path, monkeypatch, db, request):
    """A study over units the real importer took from an artifact (the pipeline replaced by a writer of a
    small one), with MEDIA_ROOT and ARTIFACT_ROOT as the defaults lay them out: siblings under var/; its
    conditions in each paradigm that shows two centre images."""
    monkeypatch.setattr(pipeline, "run", lambda config, out_dir, progress=None:
                        write_artifact(out_dir, bases=tuple(config.bases.names), n_units=2, occlusion=3))
    with override_settings(MEDIA_ROOT=tmp_path / "var" / "media", ARTIFACT_ROOT=tmp_path / "var" / "artifacts",
                           SERVE_MEDIA=True):
        job = StimulusJob.objects.create(network=Network.objects.create(name="demo"),
                                         image_set=ImageSet.objects.create(name="digits"), layer="conv2",
                                         bases="neuron,pca")
        jobs.run_job(job.pk)
        job.refresh_from_db()
        study = Study.objects.create(slug="cheat", title="Cheat", status=Study.Status.LIVE, n_practice=2, n_main=4,
                                     catch_ratio=0.25, participants_per_condition=5)
        for basis in ("neuron", "pca"):
            Condition.objects.create(study=study, name=basis, job=job, layer="conv2", basis=basis,
                                     paradigm=request.param)
        yield study, job, tmp_path / "var"


def guesses(job, trial_urls):
    """Every path the cheater tries: manifests and folders where the old layout and plausible others keep
    them, listings, traversals out of the media folder, and each shown image's name under role-telling
    folders."""
    folders = ["", "artifacts/", f"artifacts/job-{job.pk}/", f"job-{job.pk}/", f"artifacts/job-{job.pk}/images/",
               f"job-{job.pk}/images/", "images/", "regions/", "stimuli/", "../artifacts/", "../", "..%2f",
               "%2e%2e/artifacts/", f"..%2fartifacts%2fjob-{job.pk}%2f"]
    paths = []
    for folder in folders:
        paths += [f"/media/{folder}", f"/media/{folder}manifest.json", f"/media/{folder}index.html"]
    for job_id in range(1, job.pk + 3):
        paths += [f"/media/artifacts/job-{job_id}/manifest.json", f"/media/job-{job_id}/manifest.json"]
    names = sorted({url.rsplit("/", 1)[1] for url in trial_urls})
    for name in names[:5]:
        paths += [f"/media/{folder}{name}" for folder in
                  (f"artifacts/job-{job.pk}/images/", "images/", "query_max/", "max/", "queries_max/")]
        paths += [f"/media/{name}/", f"/media/{name}/../manifest.json", f"/media/{name[:-4]}.json"]
    paths += ["/manifest.json", f"/artifacts/job-{job.pk}/manifest.json", "/var/artifacts/", "/static/",
              f"/static/artifacts/job-{job.pk}/manifest.json"]
    return paths


@pytest.mark.postgres
@pytest.mark.django_db
def test_a_cheater_who_knows_the_layout_reaches_nothing_that_tells_an_answer(imported_study):
    study, job, var = imported_study
    (manifest,) = var.rglob("manifest.json")
    # the answer key exists, where the web must not reach
    assert "queries_max" in manifest.read_text() and "delta_a" in manifest.read_text()
    client = Client()
    start = client.post(f"/s/{study.slug}/start", {"PROLIFIC_PID": "cheater", "STUDY_ID": "s", "SESSION_ID": "1"})
    token = start["Location"].rstrip("/").split("/")[-1]
    api = f"/api/p/{token}/"
    for name, body in (("consent", {"consent": True}), ("instructions", {"reading_ms": 20000})):
        assert client.post(api + name, json.dumps(body), content_type="application/json").status_code == 200
    trials = client.get(api + "trials?limit=50").json()["trials"]
    assert trials and {t["paradigm"] for t in trials} == {study.conditions.first().paradigm}
    # a trial payload names its images and nothing of their roles: no answer, no change of the unit
    served = json.dumps(trials)
    for word in ("correct", "delta", "kind", "catch", "unit", "margin", "box"):
        assert word not in served, word
    urls = {u for t in trials for u in [t["query_a"], t["query_b"], *t["references_min"], *t["references_max"]]}

    reached = {}
    for path in guesses(job, urls):
        response = client.get(path)
        if response.status_code != 404:
            reached[path] = response
    assert not reached, sorted(reached)

    # The images themselves: served, and alike in everything but their bytes for either answer.
    participant = Participant.objects.get(token=token)
    for trial in trials:
        row = Trial.objects.get(pk=trial["id"], participant=participant)
        correct = trial["query_a"] if row.correct_query == "a" else trial["query_b"]
        wrong = trial["query_b"] if row.correct_query == "a" else trial["query_a"]
        for url in (correct, wrong):
            assert "artifacts" not in url and f"job-{job.pk}" not in url and url.count("/") == 2
        heads = []
        for url in (correct, wrong):
            response = client.get(url)
            assert response.status_code == 200 and response["Content-Type"] == "image/png"
            heads.append({k: v for k, v in response.items() if k != "Content-Length"})
        assert heads[0] == heads[1], heads
        assert "Last-Modified" not in heads[0]

    # What MEDIA_ROOT holds, for a proxy that serves the folder itself: the published images, flat.
    media = var / "media"
    assert all(p.is_file() and p.suffix == ".png" for p in media.iterdir())
    assert len({p.stat().st_mtime for p in media.iterdir()}) == 1
    assert {u.rsplit("/", 1)[1] for u in urls} <= {p.name for p in media.iterdir()}


@pytest.mark.django_db
def test_the_media_route_serves_nothing_outside_its_flat_folder(tmp_path):
    (tmp_path / "media" / "sub").mkdir(parents=True)
    (tmp_path / "media" / "sub" / "0123456789abcdef0123.png").write_bytes(b"x")
    (tmp_path / "media" / "0123456789abcdef0123.png").write_bytes(b"y")
    (tmp_path / "media" / "notes.txt").write_bytes(b"z")
    with override_settings(MEDIA_ROOT=tmp_path / "media"):
        client = Client()
        assert client.get("/media/0123456789abcdef0123.png").status_code == 200
        for path in ("/media/sub/0123456789abcdef0123.png", "/media/notes.txt", "/media/sub/", "/media/"):
            assert client.get(path).status_code == 404, path
        with override_settings(SERVE_MEDIA=False):
            assert client.get("/media/0123456789abcdef0123.png").status_code == 404


def test_artifacts_inside_media_root_fail_the_system_check(tmp_path):
    from studyapp.checks import artifacts_are_not_served

    with override_settings(MEDIA_ROOT=tmp_path / "media", ARTIFACT_ROOT=tmp_path / "media" / "artifacts"):
        assert [e.id for e in artifacts_are_not_served(None)] == ["studyapp.E001"]
    with override_settings(MEDIA_ROOT=tmp_path / "media", ARTIFACT_ROOT=tmp_path / "artifacts"):
        assert artifacts_are_not_served(None) == []


@pytest.mark.django_db
def test_the_migration_moves_an_earlier_layout_out_of_media_root(tmp_path):
    """Earlier versions kept artifacts at MEDIA_ROOT/artifacts/job-N, served with their manifests."""
    from studyapp.artifacts import relocate_legacy_layout
    from studyapp.models import Exemplar, SobolAnalysis
    from tests.studyapp.helpers import make_job, make_study

    job = make_job(bases=("neuron",), n_units=1, n_strips=1, overlays=False)
    media, private = tmp_path / "media", tmp_path / "artifacts"
    legacy = media / "artifacts" / f"job-{job.pk}"
    (legacy / "images").mkdir(parents=True)
    (legacy / "manifest.json").write_text('{"queries_max": []}')
    for exemplar in Exemplar.objects.filter(unit__job=job):
        (legacy / "images" / exemplar.image).write_bytes(exemplar.image.encode())
        exemplar.image = f"artifacts/job-{job.pk}/images/{exemplar.image}"
        exemplar.save()
    StimulusJob.objects.filter(pk=job.pk).update(artifact=f"artifacts/job-{job.pk}")
    with override_settings(MEDIA_ROOT=media, ARTIFACT_ROOT=private):
        study = make_study(job)
        participant = participation_start(study)
        relocate_legacy_layout(StimulusJob, Exemplar, Trial, SobolAnalysis)
        relocate_legacy_layout(StimulusJob, Exemplar, Trial, SobolAnalysis)  # a second run changes nothing
        assert (private / f"job-{job.pk}" / "manifest.json").is_file() and not (media / "artifacts").exists()
        images = set(Exemplar.objects.filter(unit__job=job).values_list("image", flat=True))
        assert all("/" not in image and (media / image).is_file() for image in images)
        trial = Trial.objects.filter(participant=participant).first()
        assert {trial.query_a, trial.query_b, *trial.references_max} <= images
        client = Client()
        assert client.get(f"/media/{trial.query_a}").status_code == 200
        assert StimulusJob.objects.get(pk=job.pk).artifact == f"job-{job.pk}"


def participation_start(study):
    from studyapp import participation
    from studyapp.recruitment import Arrival

    return participation.start(study, Arrival("link", None, {}))
