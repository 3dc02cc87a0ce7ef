"""The export's per-participant exclusion flags and per-trial machine columns (docs/contracts.md §2):
the flags agree with the live monitor and with analysis/'s own rules at the study's settings; `mis_delta`
is the Δ of the very query pair a trial showed, found again here from the image names."""
import math
import uuid

import pandas as pd
import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from analysis.exclusions import ONE_SIDE_ALPHA, apply_exclusions, one_side_min_answers
from analysis.load import read_responses
from studyapp.exclusions import FLAG_COLUMNS
from studyapp.export import COLUMNS, response_frame, write_export
from studyapp.models import Trial, Unit
from studyapp.monitor import study_monitor
from tests.studyapp.helpers import answer, api, arrive, image_name, make_job, make_study


def other_side(choice):
    return "b" if choice == "a" else "a"


@pytest.fixture(autouse=True)
def _paced(clock):
    global CLOCK
    CLOCK = clock
    yield
    CLOCK = None


CLOCK = None


def take_part(client, study, reading_ms=20000, choose=None, finish=True, both_sides=True, answer_s=3.0):
    """One participant through the API: practice answered correctly, main and catch trials by
    `choose(trial)` (default: correctly). With `both_sides` the plan uses both response sides (the first
    main trial flips when the drawn answer key happens to sit on one side), so that only the participant
    meant to trip the one-side rule does. The server's clock moves as a person's time would: the reading
    time before the instructions' end, `answer_s` before each answer."""
    participant = arrive(client, study, pid=str(uuid.uuid4()))
    assert api(client, participant, "consent", {"consent": True})[0] == 200
    CLOCK.advance(reading_ms / 1000 + 0.5)
    assert api(client, participant, "instructions", {"reading_ms": reading_ms})[0] == 200
    answered = Trial.objects.filter(participant=participant, block="main").order_by("position")
    plan = {t.pk: (choose or (lambda t: t.correct_query))(t) for t in answered}
    if both_sides and len(set(plan.values())) == 1:
        first_main = next(t for t in answered if t.kind == "main")
        plan[first_main.pk] = other_side(plan[first_main.pk])
    while True:
        trials = api(client, participant, "trials?limit=50")[1]["trials"]
        if not trials:
            break
        for shown in trials:
            trial = Trial.objects.get(pk=shown["id"])
            choice = trial.correct_query if trial.kind == "practice" else plan[trial.pk]
            CLOCK.advance(answer_s)
            assert answer(client, participant, trial.pk, choice)[0] == 201
    if finish:
        assert api(client, participant, "questionnaire", {"answers": {}})[0] == 200
    return participant


@pytest.mark.django_db
def test_flags_follow_the_study_rules_and_agree_with_the_monitor_and_the_analysis(client, tmp_path):
    # 10 main and catch answers: one side throughout is a 1-in-512 chance for an honest participant, which
    # this study's one-side rate (1 %) counts as evidence; the default (0.1 %) needs 11 answers.
    study = make_study(make_job(), min_catch_accuracy=0.8, min_instructions_seconds=15, one_side_alpha=0.01)
    good = take_part(client, study)
    careless = take_part(client, study,
                         choose=lambda t: other_side(t.correct_query) if t.kind == "catch" else t.correct_query)
    skimmer = take_part(client, study, reading_ms=4000)
    one_side = take_part(client, study, choose=lambda t: "a", both_sides=False)
    partial = take_part(client, study, reading_ms=3000, finish=False)

    path = tmp_path / "export.csv"
    write_export(study, path, "csv")
    frame = pd.read_csv(path)
    assert list(frame.columns) == COLUMNS and set(FLAG_COLUMNS) <= set(frame.columns)
    per = frame.groupby("participant")[FLAG_COLUMNS].nunique(dropna=False)
    assert (per == 1).all().all()  # computed once per participant: the same on every row
    flags = frame.drop_duplicates("participant").set_index("participant")
    assert flags.loc[good.pseudonym, "excluded"] == False  # noqa: E712 (numpy bool)
    assert flags.loc[careless.pseudonym, ["excluded", "excl_catch_accuracy"]].tolist() == [True, True]
    assert flags.loc[careless.pseudonym, "excl_instructions_time"] == False  # noqa: E712
    assert flags.loc[skimmer.pseudonym, ["excluded", "excl_instructions_time"]].tolist() == [True, True]
    assert flags.loc[skimmer.pseudonym, "excl_catch_accuracy"] == False  # noqa: E712
    assert flags.loc[one_side.pseudonym, ["excluded", "excl_one_side"]].tolist() == [True, True]
    assert flags.loc[partial.pseudonym, "excluded"] == True  # noqa: E712
    # The study sets no time window: the rule is off and its cells are empty.
    assert frame["excl_total_time"].isna().all()

    # The live monitor counts the same verdicts (over completed participants).
    rows = study_monitor(study)
    completed = sum(r["completed"] for r in rows)
    rate = sum(r["exclusion_rate"] * r["completed"] for r in rows if r["completed"])
    assert completed == 4 and round(rate) == 3

    # analysis/'s own rules at the study's settings reach the same participants.
    data = read_responses(path)
    own = apply_exclusions(data, min_catch_accuracy=0.8, exclude_one_side=True, min_instructions_s=15,
                           one_side_alpha=0.01)
    assert set(own.excluded["participant"]) == set(flags.index[flags["excluded"]])


