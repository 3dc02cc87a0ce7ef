import numpy as np
import pytest

from stimuli.exemplars import band_size, select_exemplars
from stimuli.selection import select_units, unit_rng


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_invariants(seed):
    rng = np.random.default_rng(seed)
    r = np.round(rng.normal(size=500), 1)  # many ties
    ex = select_exemplars(r, n_references=9, percentile=10, n_queries=20, strip_length=9, rng=seed)
    refs = set(ex.references_max) | set(ex.references_min)
    assert len(ex.references_max) == 9 and len(ex.references_min) == 9 and len(refs) == 18
    assert not refs & (set(ex.queries_max) | set(ex.queries_min))
    assert not set(ex.queries_max) & set(ex.queries_min)
    assert len(ex.queries_max) == len(ex.queries_min) == 20
    assert np.all(np.diff(r[ex.references_max]) <= 0)
    assert np.all(np.diff(r[ex.references_min]) >= 0)
    assert r[ex.references_max].min() >= r[ex.queries_max].max() - 1e-12
    assert r[ex.references_min].max() <= r[ex.queries_min].min() + 1e-12
    # queries come from the top / bottom bands by rank
    m = band_size(len(r), 10)
    assert set(ex.queries_max) <= set(np.argsort(-r, kind="stable")[:m])
    assert set(ex.queries_min) <= set(np.argsort(r, kind="stable")[:m])
    assert np.all(np.diff(r[ex.strip]) >= 0) and len(ex.strip) == 9
    assert ex.strip[0] == np.argsort(r, kind="stable")[0]


def test_deterministic_from_seed():
    r = np.random.default_rng(0).normal(size=300)
    a = select_exemplars(r, rng=unit_rng(5, "conv2", "pca", "3"))
    b = select_exemplars(r, rng=unit_rng(5, "conv2", "pca", "3"))
    c = select_exemplars(r, rng=unit_rng(6, "conv2", "pca", "3"))
    assert a.to_dict() == b.to_dict()
    assert a.queries_max.tolist() != c.queries_max.tolist()
    np.testing.assert_array_equal(a.references_max, c.references_max)


def test_small_band_truncates_pairs():
    r = np.arange(40.0)
    ex = select_exemplars(r, n_references=9, percentile=30, n_queries=20)
    assert len(ex.queries_max) == len(ex.queries_min) == 3  # band of 12 minus 9 references


def test_too_few_images():
    with pytest.raises(ValueError, match="too few"):
        select_exemplars(np.arange(10.0))


def test_unit_selection():
    evr = np.array([0.1, 0.5, 0.0, 0.3, 0.1])
    std = np.array([1, 1, 0, 1, 1])
    assert select_units(evr, 3, "top_variance", responses_std=std).tolist() == [1, 3, 0]
    a = select_units(evr, 3, "random", seed=1, responses_std=std, key=("l", "b"))
    assert a.tolist() == select_units(evr, 3, "random", seed=1, responses_std=std, key=("l", "b")).tolist()
    assert 2 not in a and len(a) == 3
    assert len(select_units(evr, 10, "random", responses_std=std)) == 4


def test_queries_come_most_extreme_first():
    r = np.random.default_rng(5).normal(size=500)
    ex = select_exemplars(r, n_references=9, percentile=10, n_queries=20, strip_length=9, rng=0)
    assert np.all(np.diff(r[ex.queries_max]) <= 0)
    assert np.all(np.diff(r[ex.queries_min]) >= 0)
