"""Query bands per condition from one job (issue 27): an artifact whose job rendered candidates for several
bands, each candidate with its activation percentile, imported; two conditions of one study on that one job
draw their queries from their own bands only; a band the job cannot serve is refused, with the bands it
serves named, by the study form, the study-file import and go-live."""

import json

import numpy as np
import pytest
from django.core.exceptions import ValidationError

from stimuli.exemplars import select_exemplars
from studyapp import golive, participation
from studyapp.artifacts import import_artifact, published_name
from studyapp.models import Condition, ImageSet, Network, StimulusJob, Study, Trial
from studyapp.recruitment import Arrival
from studyapp.studyfile import StudyFileError, export_study, import_study
from studyapp.trials import UnitExemplars, in_query_band
from tests.studyapp.admin_forms import study_form
from tests.studyapp.helpers import make_job, make_study

BANDS = [[90, 100], [80, 90]]
N_IMAGES, N_QUERIES, N_UNITS = 400, 8, 3


def write_banded_artifact(folder):
    """An artifact as the stimulus job writes it with `query_bands` [[90, 100], [80, 90]]: per unit, the
    exemplars stimuli.exemplars chooses from seeded responses, each image a file of its own bytes. Returns
    {published image name: (side, percentile)} of every query candidate, read back from the manifest."""
    (folder / "images").mkdir(parents=True)
    units = []
    for index in range(N_UNITS):
        responses = np.random.default_rng(index).normal(size=N_IMAGES)
        ex = select_exemplars(responses, n_references=9, n_queries=N_QUERIES, rng=index, bands=BANDS, n_strips=1)
        files = {}
        for i in ex.all_indices():
            data = f"unit {index} image {int(i)}".encode()
            files[int(i)] = f"images/{published_name(data)}"
            (folder / files[int(i)]).write_bytes(data)
        units.append(
            {
                "index": index,
                **{
                    key: [files[int(i)] for i in getattr(ex, key)]
                    for key in ("references_max", "references_min", "queries_max", "queries_min", "strip")
                },
                "queries_max_percentile": [float(p) for p in ex.queries_max_percentile],
                "queries_min_percentile": [float(p) for p in ex.queries_min_percentile],
            }
        )
    manifest = {
        "schema_version": 1,
        "parameters": {"query_percentile": 10.0, "query_bands": BANDS},
        "layers": [{"layer": "conv2", "basis": "neuron", "units": units}],
    }
    (folder / "manifest.json").write_text(json.dumps(manifest))
    candidates = {}
    for unit in json.loads((folder / "manifest.json").read_text())["layers"][0]["units"]:
        for side in ("max", "min"):
            for image, p in zip(unit[f"queries_{side}"], unit[f"queries_{side}_percentile"]):
                candidates[image.split("/", 1)[1]] = (side, p)
    return candidates


@pytest.fixture
def banded_job(settings, tmp_path, db):
    settings.MEDIA_ROOT = str(tmp_path / "media")
    settings.ARTIFACT_ROOT = str(tmp_path / "artifacts")
    folder = tmp_path / "artifacts" / "job"
    candidates = write_banded_artifact(folder)
    job = StimulusJob.objects.create(
        network=Network.objects.create(name="demo"),
        image_set=ImageSet.objects.create(name="digits"),
        layer="conv2",
        bases="neuron",
        status=StimulusJob.Status.SUCCEEDED,
    )
    import_artifact(job, folder)
    job.refresh_from_db()
    return job, candidates


def banded_study(job, bands, **fields):
    """A within-participant study over `job`'s neuron units: one condition per band."""
    study = make_study(
        job,
        **{
            "design": Study.Design.WITHIN,
            "n_main": 6,
            "n_practice": 2,
            "catch_ratio": 0,
            "participants_per_condition": 4,
            **fields,
        },
    )
    study.conditions.all().delete()
    for low, high in bands:
        condition = Condition(
            study=study,
            name=f"band-{low}-{high}",
            job=job,
            layer="conv2",
            basis="neuron",
            query_band_low=low,
            query_band_high=high,
        )
        condition.full_clean()
        condition.save()
    return study


def test_the_import_keeps_each_candidates_percentile(banded_job):
    job, candidates = banded_job
    condition = Condition(job=job, layer="conv2", basis="neuron")
    for unit in condition.unit_exemplars(fresh=True):
        assert len(unit.queries_max) == len(unit.queries_max_percentile) == 2 * N_QUERIES
        assert [candidates[q] for q in unit.queries_max] == [("max", p) for p in unit.queries_max_percentile]
        assert [candidates[q] for q in unit.queries_min] == [("min", p) for p in unit.queries_min_percentile]


