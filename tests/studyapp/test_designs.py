"""The design's pure functions: Williams squares, block schedules with alternation, quotas, and the
disjoint unit allocation (studyapp.designs)."""
from collections import Counter
from itertools import product

import pytest

from studyapp import designs
from studyapp.designs import Design, DesignError


@pytest.mark.parametrize("n", [2, 4, 6, 8])
def test_williams_even_each_first_once_and_each_ordered_pair_adjacent_once(n):
    rows = designs.williams(n)
    assert len(rows) == n
    assert all(sorted(row) == list(range(n)) for row in rows)
    assert sorted(row[0] for row in rows) == list(range(n))
    # a Latin square: each position holds every condition once
    assert all(sorted(row[k] for row in rows) == list(range(n)) for k in range(n))
    pairs = Counter((row[k], row[k + 1]) for row in rows for k in range(n - 1))
    assert set(pairs) == {(a, b) for a in range(n) for b in range(n) if a != b}
    assert set(pairs.values()) == {1}


@pytest.mark.parametrize("n", [3, 5, 7])
def test_williams_odd_uses_the_mirrored_square_and_balances_pairs(n):
    rows = designs.williams(n)
    assert len(rows) == 2 * n
    assert Counter(row[0] for row in rows) == {c: 2 for c in range(n)}
    pairs = Counter((row[k], row[k + 1]) for row in rows for k in range(n - 1))
    assert set(pairs) == {(a, b) for a in range(n) for b in range(n) if a != b}
    assert set(pairs.values()) == {2}


def test_permutations_and_none():
    assert len(designs.counterbalanced(3, "permutations")) == 6
    assert designs.counterbalanced(4, "none") == [[0, 1, 2, 3]]
    with pytest.raises(DesignError, match="counterbalancing"):
        designs.counterbalanced(7, "permutations")
    with pytest.raises(DesignError, match="unknown method"):
        designs.counterbalanced(3, "latin")


def borowski_conditions():
    """Borowski et al. (2021) Exp. II: natural / synthetic × Max-1, Max-9, Min-Max-1, Min-Max-9."""
    out = []
    for (n, with_min), ref in product([(1, False), (9, False), (1, True), (9, True)], ["natural", "synthetic"]):
        out.append({"name": f"{ref}-{'minmax' if with_min else 'max'}-{n}", "reference_type": ref,
                    "n_references": n, "min_references": with_min, "query_band": "90-100", "basis": "neuron",
                    "layer": "conv", "paradigm": "reference_2afc"})
    return out


BOROWSKI = Design(block_group_by=("n_references", "min_references"), block_alternate="reference_type",
                  blocks_per_condition=2)


def test_borowski_schedule_alternates_reference_type_inside_each_reference_set():
    conditions = borowski_conditions()
    orders = designs.study_orders(conditions, BOROWSKI)
    assert len(orders) == 4 * 2  # Williams over 4 reference sets × which type opens
    for order in orders:
        assert len(order.blocks) == 16 and Counter(order.blocks) == {i: 2 for i in range(8)}
        sets = [order.blocks[k:k + 4] for k in range(0, 16, 4)]
        for blocks in sets:
            keys = {(conditions[i]["n_references"], conditions[i]["min_references"]) for i in blocks}
            assert len(keys) == 1, "a reference set's blocks stay together"
            types = [conditions[i]["reference_type"] for i in blocks]
            assert all(a != b for a, b in zip(types, types[1:])), types
        first_sets = {(conditions[s[0]]["n_references"], conditions[s[0]]["min_references"]) for s in sets}
        assert len(first_sets) == 4
    # each reference set opens once per type rotation, and each type opens half the orders
    assert Counter(conditions[o.blocks[0]]["reference_type"] for o in orders) == {"natural": 4, "synthetic": 4}
    assert len({o.blocks for o in orders}) == 8


def test_ungrouped_design_keeps_a_conditions_blocks_together_in_williams_order():
    conditions = borowski_conditions()[:4]
    orders = designs.study_orders(conditions, Design(blocks_per_condition=2))
    assert len(orders) == 4
    assert orders[0].blocks == (0, 0, 1, 1, 3, 3, 2, 2)


def test_mixed_design_orders_per_between_group_and_quotas_exact():
    conditions = [dict(c, basis=basis, name=f"{basis}-{c['name']}")
                  for basis in ("neuron", "pca") for c in borowski_conditions()[:2]]
    design = Design(design="mixed", between_factors=("basis",))
    orders = designs.study_orders(conditions, design)
    assert [o.group for o in orders] == [0, 0, 1, 1]
    assert all({conditions[i]["basis"] for i in o.blocks} == {("neuron", "pca")[o.group]} for o in orders)
    assert designs.quotas(orders, 5) == [3, 2, 3, 2]
    with pytest.raises(DesignError, match="between_factors"):
        designs.study_orders(conditions, Design(design="mixed"))
    with pytest.raises(DesignError, match="unknown factor 'colour'"):
        designs.study_orders(conditions, Design(design="mixed", between_factors=("colour",)))


def test_block_sizes():
    assert designs.block_sizes(20, 2) == [10, 10]
    assert designs.block_sizes(7, 2) == [4, 3]
    assert designs.block_sizes(99, 3, trials_per_block=10) == [10, 10, 10]


def test_disjoint_allocation_no_unit_twice_and_cells_within_one():
    n_units, n_conditions, n_participants = 10, 3, 14
    orders = designs.study_orders([{"name": str(c), **{f: c if f == "reference_type" else 0
                                                       for f in designs.FACTORS}} for c in range(n_conditions)],
                                  Design())
    quota = designs.quotas(orders, n_participants)
    cells = Counter()
    for order in orders:
        for slot in range(quota[order.index]):
            parts = designs.disjoint_parts(n_units, n_conditions,
                                           designs.rotation(orders, quota, order.index, slot))
            seen = [u for part in parts for u in part]
            assert len(seen) == len(set(seen)) == n_units
            for condition, part in enumerate(parts):
                cells.update((u, condition) for u in part)
    assert len(cells) == n_units * n_conditions
    assert max(cells.values()) - min(cells.values()) <= 1
    with pytest.raises(DesignError, match="cannot be split"):
        designs.disjoint_parts(2, 3, 0)
