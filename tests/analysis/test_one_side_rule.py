"""The one-side exclusion rule as a test with a stated false-positive rate (analysis.exclusions)."""
import itertools

import pandas as pd
import pytest

from analysis.exclusions import ONE_SIDE_ALPHA, apply_exclusions, one_side_chance, one_side_min_answers


def honest_one_side_rate(n: int) -> float:
    """Exact share of the 2ⁿ equally likely side sequences of an honest participant that use one side."""
    sequences = list(itertools.product("ab", repeat=n))
    return sum(len(set(s)) == 1 for s in sequences) / len(sequences)


@pytest.mark.parametrize("n", [2, 6, 10, 11, 12])
def test_the_chance_of_one_side_is_counted_exactly(n):
    assert one_side_chance(n) == pytest.approx(honest_one_side_rate(n))


def test_the_default_keeps_the_false_positive_rate_under_a_thousandth_at_any_trial_count():
    enough = one_side_min_answers()
    assert enough == 11
    # Below the threshold the rule never excludes; from it on, the chance only falls.
    assert all(one_side_chance(n) <= ONE_SIDE_ALPHA for n in range(enough, 200))
    assert one_side_chance(enough - 1) > ONE_SIDE_ALPHA  # the threshold is the smallest that works


@pytest.mark.parametrize("alpha,expected", [(0.5, 2), (0.05, 6), (0.01, 8), (1e-6, 21)])
def test_the_threshold_follows_the_rate(alpha, expected):
    assert one_side_min_answers(alpha) == expected


@pytest.mark.parametrize("alpha", [0, 1, -0.1, 2])
def test_a_rate_outside_zero_one_is_refused(alpha):
    with pytest.raises(ValueError, match="alpha"):
        one_side_min_answers(alpha)


def answers(participant, choices):
    return [{"participant": participant, "trial_kind": "main", "choice": c, "correct": True} for c in choices]


def test_analysis_applies_the_rule_from_its_answer_count():
    df = pd.DataFrame(answers("six", "a" * 6) + answers("eleven", "b" * 11) + answers("mixed", "ab" * 6))
    res = apply_exclusions(df, min_catch_accuracy=None, min_instructions_s=None, max_fast_answer_share=None,
                           exclude_flagged=False)
    assert list(res.excluded["participant"]) == ["eleven"]
    lenient = apply_exclusions(df, min_catch_accuracy=None, min_instructions_s=None,
                               max_fast_answer_share=None, exclude_flagged=False, one_side_alpha=0.05)
    assert sorted(lenient.excluded["participant"]) == ["eleven", "six"]
