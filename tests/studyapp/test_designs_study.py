"""Within-participant and mixed studies end to end in the web app: orders as quota slots (exact under
simultaneous arrivals on PostgreSQL), block lists, condition factors, the disjoint allocation."""
from collections import Counter, defaultdict

import pandas as pd
import pytest
from django.core.exceptions import ValidationError

from studyapp import participation
from studyapp.models import Condition, Participant, Study, Trial
from studyapp.recruitment import Arrival
from tests.studyapp.helpers import arrive_together, make_job, make_study


def within_study(job, **fields):
    """Two reference sets (1 and 9 references) × two reference types, Borowski-style blocks."""
    defaults = {"design": Study.Design.WITHIN, "block_group_by": ["n_references"],
                "block_alternate": "reference_type", "blocks_per_condition": 2, "n_main": 6, "n_practice": 2,
                "catch_ratio": 0, "participants_per_condition": 8}
    study = make_study(job, **{**defaults, **fields})
    study.conditions.all().delete()
    for n in (1, 9):
        for ref in ("natural", "overlay"):
            Condition.objects.create(study=study, name=f"{ref}-{n}", job=job, layer=job.layer, basis="neuron",
                                     reference_type=ref, n_references=n, block_instructions=f"{ref} {n}")
    return study


def check_schedule(participant):
    trials = list(Trial.objects.filter(participant=participant).select_related("condition").order_by("position"))
    main = [t for t in trials if t.block == Trial.Block.MAIN]
    blocks = defaultdict(list)
    for t in main:
        blocks[t.block_index].append(t)
    assert sorted(blocks) == list(range(8))
    per_block = [{t.condition.name for t in blocks[b]} for b in sorted(blocks)]
    assert all(len(names) == 1 for names in per_block), "each block holds one condition"
    names = [next(iter(n)) for n in per_block]
    assert Counter(names) == {c: 2 for c in ("natural-1", "overlay-1", "natural-9", "overlay-9")}
    for start in (0, 4):
        reference_set = names[start:start + 4]
        assert len({n.split("-")[1] for n in reference_set}) == 1
        types = [n.split("-")[0] for n in reference_set]
        assert all(a != b for a, b in zip(types, types[1:]))
    for t in main:
        assert len(t.references_max) == t.condition.n_references
        assert t.condition.reference_type != "overlay" or len(t.references_min) == t.condition.n_references
    return names


@pytest.mark.django_db
def test_within_study_every_participant_does_every_condition_in_alternating_blocks():
    study = within_study(make_job(bases=("neuron",), n_units=3))
    participants = [participation.start(study, Arrival("prolific", f"p{i}", {})) for i in range(8)]
    assert Counter(p.order for p in participants) == {0: 2, 1: 2, 2: 2, 3: 2}
    assert sorted(p.order_slot for p in participants if p.order == 0) == [0, 1]
    firsts = [check_schedule(p)[0] for p in participants]
    assert len(set(firsts)) == 4  # each type opens for each reference set in some order
    practice = Trial.objects.filter(participant=participants[0], block=Trial.Block.PRACTICE)
    assert {t.condition.name for t in practice} == {firsts[0]}
    with pytest.raises(participation.ParticipationError, match="full"):
        participation.start(study, Arrival("prolific", "late", {}))


@pytest.mark.django_db
def test_practice_block_names_the_practice_condition():
    study = within_study(make_job(bases=("neuron",), n_units=3), practice_block="overlay-9")
    p = participation.start(study, Arrival("prolific", "x", {}))
    practice = Trial.objects.filter(participant=p, block=Trial.Block.PRACTICE)
    assert {t.condition.name for t in practice} == {"overlay-9"}


@pytest.mark.django_db
def test_disjoint_allocation_no_participant_sees_a_unit_in_two_conditions_and_cells_within_one():
    job = make_job(bases=("neuron",), n_units=7)
    study = make_study(job, design=Study.Design.WITHIN, unit_allocation=Study.UnitAllocation.DISJOINT,
                       n_main=4, n_practice=0, catch_ratio=0, participants_per_condition=11)
    study.conditions.all().delete()
    for ref in ("natural", "max_only", "none"):
        Condition.objects.create(study=study, name=ref, job=job, layer=job.layer, basis="neuron", reference_type=ref)
    participants = [participation.start(study, Arrival("prolific", f"p{i}", {})) for i in range(11)]
    cells = Counter()
    for p in participants:
        units_by_condition = defaultdict(set)
        for t in Trial.objects.filter(participant=p, block=Trial.Block.MAIN):
            units_by_condition[t.condition_id].add(t.unit_id)
        seen = [u for units in units_by_condition.values() for u in units]
        assert len(seen) == len(set(seen)), "a unit in two conditions"
        # every unit of the allocation gets a trial here: 4 trials over at most 3 units per condition
        for condition, units in units_by_condition.items():
            cells.update((u, condition) for u in units)
    assert len(cells) == 7 * 3
    assert max(cells.values()) - min(cells.values()) <= 1


