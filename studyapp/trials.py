"""Building a participant's trial list from a condition's units and a seed.

Pure functions over plain data so the plan can be tested without a database: a unit is a mapping with
its id and its exemplar image lists (as the stimulus artifact orders them), and a trial is a
`TrialSpec`. The layout follows Borowski et al. (2021): 9 minimally and 9 maximally activating
references, two queries (one from the top activation band, one from the bottom), the correct side drawn
at random; a catch trial's queries are reference images themselves, so answering it needs attention only.
The `overlay` reference type shows the most activating references as attribution heat maps (where in
the image the unit responds), so a study can measure whether the overlay helps people. `synthetic` shows
feature visualizations as references while queries stay natural images (Borowski et al.'s "optimized"
condition); `mixed` shows the feature visualizations and the natural references side by side.

The occlusion 2AFC (Zimmermann et al., 2021) shows the references as the reference 2AFC does and, in the
centre, one query image twice, each copy with a square occluder; the correct side is the occlusion that
changes the unit's score more, as the stimulus job computed it on the very images shown. Practice takes
each unit's pairs of largest margin (the easiest); catch trials pit an occluder over a blank area against
one over the unit's strongest region (`occlusion_catch`, stimuli.measures.occlusion).
"""
import math
from collections.abc import Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace

import numpy as np

REFERENCE_TYPES = ("natural", "max_only", "none", "overlay", "synthetic", "mixed")
SYNTHETIC_TYPES = ("synthetic", "mixed")


PARADIGMS = ("reference_2afc", "ordered_strip", "occlusion_2afc")


@dataclass(frozen=True)
class UnitExemplars:
    unit_id: int
    references_max: list
    references_min: list
    queries_max: list
    queries_min: list
    strips: list = field(default_factory=list)  # disjoint ordered strips, each lowest activation first
    overlays_max: list = field(default_factory=list)  # aligned with references_max
    synthetic_max: list = field(default_factory=list)  # feature visualizations, strongest first
    synthetic_min: list = field(default_factory=list)
    key: str = ""  # layer:basis:index, how messages name the unit
    # each query candidate's activation percentile (stimuli.exemplars), aligned with queries_max / queries_min;
    # empty for an artifact written before they were recorded
    queries_max_percentile: list = field(default_factory=list)
    queries_min_percentile: list = field(default_factory=list)
    # occlusion pairs ({"a", "b", "correct", "delta_a", "delta_b"}, published names) and catch pairs
    occlusion: list = field(default_factory=list)
    occlusion_catch: list = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.key or f"#{self.unit_id}"


@dataclass
class TrialSpec:
    block: str  # practice | main
    kind: str  # practice | main | catch
    unit_id: int
    query_a: str
    query_b: str
    correct_query: str  # a | b
    references_max: list = field(default_factory=list)
    references_min: list = field(default_factory=list)
    attempt: int | None = None
    strip_a: list = field(default_factory=list)
    strip_b: list = field(default_factory=list)
    condition: object = None  # the key of the condition the trial belongs to (a design's block list)
    block_index: int | None = None  # the block's place in the participant's schedule
    # occlusion 2AFC: the unit's score change under the occluder shown as query a and as query b
    occlusion_delta_a: float | None = None
    occlusion_delta_b: float | None = None


def _shown_references(unit: UnitExemplars, reference_type: str) -> tuple[list[str], list[str]]:
    if reference_type == "natural":
        return list(unit.references_max), list(unit.references_min)
    if reference_type == "max_only":
        return list(unit.references_max), []
    if reference_type == "none":
        return [], []
    if reference_type == "overlay":
        if len(unit.overlays_max) != len(unit.references_max):
            raise ValueError(f"unit {unit.name} has no attribution overlay for each maximal reference")
        return list(unit.overlays_max), list(unit.references_min)
    if reference_type in ("synthetic", "mixed"):
        if not unit.synthetic_max or not unit.synthetic_min:
            raise ValueError(f"unit {unit.name} has no feature visualizations: run its stimulus job with "
                             "feature_vis")
        if reference_type == "synthetic":
            return list(unit.synthetic_max), list(unit.synthetic_min)
        return (list(unit.synthetic_max) + list(unit.references_max),
                list(unit.synthetic_min) + list(unit.references_min))
    raise ValueError(f"unknown reference type {reference_type!r}; expected one of {REFERENCE_TYPES}")


