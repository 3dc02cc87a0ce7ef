"""Which units of a basis a study shows: a seeded random draw, the top explained variance, the most
influential on a class (:mod:`stimuli.measures.influence`), or by a per-unit score such as the machine
observer's (:mod:`stimuli.measures.mis`): the highest, the lowest, or evenly spread over the range."""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field

import numpy as np

from .sections import Section, cli, need

SCORE_ORDERS = ("top", "bottom", "spread")
# by the machine observer's score (stimuli.measures.mis): the most, the least, or evenly spaced over the range
MIS_SELECTIONS = ("mis_top", "mis_bottom", "mis_spread")
UNIT_SELECTIONS = ("random", "top_variance", "influence", *MIS_SELECTIONS)


def unit_rng(seed: int, *names: str) -> np.random.Generator:
    """A generator derived from the job's seed and names (layer, basis, unit), stable across runs."""
    keys = [zlib.crc32(n.encode("utf-8")) for n in names]
    return np.random.default_rng(np.random.SeedSequence([int(seed), *keys]))


def select_units(explained_variance_ratio, n_units: int, method: str = "top_variance", seed: int = 0,
                 responses_std=None, key: tuple[str, ...] = (), influence=None) -> np.ndarray:
    """Indices of ``n_units`` units.

    Units whose responses are constant over the image set (``responses_std == 0``: a dead channel or
    an unused atom) have no most or least activating images and are never chosen.
    ``top_variance`` returns units in decreasing explained variance; ``random`` returns a seeded draw
    sorted by index; ``influence`` returns units in decreasing |influence| (the ``influence`` array,
    one value per unit, is then required). Asking for more units than there are usable ones returns
    all usable ones.
    """
    evr = np.asarray(explained_variance_ratio, dtype=np.float64)
    if method not in UNIT_SELECTIONS:
        raise ValueError(f"unknown unit selection {method!r}; choose from {', '.join(UNIT_SELECTIONS)}")
    if method in MIS_SELECTIONS:
        raise ValueError(f"unit selection {method!r} needs the candidates' scores: choose the candidates with "
                         "'top_variance', then use select_by_score")
    if n_units < 1:
        raise ValueError("n_units must be at least 1")
    usable = np.ones(len(evr), dtype=bool)
    if responses_std is not None:
        usable &= np.asarray(responses_std) > 0
    candidates = np.flatnonzero(usable)
    n = min(n_units, len(candidates))
    if method == "top_variance":
        order = candidates[np.argsort(-evr[candidates], kind="stable")]
        return order[:n]
    if method == "influence":
        if influence is None:
            raise ValueError("unit selection 'influence' needs the units' influence")
        chi = np.abs(np.asarray(influence, dtype=np.float64))
        if chi.shape != evr.shape:
            raise ValueError(f"influence has {chi.size} values for {evr.size} units")
        return candidates[np.argsort(-chi[candidates], kind="stable")][:n]
    rng = unit_rng(seed, "selection", *key)
    return np.sort(rng.choice(candidates, size=n, replace=False))


def select_by_score(scores, n: int, how: str = "top") -> np.ndarray:
    """Positions in ``scores`` of ``n`` items, ranked.

    ``top``: the highest scores, highest first; ``bottom``: the lowest, lowest first; ``spread``: for
    ``n`` targets evenly spaced from the highest score to the lowest (one target in the middle of the
    range when ``n`` is 1), the nearest item not yet taken, target by target from the highest, so that
    with ``n`` >= 2 the highest and the lowest are always among them; returned highest first (a study
    then spans easy to hard units). Equal scores (and, for ``spread``, equal distances to a target) go
    by position. NaN scores (a unit without a single task) are never chosen; asking for more items than
    have a score returns all of them, ranked as ``how`` says.
    """
    s = np.asarray(scores, dtype=np.float64).ravel()
    if how not in SCORE_ORDERS:
        raise ValueError(f"unknown score order {how!r}; choose from {', '.join(SCORE_ORDERS)}")
    if not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"n must be a positive integer, not {n!r}")
    scored = np.flatnonzero(np.isfinite(s))
    if how == "bottom":
        return scored[np.argsort(s[scored], kind="stable")][:n].astype(np.int64)
    descending = scored[np.argsort(-s[scored], kind="stable")].astype(np.int64)
    if how == "top" or len(scored) <= n:
        return descending[:n]
    hi, lo = s[descending[0]], s[descending[-1]]
    targets = np.linspace(hi, lo, n) if n > 1 else np.array([(hi + lo) / 2])
    free = np.zeros(len(s), dtype=bool)
    free[scored] = True
    picked = []
    for t in targets:
        open_ = np.flatnonzero(free)
        # argmin takes the first of equal distances: the lowest position
        pick = open_[np.argmin(np.abs(s[open_] - t))]
        free[pick] = False
        picked.append(pick)
    picked = np.array(picked, dtype=np.int64)
    return picked[np.lexsort((picked, -s[picked]))]


@dataclass(frozen=True)
class SelectionSettings(Section):
    """A job's unit choice: ``n_units`` units per basis (an int for every basis or a mapping
    ``basis -> int``) by ``method`` (one of :data:`UNIT_SELECTIONS`)."""

    FLAT = {"method": "unit_selection"}

    method: str = field(default="top_variance", metadata=cli(
        str, "--unit-selection", "--selection", choices=UNIT_SELECTIONS,
        help="which units: mis_top / mis_bottom / mis_spread rank them by the machine score "
             "(need --mis-layer); influence needs influence_class in a config file"))
    n_units: int | dict[str, int] = field(default=6, metadata=cli(int, "--units", help="units per basis"))

    def validate(self) -> None:
        need(self.method in UNIT_SELECTIONS,
             f"unit_selection must be one of {', '.join(UNIT_SELECTIONS)}, not {self.method!r}")

    def units_for(self, basis: str) -> int:
        if isinstance(self.n_units, dict):
            return int(self.n_units[basis])
        return int(self.n_units)