@pytest.mark.django_db
def test_between_study_trials_carry_their_condition_and_block():
    study = make_study(make_job())
    p = participation.start(study, Arrival("prolific", "b", {}))
    trials = Trial.objects.filter(participant=p)
    assert p.order is None
    assert {t.condition_id for t in trials} == {p.condition_id}
    assert {t.block_index for t in trials if t.block == "main"} == {0}
    assert {t.block_index for t in trials if t.block == "practice"} == {None}


@pytest.mark.django_db
def test_min_references_off_shows_maximal_references_only():
    job = make_job(bases=("neuron",))
    study = make_study(job)
    study.conditions.update(min_references=False, n_references=3)
    p = participation.start(study, Arrival("prolific", "m", {}))
    for t in Trial.objects.filter(participant=p):
        assert len(t.references_max) == 3 and t.references_min == []


@pytest.mark.django_db
def test_a_query_band_the_job_cannot_serve_is_refused():
    job = make_job(bases=("neuron",))
    job.summary = {"parameters": {"query_percentile": 10.0}}
    job.save()
    study = make_study(job)
    condition = study.conditions.get()
    condition.query_band_low, condition.query_band_high = 90, 100
    condition.full_clean()
    assert condition.query_band() == "90-100"
    condition.query_band_low, condition.query_band_high = 85, 95
    with pytest.raises(ValidationError, match="band 90-100 only .its artifact records no percentile.*query_bands include 85-95"):
        condition.full_clean()


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_simultaneous_arrivals_fill_orders_exactly():
    study = within_study(make_job(bases=("neuron",), n_units=3), participants_per_condition=10)
    outcomes = arrive_together(study, [Arrival("prolific", f"pid-{i}", {}) for i in range(16)])
    joined = [o for o in outcomes if isinstance(o, Participant)]
    refused = [o for o in outcomes if isinstance(o, participation.ParticipationError)]
    assert len(joined) == 10 and {e.code for e in refused} == {"study_full"}
    assert Counter(Participant.objects.values_list("order", flat=True)) == {0: 3, 1: 3, 2: 2, 3: 2}
    for p in joined:
        check_schedule(p)


@pytest.mark.django_db
def test_export_of_a_within_study_names_each_trials_condition_block_and_factors(client, tmp_path):
    from analysis.load import read_responses
    from studyapp.export import COLUMNS, write_export
    from tests.studyapp.helpers import answer, api, arrive, correct_choice, through_instructions

    study = within_study(make_job(bases=("neuron",), n_units=3), n_practice=0, participants_per_condition=4)
    for i in range(2):
        participant = arrive(client, study, pid=f"w{i}")
        through_instructions(client, participant)
        for trial in api(client, participant, "trials?limit=50")[1]["trials"]:
            answer(client, participant, trial["id"], correct_choice(trial["id"]))
    path = tmp_path / "out.csv"
    assert write_export(study, path, "csv") == 2 * 4 * 6
    frame = pd.read_csv(path)
    assert list(frame.columns) == COLUMNS
    assert set(frame["condition"]) == {"natural-1", "overlay-1", "natural-9", "overlay-9"}
    assert frame.groupby("participant")["condition"].nunique().eq(4).all()
    assert frame.groupby(["participant", "block_index"])["condition"].nunique().eq(1).all()
    assert sorted(frame["order"].unique()) == [0, 1]
    by_condition = frame.groupby("condition")[["reference_type", "n_references", "min_references", "query_band"]].first()
    assert by_condition.loc["overlay-1"].tolist() == ["overlay", 1, True, "90-100"]
    assert by_condition.loc["natural-9"].tolist() == ["natural", 9, True, "90-100"]
    loaded = read_responses(path)
    assert {"order", "block_index", "n_references", "min_references", "query_band"} <= set(loaded.columns)