def test_two_conditions_on_one_job_draw_queries_only_from_their_band(banded_job):
    job, candidates = banded_job
    study = banded_study(job, [(90, 100), (80, 90)])
    assert golive.problems(study) == []
    shown = {"band-90-100": set(), "band-80-90": set()}
    for i in range(4):
        participant = participation.start(study, Arrival("prolific", f"pid-{i}", {}))
        trials = Trial.objects.filter(participant=participant).select_related("condition")
        assert {t.condition.name for t in trials if t.block == Trial.Block.MAIN} == set(shown)
        for trial in trials:
            low, high = trial.condition.query_band_low, trial.condition.query_band_high
            query_max, query_min = (
                (trial.query_a, trial.query_b) if trial.correct_query == "a" else (trial.query_b, trial.query_a)
            )
            side_max, p_max = candidates[query_max]
            side_min, p_min = candidates[query_min]
            # the manifest's percentiles: the maximal query in (low, high], the minimal one in the mirror band
            assert side_max == "max" and low < p_max <= high, (trial.condition.name, p_max)
            assert side_min == "min" and 100 - high <= p_min < 100 - low, (trial.condition.name, p_min)
            shown[trial.condition.name] |= {query_max, query_min}
    assert shown["band-90-100"] and shown["band-80-90"] and not shown["band-90-100"] & shown["band-80-90"]


def test_a_condition_without_a_band_draws_from_the_jobs_own_band(banded_job):
    job, candidates = banded_job
    study = make_study(job, n_main=6, n_practice=2, catch_ratio=0)
    participant = participation.start(study, Arrival("prolific", "own", {}))
    percentiles = [
        candidates[t.query_a if t.correct_query == "a" else t.query_b][1]
        for t in Trial.objects.filter(participant=participant)
    ]
    assert percentiles and all(90 < p <= 100 for p in percentiles)
    assert study.conditions.get().query_band() == "90-100"


def test_a_band_inside_a_rendered_one_is_served_when_it_holds_enough_pairs(banded_job):
    job, _ = banded_job
    study = make_study(job, n_main=3, catch_ratio=0, status=Study.Status.DRAFT)
    condition = study.conditions.get()
    condition.query_band_low, condition.query_band_high = 95, 100
    condition.full_clean()
    pairs = [len(in_query_band(u, (95, 100)).queries_max) for u in condition.unit_exemplars(fresh=True)]
    assert all(1 <= n < N_QUERIES for n in pairs)
    # more main trials than the narrower band has pairs per unit: refused, the job's bands named
    study.n_main = 3 * N_QUERIES
    with pytest.raises(
        ValidationError,
        match=r"renders query candidates for the bands 90-100, 80-90; in the band "
        r"95-100 unit conv2:neuron:\d has \d query pairs?.*need 8 per unit",
    ):
        condition.full_clean()


SERVES = "renders query candidates for the bands 90-100, 80-90; in the band 70-80 unit conv2:neuron:0 has 0 query pairs"


def test_a_band_the_job_cannot_serve_is_refused_by_the_study_form(banded_job, admin_client):
    job, _ = banded_job
    study = banded_study(job, [(90, 100)], status=Study.Status.DRAFT)
    form = study_form(study, conditions={"band-90-100": {"query_band_low": 70, "query_band_high": 80}})
    response = admin_client.post(f"/admin/studyapp/study/{study.pk}/change/", form)
    page = response.content.decode()
    assert response.status_code == 200 and SERVES in page and "choose a band the job serves" in page
    assert study.conditions.get().query_band_low == 90
    form = study_form(study, conditions={"band-90-100": {"query_band_low": 80, "query_band_high": 90}})
    assert admin_client.post(f"/admin/studyapp/study/{study.pk}/change/", form).status_code == 302
    assert study.conditions.get().query_band() == "80-90"


def test_a_band_the_job_cannot_serve_is_refused_by_the_study_file_import(banded_job):
    job, _ = banded_job
    data = export_study(banded_study(job, [(90, 100), (80, 90)], status=Study.Status.DRAFT))
    assert import_study(data, slug="again").study.conditions.count() == 2
    data["conditions"][1]["query_band_low"], data["conditions"][1]["query_band_high"] = 70, 80
    studies = Study.objects.count()
    with pytest.raises(StudyFileError) as caught:
        import_study(data, slug="refused")
    assert caught.value.field == "conditions[1].query_band_low" and SERVES in caught.value.reason
    assert Study.objects.count() == studies


