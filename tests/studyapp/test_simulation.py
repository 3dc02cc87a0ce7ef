"""The participant simulator: its answer oracle against the stored answer keys, and a handful of
simulated participants through Django's live server."""
import pytest

from studyapp import participation
from studyapp.models import Participant, Response, Trial
from studyapp.recruitment import Arrival
from studyapp.simulation import (
    AnswerOracle,
    Behaviour,
    Browser,
    Outcome,
    Request,
    SimulationResult,
    image_key,
    parse_accuracy,
    percentile,
    simulate,
)
from studyapp.simulation.browser import PageParser
from tests.studyapp.helpers import make_job, make_study, no_rate_limits


def test_parse_accuracy():
    assert parse_accuracy("neuron=0.7, pca=0.8,nmf=0.85") == {"neuron": 0.7, "pca": 0.8, "nmf": 0.85}
    assert parse_accuracy("0.6,pca=1") == {"*": 0.6, "pca": 1.0}
    assert parse_accuracy("") == {}
    with pytest.raises(ValueError):
        parse_accuracy("pca=1.2")


def test_accuracy_lookup_prefers_condition_then_basis_then_star():
    from studyapp.simulation import Judgement

    b = Behaviour(accuracy={"pca-conv2": 0.9, "pca": 0.8, "*": 0.6}, default_accuracy=0.5)
    assert b.accuracy_for(Judgement("a", "main", "pca", "u", ("pca-conv2",))) == 0.9
    assert b.accuracy_for(Judgement("a", "main", "pca", "u", ("other",))) == 0.8
    assert b.accuracy_for(Judgement("a", "main", "nmf", "u", ())) == 0.6
    assert Behaviour().accuracy_for(Judgement("a", "main", "nmf", "u", ())) == 0.75


def test_percentile_interpolates():
    assert percentile([3, 1, 2, 4], 50) == 2.5
    assert percentile([5], 99) == 5
    assert percentile(list(range(101)), 99) == 99


def test_pages_are_parsed_as_the_browser_reads_them():
    page = PageParser()
    page.feed('<form method="post" action="/s/x/start"><input type="hidden" name="csrfmiddlewaretoken" '
              'value="tok"><input type="hidden" name="PROLIFIC_PID" value="p1"><button>Go</button></form>'
              '<script id="study-config" type="application/json">{"token": "t", "x": "\\u003C/script\\u003E"}'
              '</script>')
    assert page.form_action == "/s/x/start"
    assert page.inputs == {"csrfmiddlewaretoken": "tok", "PROLIFIC_PID": "p1"}
    assert page.config_text.startswith('{"token": "t"')
    assert image_key("/media/artifacts/job-1/images/abc.png") == "abc.png"


@pytest.mark.django_db
def test_the_oracle_agrees_with_every_stored_answer_key_without_reading_it():
    study = make_study(make_job(bases=("neuron", "pca", "nmf")), n_main=18)
    oracle = AnswerOracle.from_study(study)
    assert {c.name for c in oracle.conditions} == {"neuron", "pca", "nmf"}
    from studyapp.api import trial_payload

    checked = 0
    for i in range(6):
        participant = participation.start(study, Arrival("prolific", f"oracle-{i}", {}))
        for trial in Trial.objects.filter(participant=participant).select_related("unit"):
            verdict = oracle.judge(trial_payload(trial, participant.condition.paradigm))
            assert verdict.correct == trial.correct_query
            assert verdict.kind == trial.kind
            assert verdict.basis == trial.unit.basis and verdict.unit == trial.unit.key
            assert verdict.conditions == (participant.condition.name,)
            checked += 1
    assert checked == 6 * (3 + 18)


def test_the_oracle_reads_a_manifest_and_says_when_it_cannot_tell():
    manifest = {"layers": [{"layer": "conv2", "basis": "pca", "units": [
        {"index": 0, "references_max": ["images/r1.png"], "references_min": ["images/r2.png"],
         "queries_max": ["images/q1.png"], "queries_min": ["images/q2.png"]},
        {"index": 1, "references_max": ["images/r3.png"], "references_min": ["images/r4.png"],
         "queries_max": ["images/q2.png"], "queries_min": ["images/q1.png"]},
    ]}]}
    oracle = AnswerOracle.from_manifest(manifest)
    trial = {"block": "main", "references_max": ["/media/a/images/r1.png"],
             "references_min": ["/media/a/images/r2.png"],
             "query_a": "/media/a/images/q2.png", "query_b": "/media/a/images/q1.png"}
    verdict = oracle.judge(trial)
    assert (verdict.correct, verdict.kind, verdict.basis, verdict.unit) == ("b", "main", "pca", "conv2:pca:0")
    # The same queries under the other unit's references: the answer flips with the unit.
    assert oracle.judge({**trial, "references_max": ["images/r3.png"]}).correct == "a"
    # No references shown and two units that disagree: the oracle does not guess.
    assert oracle.judge({**trial, "references_max": [], "references_min": []}).correct is None
    catch = oracle.judge({**trial, "query_a": "x/r1.png", "query_b": "x/r2.png"})
    assert (catch.correct, catch.kind) == ("a", "catch")