@pytest.mark.django_db
def test_the_trial_that_opens_a_block_carries_its_instruction_screen(client):
    from tests.studyapp.helpers import answer, api, arrive, correct_choice, through_instructions

    study = within_study(make_job(bases=("neuron",), n_units=3), n_main=4)
    participant = arrive(client, study, pid="blocks")
    through_instructions(client, participant)
    seen = []
    while True:
        trials = api(client, participant, "trials?limit=3")[1]["trials"]
        if not trials:
            break
        trial = trials[0]  # one at a time: the opening screen must survive a fetch that starts mid-block
        seen.append((trial["block"], trial.get("block_index"), trial.get("block_instructions_html")))
        answer(client, participant, trial["id"], correct_choice(trial["id"]))
    main = [s for s in seen if s[0] == "main"]
    assert all(s[2] is None for s in seen if s[0] == "practice")
    opening = [(index, html) for _, index, html in main if html]
    assert [index for index, _ in opening] == list(range(8))
    condition_of_block = dict(Trial.objects.filter(participant__study=study, block="main")
                              .values_list("block_index", "condition__block_instructions"))
    assert all(f"<p>{condition_of_block[index]}</p>" in html for index, html in opening)
    assert len(main) == 8 * 2 and sum(1 for s in main if s[2]) == 8


@pytest.mark.django_db
def test_schedule_preview_and_monitor_show_orders(admin_client):
    from studyapp.monitor import order_counts

    study = within_study(make_job(bases=("neuron",), n_units=3))
    participation.start(study, Arrival("prolific", "first", {}))
    page = admin_client.get(f"/admin/studyapp/study/{study.pk}/schedule/?n=3").content.decode()
    # the first arrival took order 0; the next three fill orders 1, 2, 3
    assert [f"order {o}, slot 0" in page for o in (1, 2, 3)] == [True] * 3
    assert "natural-1" in page and "conv2:neuron:0" in page
    rows = order_counts(study)
    assert [(r["order"], r["quota"], r["started"]) for r in rows] == [(0, 2, 1), (1, 2, 0), (2, 2, 0), (3, 2, 0)]
    assert len(rows[0]["blocks"]) == 8
    monitor = admin_client.get(f"/admin/studyapp/study/{study.pk}/monitor/").content.decode()
    assert 'id="orders"' in monitor
    assert "natural-1 → overlay-1 → natural-1 → overlay-1 → natural-9" in monitor  # order 0


@pytest.mark.django_db
def test_go_live_names_what_keeps_a_design_from_being_satisfied():
    from studyapp import golive

    study = within_study(make_job(bases=("neuron",), n_units=3), status=Study.Status.DRAFT)
    assert golive.problems(study) == []
    study.block_alternate = "colour"
    assert any("unknown factor 'colour'" in p for p in golive.problems(study))
    study.block_alternate, study.practice_block = "reference_type", "nope"
    assert any("practice block names \"nope\"" in p for p in golive.problems(study))
    study.practice_block, study.unit_allocation = "", Study.UnitAllocation.DISJOINT
    assert any("disjoint allocation" in p for p in golive.problems(study))
    study.unit_allocation, study.design = Study.UnitAllocation.ALL, Study.Design.MIXED
    assert any("between_factors" in p for p in golive.problems(study))


@pytest.mark.django_db
def test_go_live_counts_a_within_condition_s_trials_per_block_against_its_query_pairs():
    from studyapp import golive

    # 3 units with 6 query pairs each; every condition has 2 blocks.
    study = within_study(make_job(bases=("neuron",), n_units=3), status=Study.Status.DRAFT, trials_per_block=9)
    assert golive.problems(study) == []  # 18 main trials per condition over 3 units: 6 each
    study.trials_per_block = 10  # N main stays 6: only the blocks' size gives 20 over 3 units, 7 each
    found = golive.problems(study)
    assert len(found) == 4  # each of the four conditions
    assert found[0] == ('Condition "natural-1": 10 trials per block x 2 blocks gives each unit up to 7 main '
                        'trials, but units conv2:neuron:0, conv2:neuron:1, conv2:neuron:2 have fewer query pairs: '
                        'participants would see one again. Lower the trials per block or run the job with more.')