@pytest.mark.django_db
def test_one_side_throughout_is_not_evidence_below_the_rules_answer_count(client):
    """At the default rate, ten answers on one side (chance 1 in 512 for an honest participant) do not
    exclude: the rule would otherwise exclude honest participants more often than the 0.1 % it promises."""
    study = make_study(make_job())
    assert study.one_side_alpha == ONE_SIDE_ALPHA and one_side_min_answers(study.one_side_alpha) == 11
    take_part(client, study, choose=lambda t: "a", both_sides=False)
    frame = response_frame(study)
    assert (frame["excl_one_side"] == False).all()  # noqa: E712 (the rule applies and judges "no")


@pytest.mark.django_db
def test_a_stricter_study_setting_changes_the_flags(client):
    study = make_study(make_job(), min_instructions_seconds=25)
    take_part(client, study, reading_ms=20000)
    frame = response_frame(study)
    assert frame["excl_instructions_time"].all() and frame["excluded"].all()


@pytest.mark.django_db
def test_the_one_side_rule_and_the_time_window_are_study_settings(client):
    study = make_study(make_job(), exclude_one_side=False, min_total_minutes=30)
    take_part(client, study, choose=lambda t: "a", both_sides=False)
    frame = response_frame(study)
    assert frame["excl_one_side"].isna().all()  # the study does not apply the rule
    assert frame["excl_total_time"].all()  # a finish in seconds is below the 30-minute floor
    study.min_total_minutes, study.max_total_minutes = None, 30
    study.save()
    frame = response_frame(study)
    assert not frame["excl_total_time"].any()


@pytest.mark.django_db
def test_a_time_window_whose_bounds_cross_is_refused():
    from django.core.exceptions import ValidationError

    study = make_study(make_job(), min_total_minutes=20, max_total_minutes=10)
    with pytest.raises(ValidationError, match="upper bound"):
        study.full_clean()


def _expected_pair(job, unit, image, role):
    """The position of `image` in the unit's query list, from the factory's own naming."""
    hits = [i for i in range(6) if image_name(job, unit.basis, unit.index, role, i) == image]
    return hits[0] if hits else None


@pytest.mark.django_db
def test_mis_delta_is_the_delta_of_the_pair_the_trial_showed(client, tmp_path):
    job = make_job(n_units=3, n_queries=6)
    units = list(Unit.objects.filter(job=job))
    bare = units[0]  # a unit scored before mis_deltas existed: MIS only
    bare.measures = {"mis": 0.61}
    bare.save()
    unscored = units[1]  # no machine score at all
    deltas = {}
    for unit in units[2:]:
        # distinct for every unit and pair, so a row matched to the wrong pair or unit shows
        deltas[unit.pk] = [round(unit.pk + i / 100, 6) for i in range(6)]
        unit.measures = {"mis": 0.5 + unit.index / 100, "mis_deltas": deltas[unit.pk], "explained_variance_ratio": 0.1}
        unit.save()
    study = make_study(job, n_main=18)
    for _ in range(3):
        take_part(client, study)

    path = tmp_path / "export.parquet"
    write_export(study, path, "parquet")
    frame = pd.read_parquet(path)
    assert frame["mis_delta"].dtype == "float64" and frame["unit_mis"].dtype == "float64"
    by_key = {u.key: u for u in units}
    checked = {"main": 0, "practice": 0}
    for row in frame.itertuples():
        unit = by_key[row.unit]
        expected_mis = {bare.pk: 0.61, unscored.pk: None}.get(unit.pk, 0.5 + unit.index / 100)
        assert (math.isnan(row.unit_mis) if expected_mis is None else row.unit_mis == expected_mis)
        if row.trial_kind == "catch" or unit.pk not in deltas:
            assert math.isnan(row.mis_delta), row
            continue
        plus, minus = (row.query_a, row.query_b) if row.correct_query == "a" else (row.query_b, row.query_a)
        i = _expected_pair(job, unit, plus, "qmax")
        assert i is not None and _expected_pair(job, unit, minus, "qmin") == i
        assert row.mis_delta == deltas[unit.pk][i]
        if row.trial_kind == "practice":
            assert i == 0  # practice shows each unit's most extreme pair
        checked[row.trial_kind] += 1
    assert checked["main"] >= 10 and checked["practice"] >= 1
    assert frame.loc[frame["trial_kind"] == "catch", "mis_delta"].isna().all()
    assert (frame["trial_kind"] == "catch").any()


@pytest.mark.django_db
def test_the_export_costs_the_same_queries_for_one_participant_or_many(client):
    job = make_job()
    for unit in Unit.objects.filter(job=job):
        unit.measures = {"mis": 0.55, "mis_deltas": [0.1] * 6}
        unit.save()
    study = make_study(job)
    take_part(client, study)

    def count():
        with CaptureQueriesContext(connection) as queries:
            frame = response_frame(study)
        return len(queries), len(frame)

    few, rows_few = count()
    for _ in range(3):
        take_part(client, study)
    many, rows_many = count()
    assert rows_many == 4 * rows_few and many == few


@pytest.mark.django_db(transaction=True)
def test_a_participant_who_answers_while_the_export_runs_is_left_whole_or_out(client, monkeypatch):
    """The flag queries and the rows read one snapshot: an answer stored between them never makes a
    row without flags."""
    from studyapp import export

    study = make_study(make_job())
    take_part(client, study)
    late = []
    real_flags = export.participant_flags

    def flags_then_someone_answers(s):
        found = real_flags(s)
        if not late:  # in another connection, as a live participant would
            import threading

            worker = threading.Thread(target=lambda: late.append(take_part(client, study, finish=False)))
            worker.start()
            worker.join()
        return found

    monkeypatch.setattr(export, "participant_flags", flags_then_someone_answers)
    frame = response_frame(study)
    assert late and frame["participant"].nunique() == 1  # the late participant is not in this snapshot
    assert len(response_frame(study)["participant"].unique()) == 2  # and is in the next export
