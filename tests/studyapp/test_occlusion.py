"""The occlusion 2AFC (Zimmermann et al. 2021) in the web app: trial lists, import, scoring, export."""

import io

import numpy as np
import pandas as pd
import pytest

from studyapp.export import COLUMNS, response_frame
from studyapp.models import Condition, Trial, Unit
from studyapp.trials import ConditionPlan, UnitExemplars, build_block_list, build_trial_list, repeat_practice
from tests.studyapp.helpers import (
    answer,
    api,
    arrive,
    make_job,
    make_study,
    play_to_the_questionnaire,
    through_instructions,
)


def pair(u, i, margin, catch=False):
    strong = 0.1 + margin
    return {
        "a": f"u{u}-{'c' if catch else 'o'}{i}a",
        "b": f"u{u}-{'c' if catch else 'o'}{i}b",
        "correct": "a",
        "delta_a": -strong,
        "delta_b": 0.1,
    }


def units(n=3, n_pairs=5):
    # pair i of unit u has margin 0.1 * (i + 1): the last is the easiest
    return [
        UnitExemplars(
            unit_id=u,
            references_max=[f"u{u}-rmax{i}" for i in range(9)],
            references_min=[f"u{u}-rmin{i}" for i in range(9)],
            queries_max=[],
            queries_min=[],
            synthetic_max=[f"u{u}-smax{i}" for i in range(9)],
            synthetic_min=[f"u{u}-smin{i}" for i in range(9)],
            occlusion=[pair(u, i, 0.1 * (i + 1)) for i in range(n_pairs)],
            occlusion_catch=[pair(u, i, 2.0, catch=True) for i in range(2)],
        )
        for u in range(n)
    ]


def shown_correct(spec):
    return spec.query_a if spec.correct_query == "a" else spec.query_b


def test_practice_takes_each_units_largest_margin_and_main_trials_reach_it_last():
    specs = build_trial_list(
        units(), n_practice=3, n_main=15, catch_ratio=0, reference_type="natural", seed=4, paradigm="occlusion_2afc"
    )
    practice, main = specs[:3], specs[3:]
    assert {shown_correct(s) for s in practice} == {f"u{u}-o4a" for u in range(3)}
    for u in range(3):
        seen = [shown_correct(s) for s in main if s.unit_id == u]
        # five pairs, each once, the easiest (shown in practice) last
        assert sorted(seen) == sorted(f"u{u}-o{i}a" for i in range(5)) and seen[-1] == f"u{u}-o4a"


def test_the_answer_key_and_the_deltas_follow_the_side_each_participant_sees():
    sides = set()
    for seed in range(6):
        for s in build_trial_list(
            units(),
            n_practice=2,
            n_main=18,
            catch_ratio=1 / 9,
            reference_type="natural",
            seed=seed,
            paradigm="occlusion_2afc",
        ):
            a_is_strong = s.query_a.endswith("a")
            assert s.correct_query == ("a" if a_is_strong else "b")
            assert (
                abs(s.occlusion_delta_a) > abs(s.occlusion_delta_b)
                if a_is_strong
                else abs(s.occlusion_delta_b) > abs(s.occlusion_delta_a)
            )
            assert s.references_max == [f"u{s.unit_id}-rmax{i}" for i in range(9)]
            sides.add(s.correct_query)
    assert sides == {"a", "b"}


def test_catch_trials_pit_a_blank_area_against_the_strongest_region():
    specs = build_trial_list(
        units(), n_practice=0, n_main=18, catch_ratio=1 / 6, reference_type="none", seed=2, paradigm="occlusion_2afc"
    )
    catch = [s for s in specs if s.kind == "catch"]
    assert len(catch) == 3 and all("-c" in s.query_a and "-c" in s.query_b for s in catch)
    assert all("-o" in s.query_a for s in specs if s.kind == "main")
    assert all(s.references_max == [] and s.references_min == [] for s in specs)


