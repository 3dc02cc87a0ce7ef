import numpy as np
import pytest

from studyapp.trials import UnitExemplars, build_trial_list, main_trials, repeat_practice


def units(n=3, n_queries=5):
    return [
        UnitExemplars(
            unit_id=u,
            references_max=[f"u{u}-rmax{i}" for i in range(9)],
            references_min=[f"u{u}-rmin{i}" for i in range(9)],
            queries_max=[f"u{u}-qmax{i}" for i in range(n_queries)],
            queries_min=[f"u{u}-qmin{i}" for i in range(n_queries)],
            strips=[[f"u{u}-strip{k}-{i}" for i in range(9)] for k in range(4)],
            overlays_max=[f"u{u}-omax{i}" for i in range(9)],
        )
        for u in range(n)
    ]


def correct_and_wrong(trial):
    return (trial.query_a, trial.query_b) if trial.correct_query == "a" else (trial.query_b, trial.query_a)


def test_plan_has_practice_then_main_with_the_requested_catch_share():
    specs = build_trial_list(units(), n_practice=5, n_main=18, catch_ratio=1 / 9, reference_type="natural", seed=1)
    assert [s.block for s in specs] == ["practice"] * 5 + ["main"] * 18
    assert sum(s.kind == "catch" for s in specs) == 2
    assert all(s.attempt == 1 for s in specs[:5]) and all(s.attempt is None for s in specs[5:])


def test_answer_key_points_at_the_maximally_activating_query():
    for spec in build_trial_list(units(), n_practice=5, n_main=30, catch_ratio=0.2, reference_type="natural", seed=2):
        right, wrong = correct_and_wrong(spec)
        if spec.kind == "catch":
            assert right in spec.references_max and wrong in spec.references_min
        else:
            assert "qmax" in right and "qmin" in wrong


def test_main_queries_are_never_references_and_pairs_are_not_reused_while_unused_ones_remain():
    specs = main_trials(units(n=3, n_queries=5), 15, 0.0, "natural", np.random.default_rng(0))
    for spec in specs:
        assert spec.query_a not in spec.references_max + spec.references_min
    shown = [tuple(sorted((s.query_a, s.query_b))) for s in specs]
    assert len(set(shown)) == 15


def test_units_are_spread_evenly():
    specs = main_trials(units(n=3), 12, 0.0, "natural", np.random.default_rng(0))
    counts = np.bincount([s.unit_id for s in specs])
    assert counts.tolist() == [4, 4, 4]


def test_correct_side_is_balanced_and_random():
    specs = main_trials(units(n=4, n_queries=50), 400, 0.0, "natural", np.random.default_rng(3))
    share_a = np.mean([s.correct_query == "a" for s in specs])
    assert 0.42 < share_a < 0.58


def test_same_seed_same_list_and_different_seed_different_list():
    kwargs = dict(n_practice=5, n_main=18, catch_ratio=1 / 9, reference_type="natural")
    a = build_trial_list(units(), seed=[7, 1], **kwargs)
    b = build_trial_list(units(), seed=[7, 1], **kwargs)
    c = build_trial_list(units(), seed=[7, 2], **kwargs)
    assert a == b
    assert a != c


@pytest.mark.parametrize("reference_type, n_max, n_min", [("natural", 9, 9), ("max_only", 9, 0), ("none", 0, 0)])
def test_reference_types_control_what_is_shown(reference_type, n_max, n_min):
    spec = build_trial_list(units(), n_practice=1, n_main=1, catch_ratio=0, reference_type=reference_type, seed=0)[1]
    assert (len(spec.references_max), len(spec.references_min)) == (n_max, n_min)


def test_repeated_practice_is_a_new_draw_with_its_attempt_number():
    first = build_trial_list(units(n=5), n_practice=5, n_main=0, catch_ratio=0, reference_type="natural", seed=[1, 2])
    again = repeat_practice(units(n=5), n_practice=5, reference_type="natural", seed=[1, 2], attempt=2)
    assert all(s.attempt == 2 and s.block == "practice" for s in again)
    assert [s.unit_id for s in again] != [s.unit_id for s in first] or \
        [s.correct_query for s in again] != [s.correct_query for s in first]


def test_bad_input_is_refused_with_a_clear_message():
    with pytest.raises(ValueError, match="no units"):
        build_trial_list([], n_practice=1, n_main=1, catch_ratio=0, reference_type="natural", seed=0)
    with pytest.raises(ValueError, match="reference type"):
        build_trial_list(units(), n_practice=1, n_main=1, catch_ratio=0, reference_type="sideways", seed=0)


