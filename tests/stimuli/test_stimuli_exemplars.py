import math

import numpy as np
import pytest

from stimuli.exemplars import band_size, min_images_for_strips, rank_percentiles, select_exemplars, strip_ranks
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
    ex = select_exemplars(r, n_references=9, percentile=30, n_queries=20, n_strips=1)
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


@pytest.mark.parametrize("n, length, n_strips", [(1797, 9, 4), (300, 9, 4), (42, 9, 4), (100, 5, 6),
                                                 (57, 12, 4), (24, 4, 4), (500, 2, 3)])
def test_strips_are_disjoint_rising_and_strip_zero_is_the_quantile_strip(n, length, n_strips):
    rng = np.random.default_rng(n)
    r = np.round(rng.normal(size=n), 1)  # ties: order by rank, ties by index
    ex = select_exemplars(r, n_references=min(9, (n - 2) // 2), percentile=10, n_queries=5,
                          strip_length=length, rng=0, n_strips=n_strips)
    asc = np.argsort(r, kind="stable")
    rank = np.empty(n, dtype=int)
    rank[asc] = np.arange(n)
    assert ex.strips.shape == (n_strips, length) and ex.strips.dtype == np.int64
    assert len(set(ex.strips.ravel().tolist())) == n_strips * length  # pairwise disjoint
    for strip in ex.strips:
        assert np.all(np.diff(rank[strip]) > 0) and np.all(np.diff(r[strip]) >= 0)
    # strip 0: the images at the evenly spaced quantile positions, as the single strip always was
    np.testing.assert_array_equal(ex.strips[0], asc[np.rint(np.linspace(0, n - 1, length)).astype(int)])
    np.testing.assert_array_equal(ex.strip, ex.strips[0])
    # strip k sits k-th nearest to each position: its distance never less than strip k-1's
    positions = np.linspace(0, n - 1, length)
    dist = np.abs(rank[ex.strips] - np.rint(positions))
    assert np.all(np.diff(dist, axis=0) >= 0) and np.all(dist[0] == 0)
    assert dist.max() <= n_strips - 1
    assert set(ex.strips.ravel()) <= set(ex.all_indices())


def test_strips_are_deterministic_and_independent_of_the_query_draw():
    r = np.random.default_rng(4).normal(size=400)
    a = select_exemplars(r, rng=1, n_strips=4)
    b = select_exemplars(r, rng=1, n_strips=4)
    c = select_exemplars(r, rng=2, n_strips=4)
    np.testing.assert_array_equal(a.strips, b.strips)
    np.testing.assert_array_equal(a.strips, c.strips)
    assert a.to_dict()["strips"] == a.strips.tolist() and len(a.to_dict()["strips"]) == 4


def test_a_small_image_set_is_refused_for_the_strips_with_the_numbers():
    need = min_images_for_strips(9, 4)
    r = np.random.default_rng(0).normal(size=need - 1)
    with pytest.raises(ValueError, match=rf"^{need - 1} images are too few for 4 disjoint strips of 9 .*"
                                         rf"at least {need} images"):
        select_exemplars(r, n_strips=4)
    assert select_exemplars(np.random.default_rng(0).normal(size=need), n_strips=4).strips.shape == (4, 9)
    assert select_exemplars(r, n_strips=1).strips.shape == (1, 9)


@pytest.mark.parametrize("length, n_strips", [(2, 1), (9, 1), (9, 4), (5, 6), (12, 3), (4, 4)])
def test_min_images_for_strips_is_a_threshold(length, n_strips):
    need = min_images_for_strips(length, n_strips)
    assert need >= length * n_strips
    with pytest.raises(ValueError, match="too few"):
        strip_ranks(need - 1, length, n_strips)
    for n in range(need, need + 400):
        strip_ranks(n, length, n_strips)


# --- query bands: each candidate's percentile, and candidates for every band ------------------------------

def _percentiles_by_counting(r):
    """Each image's percentile as a maximal and as a minimal candidate, counted from the scores directly:
    100·(n − images ranked above it)/n and 100·(images ranked below it)/n, ties ranked by image index
    (as the references are: the lower index counts as the more extreme on either side)."""
    n = len(r)
    index = np.arange(n)
    above = np.array([np.sum((r > r[i]) | ((r == r[i]) & (index < i))) for i in range(n)])
    below = np.array([np.sum((r < r[i]) | ((r == r[i]) & (index < i))) for i in range(n)])
    return 100.0 * (n - above) / n, 100.0 * below / n


@pytest.mark.parametrize("seed, digits", [(0, 6), (1, 1)])  # distinct scores, and many ties
def test_candidates_carry_their_percentile_and_each_band_gets_its_own(seed, digits):
    r = np.round(np.random.default_rng(seed).normal(size=1003), digits)
    bands = [[90, 100], [80, 90], [85, 95]]
    ex = select_exemplars(r, n_references=9, n_queries=12, rng=seed, bands=bands)
    p_max, p_min = _percentiles_by_counting(r)
    np.testing.assert_array_equal(ex.queries_max_percentile, p_max[ex.queries_max])
    np.testing.assert_array_equal(ex.queries_min_percentile, p_min[ex.queries_min])
    # band by band, 12 pairs each, the maximal candidate in (low, high], the minimal in its mirror
    assert len(ex.queries_max) == len(ex.queries_min) == 3 * 12
    for b, (low, high) in enumerate(bands):
        q_max, q_min = ex.queries_max_percentile[12 * b:12 * (b + 1)], ex.queries_min_percentile[12 * b:12 * (b + 1)]
        assert np.all((q_max > low) & (q_max <= high)), (low, high, q_max)
        assert np.all((q_min >= 100 - high) & (q_min < 100 - low)), (low, high, q_min)
        # most extreme first inside a band, for the practice trials
        assert np.all(np.diff(r[ex.queries_max[12 * b:12 * (b + 1)]]) <= 0)
        assert np.all(np.diff(r[ex.queries_min[12 * b:12 * (b + 1)]]) >= 0)
    shown = np.concatenate([ex.references_max, ex.references_min, ex.queries_max, ex.queries_min])
    assert len(set(shown.tolist())) == len(shown)


@pytest.mark.parametrize("n", [40, 41, 97, 100, 1797])
@pytest.mark.parametrize("percentile", [5, 10, 12.5, 33.3, 50])
def test_the_top_band_holds_the_ceil_of_its_share_of_images(n, percentile):
    p_max, p_min = rank_percentiles(np.random.default_rng(n).normal(size=n))
    m = math.ceil(n * percentile / 100)
    assert np.sum(p_max > 100 - percentile) == m and np.sum(p_min < percentile) == m


@pytest.mark.parametrize("seed", [0, 1])
def test_the_single_band_is_the_query_percentile_band(seed):
    r = np.round(np.random.default_rng(seed).normal(size=500), 1)
    by_percentile = select_exemplars(r, percentile=15, n_queries=20, rng=seed)
    by_band = select_exemplars(r, percentile=15, n_queries=20, rng=seed, bands=[[85, 100]])
    assert by_percentile.to_dict() == by_band.to_dict()
    assert np.all(by_percentile.queries_max_percentile > 85) and np.all(by_percentile.queries_min_percentile < 15)


def test_a_band_with_fewer_images_than_queries_gets_what_it_has():
    r = np.arange(200.0)
    ex = select_exemplars(r, n_references=9, n_queries=20, bands=[[90, 100], [50, 51]])
    # 90-100: 20 images minus 9 references; 50-51: 1 % of 200, the 2 images just above the median
    assert len(ex.queries_max) == len(ex.queries_min) == 11 + 2
    assert ex.queries_max.tolist()[-2:] == [101, 100] and ex.queries_max_percentile.tolist()[-2:] == [51.0, 50.5]
    assert ex.queries_min.tolist()[-2:] == [98, 99] and ex.queries_min_percentile.tolist()[-2:] == [49.0, 49.5]