def test_synthetic_references_and_repeated_practice_and_blocks():
    specs = build_trial_list(
        units(), n_practice=2, n_main=6, catch_ratio=0, reference_type="synthetic", seed=0, paradigm="occlusion_2afc"
    )
    assert all(s.references_max[0].startswith(f"u{s.unit_id}-smax") for s in specs)
    again = repeat_practice(
        units(), n_practice=3, reference_type="natural", seed=0, attempt=2, paradigm="occlusion_2afc"
    )
    assert [s.attempt for s in again] == [2, 2, 2] and all(s.block == "practice" for s in again)
    plans = {
        "occ": ConditionPlan("occ", units(), "natural", "occlusion_2afc", n_references=3),
        "ref": ConditionPlan(
            "ref",
            [
                UnitExemplars(
                    unit_id=9,
                    references_max=["r"] * 9,
                    references_min=["m"] * 9,
                    queries_max=["q1", "q2"],
                    queries_min=["p1", "p2"],
                )
            ],
        ),
    }
    listed = build_block_list(plans, [("occ", 4), ("ref", 2)], practice="occ", n_practice=2, catch_ratio=0, seed=1)
    assert [s.condition for s in listed] == ["occ"] * 6 + ["ref"] * 2
    assert all(len(s.references_max) == 3 and s.occlusion_delta_a is not None for s in listed[:6])
    assert all(s.occlusion_delta_a is None for s in listed[6:])


def test_a_unit_without_pairs_is_refused_by_name():
    bare = [
        UnitExemplars(
            unit_id=0,
            references_max=["r"],
            references_min=["m"],
            queries_max=["q"],
            queries_min=["p"],
            key="conv2:pca:0",
        )
    ]
    with pytest.raises(ValueError, match="conv2:pca:0 has no occlusion pairs"):
        build_trial_list(
            bare, n_practice=1, n_main=2, catch_ratio=0, reference_type="natural", seed=0, paradigm="occlusion_2afc"
        )
    no_catch = [UnitExemplars(**{**vars(u), "occlusion_catch": [], "key": "conv2:pca:0"}) for u in units(1)]
    with pytest.raises(ValueError, match="no occlusion catch pair"):
        build_trial_list(
            no_catch,
            n_practice=1,
            n_main=9,
            catch_ratio=1 / 9,
            reference_type="natural",
            seed=0,
            paradigm="occlusion_2afc",
        )


@pytest.mark.django_db
def test_the_server_scores_by_the_stored_changes_and_the_export_carries_them(client):
    job = make_job(bases=("neuron",), n_units=3)
    study = make_study(job, n_main=9, n_practice=2)
    study.conditions.update(paradigm="occlusion_2afc", reference_type="none")
    participant = play_to_the_questionnaire(client, study)
    trials = Trial.objects.filter(participant=participant)
    assert trials.count() == 11 and not trials.filter(occlusion_delta_a=None).exists()
    for trial in trials:
        unit_pairs = Unit.objects.get(pk=trial.unit_id).occlusion_trials
        (stored,) = [p for p in unit_pairs if {p["a"], p["b"]} == {trial.query_a, trial.query_b}]
        larger = stored["a"] if abs(stored["delta_a"]) > abs(stored["delta_b"]) else stored["b"]
        assert (trial.query_a if trial.correct_query == "a" else trial.query_b) == larger
        assert (stored["kind"] == "catch") == (trial.kind == "catch")
    frame = response_frame(study)
    assert {"occlusion_delta_a", "occlusion_delta_b", "paradigm"} <= set(frame.columns) <= set(COLUMNS) | set()
    assert set(frame["paradigm"]) == {"occlusion_2afc"} and frame["correct"].all()
    main = frame[frame["trial_kind"] != "catch"]
    # the machine's Δ of the task: |change| on the correct side less the other's, the trial's margin
    right = np.where(main["correct_query"] == "a", main["occlusion_delta_a"], main["occlusion_delta_b"])
    wrong = np.where(main["correct_query"] == "a", main["occlusion_delta_b"], main["occlusion_delta_a"])
    assert np.allclose(main["mis_delta"], np.abs(right) - np.abs(wrong)) and (main["mis_delta"] > 0).all()
    assert frame.loc[frame["trial_kind"] == "catch", "mis_delta"].isna().all()
    # round trip through CSV, as analysis reads it
    buffer = io.StringIO()
    frame.to_csv(buffer, index=False)
    back = pd.read_csv(io.StringIO(buffer.getvalue()))
    assert back["occlusion_delta_a"].notna().all()


@pytest.mark.django_db
def test_a_wrong_choice_is_scored_wrong_and_the_payload_is_a_two_image_trial(client):
    study = make_study(make_job(bases=("pca",)))
    study.conditions.update(paradigm="occlusion_2afc")
    participant = arrive(client, study)
    through_instructions(client, participant)
    trials = api(client, participant, "trials?limit=50")[1]["trials"]
    assert {t["paradigm"] for t in trials} == {"occlusion_2afc"}
    assert all(len(t["references_max"]) == 9 and t["query_a"] != t["query_b"] for t in trials)
    first = Trial.objects.get(pk=trials[0]["id"])
    status, result = answer(client, participant, first.pk, "b" if first.correct_query == "a" else "a")
    assert status == 201 and result["correct"] is False