def in_query_band(unit, band):
    """The unit with only the query pairs of `band`, (low, high) percentiles of the maximal query: maximal
    candidates whose percentile lies in (low, high], minimal ones in the mirror [100 - high, 100 - low)
    (as stimuli.exemplars cuts its bands), paired again by position, most extreme first (practice takes
    the first pair). A unit without percentiles (an artifact written before they were recorded) comes back
    as it is: its candidates all come from its job's one band. `band` None: the unit as it is."""
    if band is None or not unit.queries_max_percentile:
        return unit
    low, high = float(band[0]), float(band[1])
    q_max = sorted(((p, q) for q, p in zip(unit.queries_max, unit.queries_max_percentile) if low < p <= high),
                   key=lambda pq: -pq[0])
    q_min = sorted(((p, q) for q, p in zip(unit.queries_min, unit.queries_min_percentile)
                    if 100.0 - high <= p < 100.0 - low), key=lambda pq: pq[0])
    k = min(len(q_max), len(q_min))
    return replace(unit, queries_max=[q for _, q in q_max[:k]], queries_min=[q for _, q in q_min[:k]],
                   queries_max_percentile=[p for p, _ in q_max[:k]], queries_min_percentile=[p for p, _ in q_min[:k]])


def main_pairs_per_unit(n_main, catch_ratio, n_units):
    """The query pairs (or strips) each unit needs so that no participant sees one twice: the main trials
    that are not catch trials, spread evenly over `n_units` units."""
    main = n_main - int(round(n_main * catch_ratio))
    return math.ceil(main / n_units) if n_units else 0


def _trial(rng: np.random.Generator, unit: UnitExemplars, block: str, kind: str, query_max: str, query_min: str,
           reference_type: str, attempt: int | None = None) -> TrialSpec:
    refs_max, refs_min = _shown_references(unit, reference_type)
    if rng.random() < 0.5:
        query_a, query_b, correct = query_max, query_min, "a"
    else:
        query_a, query_b, correct = query_min, query_max, "b"
    return TrialSpec(
        block=block, kind=kind, unit_id=unit.unit_id, query_a=query_a, query_b=query_b,
        correct_query=correct, references_max=refs_max, references_min=refs_min, attempt=attempt,
    )


def _check_units(units: Sequence[UnitExemplars]) -> None:
    if not units:
        raise ValueError("the condition has no units; import a stimulus artifact for its layer and basis first")
    for unit in units:
        if not unit.queries_max or not unit.queries_min or len(unit.queries_max) != len(unit.queries_min):
            raise ValueError(f"unit {unit.name} needs paired, non-empty query lists")
        if not unit.references_max or not unit.references_min:
            raise ValueError(f"unit {unit.name} has no reference images")


def practice_trials(units: Sequence[UnitExemplars], n: int, reference_type: str, rng: np.random.Generator, attempt: int = 1
                    ) -> list[TrialSpec]:
    """Easy trials: the most extreme query pair of each unit (queries come most extreme first)."""
    _check_units(units)
    order = rng.permutation(len(units))
    trials = []
    for i in range(n):
        unit = units[order[i % len(units)]]
        trials.append(_trial(rng, unit, "practice", "practice", unit.queries_max[0], unit.queries_min[0],
                             reference_type, attempt=attempt))
    return trials


def _practice_pair_last(order: Iterable[int]) -> list[int]:
    """Practice shows each unit's first (most extreme) query pair with feedback, which tells the answer
    to that pair: main trials reach it only after every other pair of the unit."""
    return [int(i) for i in order if i != 0] + [0]