@pytest.mark.parametrize("paradigm", ["reference_2afc", "ordered_strip"])
def test_the_oracle_agrees_with_the_trial_plan_of_either_paradigm(paradigm):
    from studyapp import trials

    def names(u, role, n):
        return [f"artifacts/x/images/{u}-{role}-{i}.png" for i in range(n)]

    units = [trials.UnitExemplars(unit_id=u, references_max=names(u, "rmax", 9), references_min=names(u, "rmin", 9),
                                  queries_max=names(u, "qmax", 6), queries_min=names(u, "qmin", 6),
                                  strips=[names(u, f"strip{k}", 9) for k in range(3)]) for u in range(4)]
    manifest = {"layers": [{"layer": "conv2", "basis": "nmf", "units": [
        {"index": u.unit_id, "references_max": u.references_max, "references_min": u.references_min,
         "queries_max": u.queries_max, "queries_min": u.queries_min, "strips": u.strips} for u in units]}]}
    oracle = AnswerOracle.from_manifest(manifest)
    specs = []
    for seed in range(20):
        specs += trials.build_trial_list(units, n_practice=5, n_main=18, catch_ratio=1 / 9, reference_type="natural",
                                         seed=seed, paradigm=paradigm)
    for spec in specs:
        payload = {"block": spec.block, "paradigm": paradigm}
        if paradigm == "ordered_strip":
            payload.update(strip_a=["/media/" + p for p in spec.strip_a], strip_b=["/media/" + p for p in spec.strip_b])
        else:
            payload.update(references_max=spec.references_max, references_min=spec.references_min,
                           query_a="/media/" + spec.query_a, query_b="/media/" + spec.query_b)
        verdict = oracle.judge(payload)
        if verdict.correct is None:
            # Only an easy strip whose shuffle keeps every low image before every high one is undecidable.
            assert paradigm == "ordered_strip" and spec.kind != "main"
            continue
        expected = (spec.correct_query, spec.kind, f"conv2:nmf:{spec.unit_id}")
        assert (verdict.correct, verdict.kind, verdict.unit) == expected


def test_summary_tables():
    result = SimulationResult(
        outcomes=[Outcome(0, status="completed", token="t", answers=3, correct={"main:pca": [2, 3]})],
        requests=[Request("responses", "POST", 201, 0.0, 0.010), Request("responses", "POST", 201, 0.0, 0.030),
                  Request("trials", "GET", 0, 0.0, 1.0)],
        wall_s=2.0, concurrency=1, behaviour=Behaviour())
    s = result.summary()
    assert s["latency"]["responses"]["p50_ms"] == 20.0 and s["latency"]["trials"]["errors"] == 1
    assert s["accuracy"]["main:pca"] == {"correct": 2, "n": 3, "accuracy": 0.6667}
    assert s["throughput"]["answers_per_s"] == 1.5
    assert "responses" in result.format_summary()


def test_browser_refuses_other_schemes():
    with pytest.raises(ValueError):
        Browser("ftp://127.0.0.1/", [])


@pytest.mark.django_db(transaction=True)
def test_simulated_participants_through_the_live_server(live_server, settings):
    no_rate_limits(settings)
    study = make_study(make_job(bases=("neuron", "pca")), n_main=9, participants_per_condition=10)
    behaviour = Behaviour(accuracy={"neuron": 0.5, "pca": 1.0}, catch_accuracy=1.0, practice_accuracy=1.0,
                          reload_rate=1.0, double_submit_rate=1.0, return_rate=0.0)
    result = simulate(live_server.url, study.slug, 6, behaviour=behaviour, oracle=AnswerOracle.from_study(study),
                      concurrency=3, seed=1, max_seconds=120)
    s = result.summary()
    assert s["participants"]["completed"] == 6, result.format_summary()
    assert s["errors"] == 0 and s["oracle_misses"] == 0
    assert s["resends"] == 12 and s["resends_stored_again"] == 0 and s["reloads"] == 6
    # Every answer stored exactly once; the resends left no trace.
    assert Response.objects.filter(participant__study=study).count() == s["answers_stored"] == 6 * 12
    assert set(Participant.objects.filter(study=study).values_list("status", flat=True)) == {"completed"}
    # pca is planted at 1.0: every main pca answer is right in the database too.
    pca = Response.objects.filter(participant__condition__name="pca", trial__kind="main")
    assert pca.exists() and not pca.filter(correct=False).exists()
    assert not Response.objects.filter(participant__study=study, trial__kind="catch", correct=False).exists()
    for endpoint in ("landing", "start", "experiment", "session", "consent", "instructions", "trials",
                     "responses", "questionnaire"):
        assert s["latency"][endpoint]["n"] > 0
    stored = Response.objects.filter(participant__study=study)
    assert set(stored.values_list("confidence", flat=True)) <= {1, 2, 3}
    assert all(250 <= rt < 60_000 for rt in stored.values_list("rt_ms", flat=True))


@pytest.mark.django_db(transaction=True)
def test_returns_and_a_full_study(live_server, settings):
    no_rate_limits(settings)
    study = make_study(make_job(bases=("neuron",)), n_main=9, participants_per_condition=4)
    behaviour = Behaviour(return_rate=1.0, decline_share=0.5, reload_rate=0.0, double_submit_rate=0.0)
    result = simulate(live_server.url, study.slug, 6, behaviour=behaviour, oracle=None, concurrency=2, seed=3,
                      max_seconds=120)
    s = result.summary()["participants"]
    assert s["returned"] + s["abandoned"] + s["refused"] == 6 and s["error"] == 0, result.format_summary()
    assert s["returned"] >= 1 and s["abandoned"] >= 1
    statuses = dict(Participant.objects.filter(study=study).values_list("token", "status"))
    for o in result.outcomes:
        if o.status == "returned":
            assert statuses[o.token] == "returned"
        elif o.status == "abandoned":
            assert statuses[o.token] == "started"
            assert Response.objects.filter(participant__token=o.token).count() == o.answers > 0