@pytest.mark.django_db
def test_golive_names_units_without_pairs_and_too_few_pairs():
    from studyapp.golive import condition_problems

    study = make_study(make_job(bases=("neuron",), n_occlusion=0))
    condition = study.conditions.get()
    condition.paradigm = Condition.Paradigm.OCCLUSION_2AFC
    condition.save()
    (problem,) = condition_problems(study, condition)
    assert "has no occlusion pairs" in problem and "units conv2:neuron:0, conv2:neuron:1" in problem
    study = make_study(make_job(bases=("neuron",), n_occlusion=2), n_main=18)
    condition = study.conditions.get()
    condition.paradigm = Condition.Paradigm.OCCLUSION_2AFC
    condition.save()
    (problem,) = condition_problems(study, condition)
    assert "fewer occlusion pairs" in problem


@pytest.mark.django_db
def test_the_importer_publishes_the_occluded_images_and_keeps_the_key_off_the_web(tmp_path, settings):
    import json

    from studyapp.artifacts import ArtifactError, import_artifact, published_name
    from tests.studyapp.helpers import write_artifact

    settings.MEDIA_ROOT, settings.ARTIFACT_ROOT = tmp_path / "media", tmp_path / "artifacts"
    folder = write_artifact(tmp_path / "artifacts" / "job-x", bases=("pca",), n_units=1, occlusion=2)
    job = make_job(bases=("pca",), n_units=1)
    import_artifact(job, folder)
    (unit,) = job.units.all()
    manifest = json.loads((folder / "manifest.json").read_text())["layers"][0]["units"][0]
    assert [p["kind"] for p in unit.occlusion_trials] == ["main", "main", "catch"]
    for stored, given in zip(unit.occlusion_trials, manifest["occlusion_trials"] + manifest["occlusion_catch_trials"]):
        assert stored["a"] == published_name(given["a"].encode()) and stored["correct"] == given["correct"]
        assert (settings.MEDIA_ROOT / stored["a"]).is_file() and stored["delta_b"] == given["delta_b"]
        # the unoccluded query is not shown, so not published
        assert not (settings.MEDIA_ROOT / published_name(given["query"].encode())).exists()
    manifest["occlusion_trials"][0]["correct"] = "b" if manifest["occlusion_trials"][0]["correct"] == "a" else "a"
    whole = json.loads((folder / "manifest.json").read_text())
    whole["layers"][0]["units"][0] = manifest
    (folder / "manifest.json").write_text(json.dumps(whole))
    with pytest.raises(ArtifactError, match="larger absolute change"):
        import_artifact(job, folder)
    assert job.units.get().occlusion_trials == unit.occlusion_trials  # the failed import changed nothing


@pytest.mark.django_db
def test_the_simulators_oracle_agrees_with_every_stored_answer_key_from_the_stimulus_side():
    from studyapp import participation
    from studyapp.api import trial_payload
    from studyapp.recruitment import Arrival
    from studyapp.simulation import AnswerOracle

    study = make_study(make_job(bases=("neuron", "pca")), n_main=18)
    study.conditions.update(paradigm="occlusion_2afc")
    oracle = AnswerOracle.from_study(study)
    checked = 0
    for i in range(4):
        participant = participation.start(study, Arrival("prolific", f"occ-oracle-{i}", {}))
        for trial in Trial.objects.filter(participant=participant).select_related("unit"):
            verdict = oracle.judge(trial_payload(trial, "occlusion_2afc"))
            assert (verdict.correct, verdict.kind, verdict.unit) == (trial.correct_query, trial.kind, trial.unit.key)
            assert verdict.conditions == (participant.condition.name,)
            checked += 1
    assert checked == 4 * (3 + 18)


def test_the_oracle_reads_occlusion_pairs_from_a_manifest():
    from studyapp.simulation import AnswerOracle

    manifest = {
        "layers": [
            {
                "layer": "conv2",
                "basis": "nmf",
                "units": [
                    {
                        "index": 0,
                        "references_max": ["images/r1.png"],
                        "references_min": ["images/r2.png"],
                        "occlusion_trials": [
                            {
                                "query": "images/q.png",
                                "a": "images/a.png",
                                "b": "images/b.png",
                                "correct": "b",
                                "delta_a": 0.1,
                                "delta_b": -0.4,
                            }
                        ],
                        "occlusion_catch_trials": [
                            {
                                "query": "images/r1.png",
                                "a": "images/c.png",
                                "b": "images/d.png",
                                "correct": "a",
                                "delta_a": -0.9,
                                "delta_b": 0.0,
                            }
                        ],
                    }
                ],
            }
        ]
    }
    oracle = AnswerOracle.from_manifest(manifest)
    trial = {
        "block": "main",
        "paradigm": "occlusion_2afc",
        "references_max": [],
        "references_min": [],
        "query_a": "/media/b.png",
        "query_b": "/media/a.png",
    }
    assert (oracle.judge(trial).correct, oracle.judge(trial).kind) == ("a", "main")
    catch = oracle.judge({**trial, "query_a": "/media/c.png", "query_b": "/media/d.png"})
    assert (catch.correct, catch.kind, catch.unit) == ("a", "catch", "conv2:nmf:0")