@pytest.mark.django_db
def test_go_live_counts_only_the_units_a_disjoint_allocation_shows_each_participant():
    from studyapp import golive

    job = make_job(bases=("neuron",), n_units=7, n_queries=3)
    study = make_study(job, design=Study.Design.WITHIN, unit_allocation=Study.UnitAllocation.DISJOINT,
                       n_main=6, n_practice=0, catch_ratio=0, participants_per_condition=3, status=Study.Status.DRAFT)
    study.conditions.all().delete()
    for ref in ("natural", "max_only", "none"):
        Condition.objects.create(study=study, name=ref, job=job, layer=job.layer, basis="neuron", reference_type=ref)
    # 6 trials over all 7 units would be one each; a participant sees 2 of them per condition: 3 each.
    assert golive.problems(study) == []
    study.n_main = 7
    found = golive.problems(study)
    assert len(found) == 3
    assert found[0].startswith('Condition "natural": N main 7, over the 2 of its units a disjoint allocation shows '
                               'each participant, gives each unit up to 4 main trials, but units conv2:neuron:0')
    # and the participants' lists agree: with N main 6, no one sees a query pair twice
    study.n_main = 6
    study.status = Study.Status.LIVE
    study.save()
    for i in range(3):
        p = participation.start(study, Arrival("prolific", f"d{i}", {}))
        pairs = [(t.unit_id, frozenset((t.query_a, t.query_b))) for t in Trial.objects.filter(participant=p)]
        assert len(pairs) == len(set(pairs))


@pytest.mark.django_db
def test_the_simulators_oracle_judges_every_trial_of_a_within_study():
    from studyapp.api import trial_payload
    from studyapp.simulation import AnswerOracle

    study = within_study(make_job(bases=("neuron",), n_units=3), catch_ratio=1 / 6)
    oracle = AnswerOracle.from_study(study)
    checked = 0
    for i in range(4):
        participant = participation.start(study, Arrival("prolific", f"oracle-{i}", {}))
        for trial in Trial.objects.filter(participant=participant).select_related("unit", "condition"):
            verdict = oracle.judge(trial_payload(trial, trial.condition.paradigm))
            assert (verdict.correct, verdict.kind, verdict.unit) == (trial.correct_query, trial.kind, trial.unit.key)
            assert verdict.conditions == (trial.condition.name,)
            checked += 1
    assert checked == 4 * (2 + 4 * 6)


@pytest.mark.django_db
def test_mixed_study_each_participant_does_the_conditions_of_one_between_level():
    job = make_job(bases=("neuron", "pca"), n_units=3)
    study = make_study(job, design=Study.Design.MIXED, between_factors=["basis"], n_main=4, n_practice=1,
                       catch_ratio=0, participants_per_condition=4)
    study.conditions.all().delete()
    for basis in ("neuron", "pca"):
        for ref in ("natural", "max_only"):
            Condition.objects.create(study=study, name=f"{basis}-{ref}", job=job, layer=job.layer, basis=basis,
                                     reference_type=ref)
    participants = [participation.start(study, Arrival("prolific", f"m{i}", {})) for i in range(8)]
    assert Counter(p.order for p in participants) == {0: 2, 1: 2, 2: 2, 3: 2}
    for p in participants:
        shown = {t.condition.name for t in Trial.objects.filter(participant=p).select_related("condition")}
        basis = "neuron" if p.order < 2 else "pca"
        assert shown == {f"{basis}-natural", f"{basis}-max_only"}


@pytest.mark.django_db(transaction=True)
def test_simulated_participants_play_a_within_study_through_the_live_server(live_server, settings):
    from studyapp.simulation import AnswerOracle, Behaviour, simulate

    settings.PARTICIPANT_RATE_LIMIT_PER_IP = 0
    settings.PARTICIPANT_RATE_LIMIT_PER_TOKEN = 0
    study = within_study(make_job(bases=("neuron",), n_units=3), participants_per_condition=4, catch_ratio=1 / 6)
    behaviour = Behaviour(accuracy={"natural-9": 1.0, "overlay-9": 1.0, "natural-1": 0.0, "overlay-1": 0.0},
                          catch_accuracy=1.0, practice_accuracy=1.0, reload_rate=0.0, double_submit_rate=0.0,
                          return_rate=0.0)
    result = simulate(live_server.url, study.slug, 4, behaviour=behaviour, oracle=AnswerOracle.from_study(study),
                      concurrency=2, seed=1, max_seconds=120)
    s = result.summary()
    assert s["participants"]["completed"] == 4 and s["errors"] == 0 and s["oracle_misses"] == 0
    assert Counter(Participant.objects.filter(study=study).values_list("order", flat=True)) == {0: 1, 1: 1, 2: 1, 3: 1}
    main = Trial.objects.filter(participant__study=study, kind="main").select_related("condition", "response")
    # the planted accuracy follows each trial's own condition
    for trial in main:
        assert trial.response.correct == (trial.condition.n_references == 9)
    assert {t.condition.name for t in main} == {"natural-1", "overlay-1", "natural-9", "overlay-9"}


