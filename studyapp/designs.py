"""Within-participant and mixed designs: counterbalanced orders, block schedules and unit allocation.

Pure functions over plain data (no database), so every property a design promises can be tested alone.
A condition is a mapping of its factor values (`FACTORS`) and its `name`; conditions keep the order the
study lists them in, which is the order levels are first met in.

- **Orders.** A Williams design (Williams 1949; Bradley 1958): a Latin square in which every condition
  comes first once and every ordered pair of conditions is adjacent exactly once; for an odd number of
  conditions the square and its mirror image together (2n rows) balance first-order carry-over.
  `permutations` gives all n! orders (for few conditions); `none` one order for everybody.
- **Blocks.** Conditions that share the values of `group_by` form a group whose blocks stay together
  (Borowski et al. 2021: a reference set, i.e. `n_references` and `min_references`); the groups are
  counterbalanced. Inside a group, the levels of `alternate` take turns block by block (natural,
  synthetic, natural, synthetic), and which level opens is counterbalanced too (cyclic rotations of the
  levels). With neither, each condition is a group of its own, its blocks together. A study's order
  index runs over group orders × alternation rotations × between-participant groups.
- **Units.** `all`: each condition shows all its units. `disjoint`: a condition's units, by their place in
  the condition's list, are dealt into as many parts as there are conditions, and condition c shows part
  (c + r) mod C, where r is the participant's rotation (its slot number counted over all orders of its
  group). Participants 0..N-1 take rotations 0..N-1 mod C, so every unit × condition cell gets within
  ±1 of every other once the orders are full, and no participant sees a unit in two conditions when the
  conditions share their units.
"""
from dataclasses import dataclass
from itertools import permutations as _all_permutations

FACTORS = ("reference_type", "n_references", "min_references", "query_band", "basis", "layer", "paradigm")
COUNTERBALANCING = ("williams", "permutations", "none")
#: more orders than this are refused for `permutations` (7! = 5040 slots could never fill)
MAX_PERMUTATION_ORDERS = 720


class DesignError(ValueError):
    """A design that cannot be satisfied; the message names the setting."""


def williams(n):
    """Rows of a Williams design for `n` treatments: n rows for even n, 2n for odd n.

    The first row interleaves 0, 1, n-1, 2, n-2, …; row i adds i modulo n. Its successive differences
    are all distinct modulo n for even n, which makes every ordered pair adjacent exactly once; for odd
    n the mirrored rows supply the pairs the square misses."""
    if n < 1:
        raise DesignError("a Williams design needs at least one condition")
    first, low, high = [0], 1, n - 1
    while len(first) < n:
        first.append(low)
        low += 1
        if len(first) < n:
            first.append(high)
            high -= 1
    rows = [[(value + i) % n for value in first] for i in range(n)]
    if n % 2:
        rows += [list(reversed(row)) for row in rows]
    return rows


def counterbalanced(n, method):
    """The orders of `n` items under `method` (williams, permutations, none)."""
    if method == "williams":
        return williams(n)
    if method == "permutations":
        if _factorial(n) > MAX_PERMUTATION_ORDERS:
            raise DesignError(f"counterbalancing: all orders of {n} block groups are {_factorial(n)}, more than "
                              f"{MAX_PERMUTATION_ORDERS}; use williams")
        return [list(p) for p in _all_permutations(range(n))]
    if method == "none":
        return [list(range(n))]
    raise DesignError(f"counterbalancing: unknown method {method!r}; expected one of {COUNTERBALANCING}")


def _factorial(n):
    result = 1
    for k in range(2, n + 1):
        result *= k
    return result


def _check_factors(names, setting):
    unknown = [f for f in names if f not in FACTORS]
    if unknown:
        raise DesignError(f"{setting}: unknown factor {', '.join(map(repr, unknown))}; factors are {', '.join(FACTORS)}")


def _distinct(values):
    seen = []
    for value in values:
        if value not in seen:
            seen.append(value)
    return seen


def between_groups(conditions, between_factors):
    """Lists of condition indices, one per combination of the between-participant factors' levels."""
    _check_factors(between_factors, "between_factors")
    keys = [tuple(c[f] for f in between_factors) for c in conditions]
    return [[i for i, k in enumerate(keys) if k == key] for key in _distinct(keys)]