@pytest.mark.django_db(transaction=True)
def test_simulated_participants_play_occlusion_conditions_with_planted_accuracies(live_server, settings):
    from studyapp.models import Response
    from studyapp.simulation import AnswerOracle, Behaviour, simulate

    settings.PARTICIPANT_RATE_LIMIT_PER_IP = 0
    settings.PARTICIPANT_RATE_LIMIT_PER_TOKEN = 0
    study = make_study(make_job(bases=("neuron", "pca")), n_main=9, participants_per_condition=10)
    study.conditions.update(paradigm="occlusion_2afc")
    study.conditions.filter(name="pca").update(reference_type="none")
    behaviour = Behaviour(
        accuracy={"neuron": 1.0, "pca": 0.0},
        catch_accuracy=1.0,
        practice_accuracy=1.0,
        reload_rate=0.0,
        double_submit_rate=0.0,
        return_rate=0.0,
    )
    result = simulate(
        live_server.url,
        study.slug,
        4,
        behaviour=behaviour,
        oracle=AnswerOracle.from_study(study),
        concurrency=2,
        seed=2,
        max_seconds=120,
    )
    s = result.summary()
    assert s["participants"]["completed"] == 4 and s["errors"] == 0 and s["oracle_misses"] == 0, result.format_summary()
    main = Response.objects.filter(participant__study=study, trial__kind="main")
    assert main.filter(participant__condition__name="neuron").exists()
    assert not main.filter(participant__condition__name="neuron", correct=False).exists()
    assert not main.filter(participant__condition__name="pca", correct=True).exists()
    assert not Response.objects.filter(participant__study=study, trial__kind="catch", correct=False).exists()


@pytest.mark.django_db
def test_a_jobs_content_hash_follows_its_occlusion_pairs_and_is_unchanged_without_them():
    from studyapp.studyfile import content_hash

    plain = make_job(bases=("neuron",), n_units=1, n_occlusion=0)
    before = content_hash(plain)
    assert before is not None and content_hash(plain) == before
    with_pairs = make_job(bases=("neuron",), n_units=1, n_occlusion=2)
    unit = with_pairs.units.get()
    digest = content_hash(with_pairs)
    unit.occlusion_trials = [{**p, "delta_a": p["delta_a"] * 2} for p in unit.occlusion_trials]
    unit.save()
    assert content_hash(with_pairs) != digest
    unit.occlusion_trials = []
    unit.save()
    # without pairs the hash is that of the exemplars alone, as before occlusion pairs existed
    import hashlib
    import json as _json

    from studyapp.models import Exemplar

    rows = (
        Exemplar.objects.filter(unit__job=with_pairs)
        .order_by("unit__layer", "unit__basis", "unit__index", "role", "group", "position")
        .values_list("unit__layer", "unit__basis", "unit__index", "role", "group", "position", "image")
    )
    expected = hashlib.sha256(b"".join(_json.dumps(r, separators=(",", ":")).encode() + b"\n" for r in rows))
    assert content_hash(with_pairs) == f"sha256:{expected.hexdigest()}"


@pytest.mark.django_db
def test_the_monitor_shows_the_paradigm_and_the_published_accuracy_beside_an_occlusion_condition(client):
    from studyapp.monitor import study_monitor

    study = make_study(make_job(bases=("neuron", "pca")))
    study.conditions.filter(name="pca").update(paradigm="occlusion_2afc", reference_type="synthetic")
    play_to_the_questionnaire(client, study)
    rows = {row["condition"]: row for row in study_monitor(study)}
    assert rows["pca"]["paradigm"].startswith("occlusion 2AFC") and rows["neuron"]["paradigm"].startswith("reference")
    assert rows["pca"]["machine_accuracy"] is None and "68 ± 4 %" in rows["pca"]["machine_reason"]
    played = [r for r in rows.values() if r["started"]]
    assert len(played) == 1 and played[0]["main_accuracy"] == 1.0