@pytest.mark.django_db
def test_the_study_form_edits_the_design_and_the_condition_factors(admin_client):
    from tests.studyapp.admin_forms import study_form

    study = make_study(make_job(bases=("neuron", "pca")), status=Study.Status.DRAFT)
    form = study_form(study, conditions={"pca": {"n_references": 3, "min_references": "False",
                                                 "block_instructions": "PCA block"}},
                      design="within", counterbalancing="permutations", blocks_per_condition=2,
                      block_group_by='["basis"]', unit_allocation="disjoint")
    response = admin_client.post(f"/admin/studyapp/study/{study.pk}/change/", form)
    assert response.status_code == 302, response.content.decode()[:2000]
    study.refresh_from_db()
    assert (study.design, study.counterbalancing, study.blocks_per_condition, study.block_group_by,
            study.unit_allocation) == ("within", "permutations", 2, ["basis"], "disjoint")
    pca, neuron = study.conditions.get(name="pca"), study.conditions.get(name="neuron")
    assert (pca.n_references, pca.min_references, pca.block_instructions) == (3, False, "PCA block")
    # a POST that leaves the factors out keeps them
    assert (neuron.n_references, neuron.min_references) == (9, True)
    response = admin_client.post(f"/admin/studyapp/study/{study.pk}/change/", study_form(study))
    assert response.status_code == 302
    pca.refresh_from_db()
    study.refresh_from_db()
    assert (pca.n_references, pca.min_references, study.design) == (3, False, "within")
    page = admin_client.get(f"/admin/studyapp/study/{study.pk}/change/").content.decode()
    assert 'name="design"' in page and 'name="conditions-0-n_references"' in page


@pytest.mark.django_db(transaction=True)
def test_the_export_of_a_simulated_within_study_fits_the_analysts_formula(live_server, settings, tmp_path, capsys):
    from analysis.__main__ import main as analysis_main
    from studyapp.export import write_export
    from studyapp.simulation import AnswerOracle, Behaviour, simulate

    settings.PARTICIPANT_RATE_LIMIT_PER_IP = 0
    settings.PARTICIPANT_RATE_LIMIT_PER_TOKEN = 0
    study = within_study(make_job(bases=("neuron",), n_units=3), participants_per_condition=8, n_main=6,
                         catch_ratio=0)
    behaviour = Behaviour(accuracy={"natural-9": 0.9, "overlay-9": 0.8, "natural-1": 0.65, "overlay-1": 0.55},
                          practice_accuracy=1.0, reload_rate=0.0, double_submit_rate=0.0, return_rate=0.0)
    # one at a time: the seeded draws land on the same participants and orders in every run
    result = simulate(live_server.url, study.slug, 8, behaviour=behaviour, oracle=AnswerOracle.from_study(study),
                      concurrency=1, seed=5, max_seconds=120)
    assert result.summary()["participants"]["completed"] == 8
    path = tmp_path / "within.csv"
    write_export(study, path, "csv")
    frame = pd.read_csv(path)
    main = frame[frame["trial_kind"] == "main"]
    assert main.groupby("participant")["condition"].nunique().eq(4).all()
    assert sorted(Counter(frame.drop_duplicates("participant")["order"]).values()) == [2, 2, 2, 2]
    capsys.readouterr()
    assert analysis_main(["glmm", str(path), "--formula",
                          "correct ~ reference_type * n_references + (1|participant) + (1|unit)"]) == 0
    out = capsys.readouterr().out
    assert "Number of obs: 192, groups:  participant, 8; unit, 3" in out
    assert all(term in out for term in ("reference_typeoverlay ", "n_references ",
                                        "reference_typeoverlay:n_references "))