def test_a_band_the_job_cannot_serve_is_refused_at_go_live(banded_job):
    job, _ = banded_job
    study = banded_study(job, [(90, 100), (80, 90)], status=Study.Status.DRAFT)
    Condition.objects.filter(study=study, name="band-80-90").update(query_band_low=70, query_band_high=80)
    problems = golive.problems(study)
    assert len(problems) == 1 and problems[0].startswith('Condition "band-80-90": job ') and SERVES in problems[0]
    with pytest.raises(golive.GoLiveRefused):
        golive.set_live(study)


def test_an_artifact_without_percentiles_serves_its_one_band_as_before(db):
    job = make_job(bases=("neuron",))
    study = make_study(job, status=Study.Status.DRAFT)
    condition = study.conditions.get()
    condition.query_band_low, condition.query_band_high = 90, 100
    condition.full_clean()
    condition.query_band_low = 80
    with pytest.raises(ValidationError, match=r"from the band 90-100 only \(its artifact records no percentile"):
        condition.full_clean()


def test_factory_bands_in_the_trial_builder():
    # the candidates' percentiles, as tests/studyapp/conftest.band_percentiles spreads them over two bands
    unit = UnitExemplars(
        unit_id=1,
        references_max=["r"],
        references_min=["s"],
        queries_max=["a", "b", "c", "d"],
        queries_min=["w", "x", "y", "z"],
        queries_max_percentile=[100.0, 95.0, 90.0, 85.0],
        queries_min_percentile=[0.0, 5.0, 10.0, 15.0],
    )
    top, lower = in_query_band(unit, (90, 100)), in_query_band(unit, (80, 90))
    assert (top.queries_max, top.queries_min) == (["a", "b"], ["w", "x"])
    assert (lower.queries_max, lower.queries_min) == (["c", "d"], ["y", "z"])
    assert in_query_band(unit, None) is unit
    legacy = UnitExemplars(unit_id=2, references_max=["r"], references_min=["s"], queries_max=["a"], queries_min=["w"])
    assert in_query_band(legacy, (80, 90)) is legacy


def test_a_factory_job_with_bands_serves_each(db):
    job = make_job(bases=("neuron",), query_bands=BANDS)
    study = make_study(job, n_main=6, catch_ratio=0, status=Study.Status.DRAFT)
    condition = study.conditions.get()
    for low, high in BANDS:
        condition.query_band_low, condition.query_band_high = low, high
        condition.full_clean()
    condition.query_band_low, condition.query_band_high = 60, 70
    with pytest.raises(ValidationError, match="for the bands 90-100, 80-90; in the band 60-70"):
        condition.full_clean()


def test_arrivals_read_the_jobs_bands_once_per_process(db):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    job = make_job(bases=("neuron",), query_bands=BANDS)
    study = make_study(job, n_main=6, catch_ratio=0)
    # the job's own band, 90-100: each unit's first 6 candidates (conftest.band_percentiles)
    own = {q for u in study.conditions.get().unit_exemplars() for q in u.queries_max[:6]}
    reads = []
    for i in range(3):
        with CaptureQueriesContext(connection) as captured:
            participant = participation.start(study, Arrival("prolific", f"once-{i}", {}))
        reads.append(sum('FROM "studyapp_stimulusjob"' in q["sql"] for q in captured.captured_queries))
        shown = {
            t.query_a if t.correct_query == "a" else t.query_b for t in Trial.objects.filter(participant=participant)
        }
        assert shown and shown <= own
    assert reads[1:] == [0, 0]


def test_the_exports_query_band_is_the_conditions(banded_job, client):
    from studyapp.export import response_rows
    from tests.studyapp.helpers import play_to_the_questionnaire

    job, _ = banded_job
    study = banded_study(job, [(90, 100), (80, 90)])
    play_to_the_questionnaire(client, study, pid="exported")
    rows = [row for row in response_rows(study) if row["trial_kind"] == "main"]
    assert {(row["condition"], row["query_band"]) for row in rows} == {
        ("band-90-100", "90-100"),
        ("band-80-90", "80-90"),
    }