def test_ordered_strip_trials_pit_the_ordered_strip_against_a_non_monotone_shuffle():
    specs = build_trial_list(units(), n_practice=3, n_main=27, catch_ratio=1 / 9, reference_type="natural",
                             seed=4, paradigm="ordered_strip")
    assert sum(s.kind == "catch" for s in specs) == 3
    for spec in specs:
        ordered, shuffled = (spec.strip_a, spec.strip_b) if spec.correct_query == "a" else (spec.strip_b, spec.strip_a)
        assert sorted(shuffled) == sorted(ordered) and shuffled != ordered and shuffled != ordered[::-1]
        assert spec.query_a == spec.query_b == "" and not spec.references_max
        if spec.kind == "main":
            assert ordered in units()[spec.unit_id].strips
        else:  # practice and catch: least activating references, then most activating ones
            assert "rmin" in ordered[0] and "rmax" in ordered[-1]


def test_a_units_ordered_strips_are_used_up_before_any_is_shown_again():
    specs = build_trial_list(units(n=2), n_practice=0, n_main=16, catch_ratio=0, reference_type="natural",
                             seed=5, paradigm="ordered_strip")
    for unit in units(n=2):
        shown = [s.strip_a if s.correct_query == "a" else s.strip_b for s in specs if s.unit_id == unit.unit_id]
        assert len(shown) == 8
        first_round, second_round = shown[:4], shown[4:]
        assert sorted(first_round) == sorted(second_round) == sorted(unit.strips)


def test_the_overlay_condition_shows_heat_maps_in_place_of_the_maximal_references():
    for spec in build_trial_list(units(), n_practice=2, n_main=9, catch_ratio=1 / 9, reference_type="overlay", seed=6):
        unit = units()[spec.unit_id]
        assert spec.references_max == unit.overlays_max and spec.references_min == unit.references_min
        # queries stay plain images, catch queries included
        assert {spec.query_a, spec.query_b} <= set(unit.queries_max + unit.queries_min + unit.references_max
                                                   + unit.references_min)


def test_an_overlay_condition_without_overlays_is_refused():
    plain = [UnitExemplars(**{**vars(u), "overlays_max": []}) for u in units()]
    with pytest.raises(ValueError, match="overlay"):
        build_trial_list(plain, n_practice=1, n_main=1, catch_ratio=0, reference_type="overlay", seed=0)


def test_unknown_paradigm_is_refused():
    with pytest.raises(ValueError, match="paradigm"):
        build_trial_list(units(), n_practice=1, n_main=1, catch_ratio=0, reference_type="natural", seed=0,
                         paradigm="odd-one-out")


def synthetic_units(n=3):
    return [UnitExemplars(**{**u.__dict__, "synthetic_max": [f"u{u.unit_id}-smax{i}" for i in range(3)],
                             "synthetic_min": [f"u{u.unit_id}-smin{i}" for i in range(3)]}) for u in units(n)]


def test_synthetic_references_with_natural_queries():
    specs = build_trial_list(synthetic_units(), n_practice=3, n_main=27, catch_ratio=1 / 9,
                             reference_type="synthetic", seed=4)
    for spec in specs:
        assert all("smax" in r for r in spec.references_max) and all("smin" in r for r in spec.references_min)
        right, wrong = correct_and_wrong(spec)
        if spec.kind == "catch":
            # a catch query is one of the references on screen
            assert right in spec.references_max and wrong in spec.references_min
        else:
            assert "qmax" in right and "qmin" in wrong
    assert sum(s.kind == "catch" for s in specs) == 3


def test_mixed_references_show_both_kinds_side_by_side():
    spec = build_trial_list(synthetic_units(), n_practice=0, n_main=3, catch_ratio=0, reference_type="mixed",
                            seed=5)[0]
    assert sum("smax" in r for r in spec.references_max) == 3 and sum("rmax" in r for r in spec.references_max) == 9
    assert sum("smin" in r for r in spec.references_min) == 3 and sum("rmin" in r for r in spec.references_min) == 9


def test_synthetic_condition_needs_feature_visualizations():
    with pytest.raises(ValueError, match="feature_vis"):
        build_trial_list(units(), n_practice=1, n_main=3, catch_ratio=0, reference_type="synthetic", seed=1)
