"""Exemplars of one unit from its responses over the image set: pure functions on index arrays.

References are the ``n_references`` most (descending) and least (ascending) activating images;
queries are drawn from the top and bottom ``percentile`` bands by rank, never among the references,
and paired by position; the strips show images at evenly spaced activation quantiles. Ties are broken
by image index, so the result depends only on the responses and the seed.

Query bands. A job may render query candidates for several bands (IMI's harder conditions draw the
maximal query from lower percentiles, e.g. 85-95): a band ``(low, high)`` of the upper half and its mirror
``(100 − high, 100 − low)`` at the bottom, each getting up to ``n_queries`` candidates not already taken by
a reference or an earlier band. Each candidate carries its activation percentile among the ``n`` images,
counted from its own end as its references are (ties by image index): a maximal candidate's is
``100·(n − d)/n``, ``d`` its place in the descending order (0 = most activating), the share of images not
ranked above it, and lies in ``(low, high]``; a minimal candidate's is ``100·a/n``, ``a`` its place in the
ascending order, the share ranked below it, and lies in ``[100 − high, 100 − low)``. Counted so, the top
band ``(100 − p, 100]`` holds exactly the ``ceil(n·p/100)`` most activating images (and the bottom band
as many least activating ones), which is how a single ``percentile`` band has always been cut; a study
selects candidates by these numbers alone (docs/contracts.md, section 1).

Strips (Dey et al., 2020, ordered vs shuffled): one strip shown in every trial of a unit can be
recognised as "the ordered row seen before" while its shuffled partner changes, so a unit gets
``n_strips`` pairwise disjoint strips. Strip 0 takes, at each of ``strip_length`` evenly spaced rank
positions, the image nearest the position; strip ``k`` the ``k``-th nearest distinct rank. The ``n_strips``
ranks around one position never reach those around the next, so every strip still rises strictly in
rank (activation, ties by index) from left to right.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import numpy as np

from .sections import Section, cli, is_int, is_number, need


@dataclass
class Exemplars:
    references_max: np.ndarray
    references_min: np.ndarray
    queries_max: np.ndarray
    queries_min: np.ndarray
    strip: np.ndarray
    # n_strips x strip_length, row 0 equal to ``strip`` (kept for readers of a single strip)
    strips: np.ndarray
    band_max_threshold: float
    band_min_threshold: float
    # each query candidate's activation percentile (module docstring), aligned with queries_max / queries_min
    queries_max_percentile: np.ndarray = field(default_factory=lambda: np.empty(0))
    queries_min_percentile: np.ndarray = field(default_factory=lambda: np.empty(0))

    def all_indices(self) -> np.ndarray:
        return np.unique(np.concatenate([self.references_max, self.references_min, self.queries_max,
                                         self.queries_min, self.strips.ravel()]))

    def to_dict(self) -> dict:
        return {k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in asdict(self).items()}


def rank_ascending(responses: np.ndarray) -> np.ndarray:
    """Image indices from the least to the most activating; equal responses in index order."""
    r = np.asarray(responses, dtype=np.float64)
    if r.ndim != 1:
        raise ValueError("responses must be a vector, one value per image")
    return np.argsort(r, kind="stable")


def rank_descending(responses: np.ndarray) -> np.ndarray:
    """Image indices from the most to the least activating; equal responses in index order."""
    return np.argsort(-np.asarray(responses, dtype=np.float64), kind="stable")


def band_size(n_images: int, percentile: float) -> int:
    return max(1, math.ceil(n_images * percentile / 100.0))


def check_query_bands(bands) -> list[tuple[float, float]]:
    """``bands`` (a list of ``[low, high]`` percentile pairs of the maximal query) as tuples, or a
    ValueError saying what is wrong. A band lies in the upper half (50 <= low < high <= 100): its mirror
    at the bottom is the minimal query's, and the two must not meet."""
    if not isinstance(bands, (list, tuple)) or not bands:
        raise ValueError(f"query_bands must be a non-empty list of [low, high] percentile pairs, not {bands!r}")
    out = []
    for band in bands:
        if not (isinstance(band, (list, tuple)) and len(band) == 2
                and all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in band)):
            raise ValueError(f"a query band is a pair [low, high] of percentiles, not {band!r}")
        low, high = float(band[0]), float(band[1])
        if not 50 <= low < high <= 100:
            raise ValueError(f"query band [{low:g}, {high:g}] must have 50 <= low < high <= 100: it is the maximal "
                             f"query's band, the minimal query's being its mirror [{100 - high:g}, {100 - low:g}]")
        if (low, high) in out:
            raise ValueError(f"query band [{low:g}, {high:g}] is listed twice")
        out.append((low, high))
    return out