@dataclass(frozen=True)
class Order:
    """One counterbalancing order: the between-participant group it belongs to and its block sequence
    (condition indices into the study's list, one entry per block)."""
    index: int
    group: int
    blocks: tuple


@dataclass(frozen=True)
class Design:
    design: str = "within"  # within | mixed
    between_factors: tuple = ()
    block_group_by: tuple = ()
    block_alternate: str = ""
    counterbalancing: str = "williams"
    blocks_per_condition: int = 1


def _group_sequences(conditions, members, design):
    """Every block sequence (condition indices) of one between-participant group."""
    _check_factors(design.block_group_by, "block_group_by")
    if design.block_alternate:
        _check_factors([design.block_alternate], "block_alternate")
    if design.block_group_by or design.block_alternate:
        keys = [tuple(conditions[i][f] for f in design.block_group_by) for i in members]
        groups = [[m for m, k in zip(members, keys) if k == key] for key in _distinct(keys)]
    else:
        groups = [[m] for m in members]
    alternate = design.block_alternate
    levels = _distinct(conditions[i][alternate] for i in members) if alternate else [None]
    rotations = ([levels[r:] + levels[:r] for r in range(len(levels))]
                 if design.counterbalancing != "none" else [levels])
    sequences = []
    for group_order in counterbalanced(len(groups), design.counterbalancing):
        for rotation in rotations:
            blocks = []
            for g in group_order:
                once = _alternated(conditions, groups[g], alternate, rotation)
                blocks.extend(once * design.blocks_per_condition)
            sequences.append(tuple(blocks))
    return sequences


def _alternated(conditions, group, alternate, levels):
    """The group's conditions once each, the levels of `alternate` taking turns in the order `levels`."""
    if not alternate:
        return list(group)
    buckets = [[i for i in group if conditions[i][alternate] == level] for level in levels]
    out = []
    while any(buckets):
        for bucket in buckets:
            if bucket:
                out.append(bucket.pop(0))
    return out


def study_orders(conditions, design):
    """Every order of the study, indexed from 0: the orders of the first between-participant group, then
    those of the next."""
    if not conditions:
        raise DesignError("the study has no conditions")
    if design.blocks_per_condition < 1:
        raise DesignError("blocks_per_condition must be at least 1")
    factors = tuple(design.between_factors) if design.design == "mixed" else ()
    if design.design == "mixed" and not factors:
        raise DesignError("between_factors: a mixed design names at least one factor that varies between participants")
    orders = []
    for g, members in enumerate(between_groups(conditions, factors)):
        for blocks in _group_sequences(conditions, members, design):
            orders.append(Order(index=len(orders), group=g, blocks=blocks))
    return orders


def quotas(orders, participants_per_group):
    """Participants per order: each between-participant group's participants spread over its orders,
    the first orders taking one more where they do not divide evenly."""
    by_group = {}
    for order in orders:
        by_group.setdefault(order.group, []).append(order.index)
    out = [0] * len(orders)
    for indices in by_group.values():
        base, extra = divmod(participants_per_group, len(indices))
        for rank, index in enumerate(indices):
            out[index] = base + (1 if rank < extra else 0)
    return out


def rotation(orders, order_quotas, order_index, slot):
    """The participant's slot number counted over every order of its between-participant group: the
    rotation of a disjoint unit allocation."""
    group = orders[order_index].group
    before = sum(order_quotas[o.index] for o in orders if o.group == group and o.index < order_index)
    return before + slot


def block_sizes(n_trials, blocks, trials_per_block=0):
    """Main trials (catch trials included) of each of a condition's `blocks` blocks: `trials_per_block`
    each, or, when that is 0, `n_trials` split as evenly as possible."""
    if trials_per_block:
        return [trials_per_block] * blocks
    base, extra = divmod(n_trials, blocks)
    return [base + (1 if b < extra else 0) for b in range(blocks)]


def disjoint_parts(n_units, n_conditions, rotation_index):
    """For each of `n_conditions` conditions (in their order within the group), the positions of the
    units it shows: units dealt into n_conditions parts, condition c taking part (c + rotation) mod C."""
    if n_units < n_conditions:
        raise DesignError(f"unit_allocation disjoint: {n_units} units cannot be split over {n_conditions} "
                          "conditions; use fewer conditions, more units, or unit_allocation all")
    parts = [list(range(k, n_units, n_conditions)) for k in range(n_conditions)]
    return [parts[(c + rotation_index) % n_conditions] for c in range(n_conditions)]