def main_trials(units: Sequence[UnitExemplars], n: int, catch_ratio: float, reference_type: str, rng: np.random.Generator
                ) -> list[TrialSpec]:
    """`n` main trials spread evenly over the units, about `catch_ratio` of them catch trials, shuffled.

    Each unit's query pairs are used without replacement until they run out, so a participant sees a
    pair twice only when the plan asks for more trials than the artifact holds."""
    _check_units(units)
    n_catch = int(round(n * catch_ratio))
    unit_order = np.concatenate([rng.permutation(len(units)) for _ in range(n // len(units) + 1)])[:n]
    pair_orders = {u.unit_id: _practice_pair_last(rng.permutation(len(u.queries_max))) for u in units}
    catch_slots = set(rng.choice(n, size=n_catch, replace=False).tolist()) if n_catch else set()
    trials = []
    for slot, unit_index in enumerate(unit_order):
        unit = units[unit_index]
        if slot in catch_slots:
            # Catch queries come from the references the participant sees; with no references shown
            # the maximal reference still has the highest activation, so the answer key stays valid.
            # with feature visualizations shown, a catch query is one of them (Borowski et al.)
            pool_max, pool_min = (_shown_references(unit, reference_type) if reference_type in SYNTHETIC_TYPES
                                  else (unit.references_max, unit.references_min))
            query_max = pool_max[int(rng.integers(len(pool_max)))]
            query_min = pool_min[int(rng.integers(len(pool_min)))]
            trials.append(_trial(rng, unit, "main", "catch", query_max, query_min, reference_type))
            continue
        pairs = pair_orders[unit.unit_id]
        if not pairs:
            pairs.extend(_practice_pair_last(rng.permutation(len(unit.queries_max))))
        pair = pairs.pop(0)
        trials.append(_trial(rng, unit, "main", "main", unit.queries_max[pair], unit.queries_min[pair],
                             reference_type))
    return trials


def _check_paradigm(paradigm: str) -> None:
    if paradigm not in PARADIGMS:
        raise ValueError(f"unknown paradigm {paradigm!r}; expected one of {PARADIGMS}")


def build_trial_list(units: Sequence[UnitExemplars], *, n_practice: int, n_main: int, catch_ratio: float, reference_type: str,
                     seed: int, paradigm: str = "reference_2afc") -> list[TrialSpec]:
    """The whole list a participant starts with: one practice attempt, then the main block."""
    _check_paradigm(paradigm)
    rng = np.random.default_rng(seed)
    if paradigm == "occlusion_2afc":
        practice = occlusion_practice_trials(units, n_practice, reference_type, rng, attempt=1) if n_practice else []
        return practice + occlusion_main_trials(units, n_main, catch_ratio, reference_type, rng)
    if paradigm == "ordered_strip":
        practice = strip_practice_trials(units, n_practice, rng, attempt=1) if n_practice else []
        return practice + strip_main_trials(units, n_main, catch_ratio, rng)
    practice = practice_trials(units, n_practice, reference_type, rng, attempt=1) if n_practice else []
    return practice + main_trials(units, n_main, catch_ratio, reference_type, rng)


def repeat_practice(units: Sequence[UnitExemplars], *, n_practice: int, reference_type: str, seed: int, attempt: int,
                    paradigm: str = "reference_2afc") -> list[TrialSpec]:
    """A fresh practice block for attempt `attempt`, drawn from its own stream of the participant's seed."""
    _check_paradigm(paradigm)
    rng = np.random.default_rng([seed, attempt])
    if paradigm == "occlusion_2afc":
        return occlusion_practice_trials(units, n_practice, reference_type, rng, attempt=attempt)
    if paradigm == "ordered_strip":
        return strip_practice_trials(units, n_practice, rng, attempt=attempt)
    return practice_trials(units, n_practice, reference_type, rng, attempt=attempt)


def _shuffled(rng: np.random.Generator, images: Sequence[str]) -> list[str]:
    """A permutation of the strip that is neither the ordered strip nor its reverse, so that the
    shuffled row never changes steadily in either direction."""
    n = len(images)
    if n < 3:
        raise ValueError("an ordered strip needs at least 3 images")
    while True:
        order = rng.permutation(n)
        if not (np.all(np.diff(order) > 0) or np.all(np.diff(order) < 0)):
            return [images[i] for i in order]


def _strip_trial(rng: np.random.Generator, unit: UnitExemplars, block: str, kind: str, ordered: Sequence[str],
                 attempt: int | None = None) -> TrialSpec:
    shuffled = _shuffled(rng, ordered)
    if rng.random() < 0.5:
        strip_a, strip_b, correct = ordered, shuffled, "a"
    else:
        strip_a, strip_b, correct = shuffled, ordered, "b"
    return TrialSpec(block=block, kind=kind, unit_id=unit.unit_id, query_a="", query_b="", correct_query=correct,
                     attempt=attempt, strip_a=list(strip_a), strip_b=list(strip_b))


def _easy_strip(unit: UnitExemplars) -> list[str]:
    """Least activating references then most activating ones: a strip whose change is unmistakable."""
    half = max(len(unit.strips[0]) // 2, 2)
    # references_min runs from the least activating up, references_max from the most down.
    return list(unit.references_min[:half]) + list(reversed(unit.references_max[:half]))


def _check_strips(units: Sequence[UnitExemplars]) -> None:
    if not units:
        raise ValueError("the condition has no units; import a stimulus artifact for its layer and basis first")
    for unit in units:
        if not unit.strips or any(len(strip) < 3 for strip in unit.strips):
            raise ValueError(f"unit {unit.name} has no ordered strip of at least 3 images in its artifact")


def strip_practice_trials(units: Sequence[UnitExemplars], n: int, rng: np.random.Generator, attempt: int = 1) -> list[TrialSpec]:
    _check_strips(units)
    order = rng.permutation(len(units))
    return [_strip_trial(rng, units[order[i % len(units)]], "practice", "practice",
                         _easy_strip(units[order[i % len(units)]]), attempt=attempt) for i in range(n)]


def strip_main_trials(units: Sequence[UnitExemplars], n: int, catch_ratio: float, rng: np.random.Generator) -> list[TrialSpec]:
    """The ordered-strip task of Dey et al. (2020): one of the unit's quantile strips against a shuffled
    copy. Catch trials use a strip of extreme references, whose order is obvious to an attentive participant.

    A unit's strips are disjoint and used without replacement: an ordered row shown twice would be
    recognisable as the row that did not change, which answers the trial without looking at the unit.
    Only a plan with more trials per unit than the artifact has strips shows a strip again."""
    _check_strips(units)
    n_catch = int(round(n * catch_ratio))
    unit_order = np.concatenate([rng.permutation(len(units)) for _ in range(n // len(units) + 1)])[:n]
    catch_slots = set(rng.choice(n, size=n_catch, replace=False).tolist()) if n_catch else set()
    unused = {u.unit_id: [] for u in units}
    trials = []
    for slot, unit_index in enumerate(unit_order):
        unit = units[unit_index]
        if slot in catch_slots:
            trials.append(_strip_trial(rng, unit, "main", "catch", _easy_strip(unit)))
            continue
        strips = unused[unit.unit_id]
        if not strips:
            strips.extend(int(i) for i in rng.permutation(len(unit.strips)))
        trials.append(_strip_trial(rng, unit, "main", "main", list(unit.strips[strips.pop()])))
    return trials


def _margin(pair):
    return abs(abs(pair["delta_a"]) - abs(pair["delta_b"]))


def _easiest_first(unit):
    """The unit's occlusion pairs by decreasing margin (ties by the artifact's order): practice takes the
    first, main trials reach them last."""
    return sorted(range(len(unit.occlusion)), key=lambda i: (-_margin(unit.occlusion[i]), i))


def _occlusion_trial(rng, unit, block, kind, pair, reference_type, attempt=None):
    refs_max, refs_min = _shown_references(unit, reference_type)
    a, b, delta_a, delta_b = pair["a"], pair["b"], float(pair["delta_a"]), float(pair["delta_b"])
    # the artifact drew a side per pair; each participant gets a fresh draw, so no pair always sits left
    if rng.random() < 0.5:
        a, b, delta_a, delta_b = b, a, delta_b, delta_a
    return TrialSpec(block=block, kind=kind, unit_id=unit.unit_id, query_a=a, query_b=b,
                     correct_query="a" if abs(delta_a) > abs(delta_b) else "b", references_max=refs_max,
                     references_min=refs_min, attempt=attempt, occlusion_delta_a=delta_a, occlusion_delta_b=delta_b)


def _check_occlusion(units, need_catch):
    if not units:
        raise ValueError("the condition has no units; import a stimulus artifact for its layer and basis first")
    for unit in units:
        if not unit.occlusion:
            raise ValueError(f"unit {unit.name} has no occlusion pairs: run its stimulus job with occlusion "
                             "pairs_per_unit (--occlusion-pairs)")
        if need_catch and not unit.occlusion_catch:
            raise ValueError(f"unit {unit.name} has no occlusion catch pair (a blank area against its strongest "
                             "region) in its artifact")


def occlusion_practice_trials(units, n, reference_type, rng, attempt=1):
    """Easy trials: each unit's pairs of largest margin, the units in turn."""
    _check_occlusion(units, need_catch=False)
    order = rng.permutation(len(units))
    trials = []
    for i in range(n):
        unit = units[order[i % len(units)]]
        easiest = _easiest_first(unit)
        pair = unit.occlusion[easiest[(i // len(units)) % len(easiest)]]
        trials.append(_occlusion_trial(rng, unit, "practice", "practice", pair, reference_type, attempt=attempt))
    return trials


def occlusion_main_trials(units, n, catch_ratio, reference_type, rng):
    """`n` main trials spread evenly over the units, about `catch_ratio` of them catch trials, shuffled.
    A unit's pairs are used without replacement, the easiest (which practice shows with feedback) last."""
    n_catch = int(round(n * catch_ratio))
    _check_occlusion(units, need_catch=n_catch > 0)
    unit_order = np.concatenate([rng.permutation(len(units)) for _ in range(n // len(units) + 1)])[:n]
    catch_slots = set(rng.choice(n, size=n_catch, replace=False).tolist()) if n_catch else set()

    def fresh(unit):
        # the easiest pair last; the others in a random order
        easiest = _easiest_first(unit)
        return [easiest[int(i)] for i in rng.permutation(np.arange(1, len(easiest)))] + easiest[:1]

    unused = {u.unit_id: [] for u in units}
    trials = []
    for slot, unit_index in enumerate(unit_order):
        unit = units[unit_index]
        if slot in catch_slots:
            pair = unit.occlusion_catch[int(rng.integers(len(unit.occlusion_catch)))]
            trials.append(_occlusion_trial(rng, unit, "main", "catch", pair, reference_type))
            continue
        pairs = unused[unit.unit_id]
        if not pairs:
            pairs.extend(fresh(unit))
        trials.append(_occlusion_trial(rng, unit, "main", "main", unit.occlusion[pairs.pop(0)], reference_type))
    return trials


def limit_references(unit: UnitExemplars, n_references: int) -> UnitExemplars:
    """The unit with at most `n_references` references per side (the strongest first, as the artifact
    orders them), so that trials and their catch queries use only what the condition shows."""
    n = n_references
    return replace(unit, references_max=list(unit.references_max[:n]), references_min=list(unit.references_min[:n]),
                   overlays_max=list(unit.overlays_max[:n]), synthetic_max=list(unit.synthetic_max[:n]),
                   synthetic_min=list(unit.synthetic_min[:n]))


def _without_min(specs: list[TrialSpec]) -> list[TrialSpec]:
    # The minimal references stay in the unit: the answer key (and a catch trial's minimal query) still
    # comes from them, as with the max_only reference type.
    for spec in specs:
        spec.references_min = []
    return specs


@dataclass(frozen=True)
class ConditionPlan:
    """What a block list needs of one condition: its units (already allocated to this participant) and
    its factors."""
    key: object
    units: list
    reference_type: str = "natural"
    paradigm: str = "reference_2afc"
    n_references: int = 9
    min_references: bool = True
    query_band: tuple | None = None  # (low, high): the candidates its queries come from (`in_query_band`)

    def shown_units(self) -> list[UnitExemplars]:
        return [limit_references(in_query_band(u, self.query_band), self.n_references) for u in self.units]


def _plan_main(plan: ConditionPlan, n: int, catch_ratio: float, rng: np.random.Generator) -> list[TrialSpec]:
    if plan.paradigm == "ordered_strip":
        return strip_main_trials(plan.units, n, catch_ratio, rng)
    if plan.paradigm == "occlusion_2afc":
        specs = occlusion_main_trials(plan.shown_units(), n, catch_ratio, plan.reference_type, rng)
        return specs if plan.min_references else _without_min(specs)
    specs = main_trials(plan.shown_units(), n, catch_ratio, plan.reference_type, rng)
    return specs if plan.min_references else _without_min(specs)


def plan_practice(plan: ConditionPlan, n_practice: int, rng: np.random.Generator, attempt: int = 1
                  ) -> list[TrialSpec]:
    if plan.paradigm == "ordered_strip":
        specs = strip_practice_trials(plan.units, n_practice, rng, attempt=attempt)
    elif plan.paradigm == "occlusion_2afc":
        specs = occlusion_practice_trials(plan.shown_units(), n_practice, plan.reference_type, rng, attempt=attempt)
        specs = specs if plan.min_references else _without_min(specs)
    else:
        specs = practice_trials(plan.shown_units(), n_practice, plan.reference_type, rng, attempt=attempt)
        specs = specs if plan.min_references else _without_min(specs)
    for spec in specs:
        spec.condition = plan.key
    return specs


def build_block_list(plans: Mapping[Hashable, ConditionPlan], schedule: Sequence[tuple[Hashable, int]], *,
                     practice: Hashable, n_practice: int, catch_ratio: float, seed: int) -> list[TrialSpec]:
    """A within-participant list: practice from the plan keyed `practice`, then one block per entry of
    `schedule` ((condition key, main trials) pairs, in the participant's order).

    Each condition's main trials are drawn in one go and dealt to its blocks in turn, so its query pairs
    are used without replacement across its blocks and its catch trials follow its catch ratio overall."""
    for plan in plans.values():
        _check_paradigm(plan.paradigm)
    rng = np.random.default_rng(seed)
    out = plan_practice(plans[practice], n_practice, rng) if n_practice else []
    totals = {}
    for key, n in schedule:
        totals[key] = totals.get(key, 0) + n
    pools = {key: _plan_main(plans[key], n, catch_ratio, rng) for key, n in totals.items()}
    for block_index, (key, n) in enumerate(schedule):
        block, pools[key] = pools[key][:n], pools[key][n:]
        for spec in block:
            spec.condition, spec.block_index = key, block_index
        out.extend(block)
    return out