def query_bands(percentile: float, bands=None) -> list[tuple[float, float]]:
    """The bands a job renders query candidates for: ``bands`` when given (checked), else the single top
    ``percentile`` band ``(100 − percentile, 100)``. The first is the job's own band."""
    return check_query_bands(bands) if bands is not None else [(100.0 - float(percentile), 100.0)]


def _places(order: np.ndarray) -> np.ndarray:
    place = np.empty(len(order), dtype=np.int64)
    place[order] = np.arange(len(order))
    return place


def rank_percentiles(responses: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per image, its activation percentile as a maximal query candidate (``100·(n − d)/n``, ``d`` its
    place in :func:`rank_descending`) and as a minimal one (``100·a/n``, ``a`` its place in
    :func:`rank_ascending`); see the module docstring."""
    n = len(np.asarray(responses))
    return (100.0 * (n - _places(rank_descending(responses))) / n,
            100.0 * _places(rank_ascending(responses)) / n)


def strip_ranks(n_images: int, strip_length: int, n_strips: int) -> np.ndarray:
    """``n_strips x strip_length`` ascending ranks (0 = least activating): column ``j`` holds the
    ``n_strips`` ranks nearest to position ``j·(n−1)/(strip_length−1)``, nearest first (distance to the
    rounded position, then to the exact one, then the lower rank). Raises ValueError when the columns
    overlap, i.e. the strips could not be disjoint and rising (:func:`min_images_for_strips`)."""
    if strip_length < 2 or n_strips < 1:
        raise ValueError(f"strips need strip_length >= 2 and n_strips >= 1, not {strip_length} and {n_strips}")
    ranks = _strip_columns(n_images, strip_length, n_strips)
    if ranks is None:
        need = min_images_for_strips(strip_length, n_strips)
        raise ValueError(f"{n_images} images are too few for {n_strips} disjoint strips of {strip_length} images "
                         f"(each strip position needs {n_strips} distinct ranks between its neighbours'): "
                         f"at least {need} images are needed; lower n_strips or strip_length")
    return ranks


def _strip_columns(n: int, length: int, k: int) -> np.ndarray | None:
    if n < length * k:
        return None
    exact = np.linspace(0, n - 1, length)
    # np.rint, as the single strip always used, so that strip 0 stays what studies have shown
    centre = np.rint(exact).astype(np.int64)
    columns = []
    for p, c in zip(exact, centre):
        cand = np.arange(max(0, c - k), min(n - 1, c + k) + 1)
        order = np.lexsort((cand, np.abs(cand - p), np.abs(cand - c)))
        columns.append(cand[order][:k])
    ranks = np.stack(columns, axis=1)
    if np.any(ranks.max(axis=0)[:-1] >= ranks.min(axis=0)[1:]):
        return None
    return ranks


def min_images_for_strips(strip_length: int, n_strips: int) -> int:
    """The fewest images for which :func:`strip_ranks` succeeds; larger sets succeed too (the
    positions only move apart as the set grows; the tests check a few hundred sizes beyond)."""
    n = strip_length * n_strips
    while _strip_columns(n, strip_length, n_strips) is None:
        n += 1
    return n


def select_exemplars(responses: np.ndarray, n_references: int = 9, percentile: float = 10.0,
                     n_queries: int = 20, strip_length: int = 9,
                     rng: np.random.Generator | int = 0, n_strips: int = 4, bands=None) -> Exemplars:
    """Exemplar image indices for one unit (see the module docstring). ``bands``: the query bands
    (:func:`query_bands`); None: the single top ``percentile`` band. Candidates are listed band by band,
    in the order of ``bands``, and inside a band most extreme first."""
    r = np.asarray(responses, dtype=np.float64)
    n = len(r)
    if not 0 < percentile <= 50:
        raise ValueError(f"percentile must be in (0, 50], not {percentile}")
    bands = query_bands(percentile, bands)
    if n < 2 * n_references + 2:
        raise ValueError(f"{n} images are too few for {n_references} references on each side plus queries")
    ranks = strip_ranks(n, strip_length, n_strips)
    rng = np.random.default_rng(rng) if not isinstance(rng, np.random.Generator) else rng
    desc = rank_descending(r)
    asc = rank_ascending(r)
    ref_max = desc[:n_references]
    ref_min = asc[:n_references]
    p_max, p_min = rank_percentiles(r)
    # each side takes from its own half only (the middle image of an odd set is neither side's)
    upper, lower = _places(desc) < n // 2, _places(asc) < n // 2
    taken = np.concatenate([ref_max, ref_min])
    q_max_parts, q_min_parts, thresholds = [], [], None
    for low, high in bands:
        top_band = desc[(p_max[desc] > low) & (p_max[desc] <= high) & upper[desc]]
        bottom_band = asc[(p_min[asc] >= 100.0 - high) & (p_min[asc] < 100.0 - low) & lower[asc]]
        if thresholds is None:
            if len(top_band) == 0 or len(bottom_band) == 0:
                raise ValueError(f"the query band {low:g}-{high:g} holds none of the {n} images: widen it")
            thresholds = float(r[top_band[-1]]), float(r[bottom_band[-1]])
        top_band = top_band[~np.isin(top_band, taken)]
        bottom_band = bottom_band[~np.isin(bottom_band, taken)]
        bottom_band = bottom_band[~np.isin(bottom_band, top_band)]
        k = min(n_queries, len(top_band), len(bottom_band))
        q_max = rng.choice(top_band, size=k, replace=False) if k else np.empty(0, dtype=np.int64)
        q_min = rng.choice(bottom_band, size=k, replace=False) if k else np.empty(0, dtype=np.int64)
        # Most extreme first, so that a study's easy practice trials can take the leading pairs.
        q_max = np.asarray(q_max[np.argsort(-r[q_max], kind="stable")], dtype=np.int64)
        q_min = np.asarray(q_min[np.argsort(r[q_min], kind="stable")], dtype=np.int64)
        q_max_parts.append(q_max)
        q_min_parts.append(q_min)
        taken = np.concatenate([taken, q_max, q_min])
    q_max, q_min = np.concatenate(q_max_parts), np.concatenate(q_min_parts)
    strips = asc[ranks].astype(np.int64)
    return Exemplars(
        references_max=ref_max.astype(np.int64), references_min=ref_min.astype(np.int64),
        queries_max=q_max, queries_min=q_min,
        strip=strips[0].copy(), strips=strips,
        band_max_threshold=thresholds[0], band_min_threshold=thresholds[1],
        queries_max_percentile=p_max[q_max], queries_min_percentile=p_min[q_min])



def band_list(text: str) -> list[list[float]]:
    """``90-100,85-95`` as ``[[90, 100], [85, 95]]``, the ``--query-bands`` flag's value (the section
    checks the values)."""
    import argparse

    bands = []
    for item in text.split(","):
        low, _, high = item.strip().partition("-")
        try:
            bands.append([float(low), float(high)])
        except ValueError:
            raise argparse.ArgumentTypeError(f"{item.strip()!r} is not a band LOW-HIGH, e.g. 85-95") from None
    return bands



@dataclass(frozen=True)
class ExemplarSettings(Section):
    """Per unit: ``n_references`` references per side, ``n_queries`` query pairs from the top and bottom
    ``query_percentile`` bands (or from each of ``query_bands``: ``[low, high]`` percentiles of the maximal
    query, the minimal query's the mirror, the first the job's own band; :func:`query_bands`), and
    ``n_strips`` disjoint ordered strips of ``strip_length`` images (so that no trial of a unit repeats
    another's ordered row). The flat keys are the field names."""

    n_references: int = 9
    query_percentile: float = field(default=10.0, metadata=cli(float, "--percentile"))
    query_bands: list[list[float]] | None = field(default=None, metadata=cli(
        band_list, "--query-bands", metavar="LOW-HIGH,…",
        help="render query candidates for these percentile bands of the maximal query, e.g. 90-100,85-95 "
             "(the first is the job's own; default: the top --percentile band)"))
    n_queries: int = field(default=20, metadata=cli(int, "--queries"))
    strip_length: int = 9
    n_strips: int = field(default=4, metadata=cli(
        int, "--strips", help="disjoint ordered strips per unit (default 4)"))

    def validate(self) -> None:
        need(is_int(self.n_references) and self.n_references >= 1,
             f"n_references must be a positive integer, not {self.n_references!r}")
        need(is_number(self.query_percentile) and 0 < self.query_percentile <= 50,
             f"query_percentile must be in (0, 50], not {self.query_percentile!r}")
        if self.query_bands is not None:
            check_query_bands(self.query_bands)
        need(is_int(self.n_queries) and self.n_queries >= 0,
             f"n_queries must be a non-negative integer, not {self.n_queries!r}")
        need(is_int(self.strip_length) and self.strip_length >= 2,
             f"strip_length must be an integer >= 2, not {self.strip_length!r}")
        need(is_int(self.n_strips) and self.n_strips >= 1,
             f"n_strips must be a positive integer, not {self.n_strips!r}")

