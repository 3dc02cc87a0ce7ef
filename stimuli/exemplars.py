"""Exemplars of one unit from its responses over the image set: pure functions on index arrays.

References are the ``n_references`` most (descending) and least (ascending) activating images;
queries are drawn from the top and bottom ``percentile`` bands by rank, never among the references,
and paired by position; the strips show images at evenly spaced activation quantiles. Ties are broken
by image index, so the result depends only on the responses and the seed.

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
                     rng: np.random.Generator | int = 0, n_strips: int = 4) -> Exemplars:
    """Exemplar image indices for one unit (see the module docstring)."""
    r = np.asarray(responses, dtype=np.float64)
    n = len(r)
    if not 0 < percentile <= 50:
        raise ValueError(f"percentile must be in (0, 50], not {percentile}")
    if n < 2 * n_references + 2:
        raise ValueError(f"{n} images are too few for {n_references} references on each side plus queries")
    ranks = strip_ranks(n, strip_length, n_strips)
    rng = np.random.default_rng(rng) if not isinstance(rng, np.random.Generator) else rng
    desc = rank_descending(r)
    asc = rank_ascending(r)
    ref_max = desc[:n_references]
    ref_min = asc[:n_references]
    m = min(band_size(n, percentile), n // 2)
    refs = np.concatenate([ref_max, ref_min])
    top_band = desc[:m]
    bottom_band = asc[:m]
    top_band = top_band[~np.isin(top_band, refs)]
    bottom_band = bottom_band[~np.isin(bottom_band, refs)]
    bottom_band = bottom_band[~np.isin(bottom_band, top_band)]
    k = min(n_queries, len(top_band), len(bottom_band))
    q_max = rng.choice(top_band, size=k, replace=False) if k else np.empty(0, dtype=np.int64)
    q_min = rng.choice(bottom_band, size=k, replace=False) if k else np.empty(0, dtype=np.int64)
    # Most extreme first, so that a study's easy practice trials can take the leading pairs.
    q_max = q_max[np.argsort(-r[q_max], kind="stable")]
    q_min = q_min[np.argsort(r[q_min], kind="stable")]
    strips = asc[ranks].astype(np.int64)
    return Exemplars(
        references_max=ref_max.astype(np.int64), references_min=ref_min.astype(np.int64),
        queries_max=np.asarray(q_max, dtype=np.int64), queries_min=np.asarray(q_min, dtype=np.int64),
        strip=strips[0].copy(), strips=strips,
        band_max_threshold=float(r[desc[m - 1]]), band_min_threshold=float(r[asc[m - 1]]))


@dataclass(frozen=True)
class ExemplarSettings(Section):
    """Per unit: ``n_references`` references per side, ``n_queries`` query pairs from the top and bottom
    ``query_percentile`` bands, and ``n_strips`` disjoint ordered strips of ``strip_length`` images (so
    that no trial of a unit repeats another's ordered row). The flat keys are the field names."""

    n_references: int = 9
    query_percentile: float = field(default=10.0, metadata=cli(float, "--percentile"))
    n_queries: int = field(default=20, metadata=cli(int, "--queries"))
    strip_length: int = 9
    n_strips: int = field(default=4, metadata=cli(int, "--strips", help="disjoint ordered strips per unit (default 4)"))

    def validate(self) -> None:
        need(is_int(self.n_references) and self.n_references >= 1,
             f"n_references must be a positive integer, not {self.n_references!r}")
        need(is_number(self.query_percentile) and 0 < self.query_percentile <= 50,
             f"query_percentile must be in (0, 50], not {self.query_percentile!r}")
        need(is_int(self.n_queries) and self.n_queries >= 0,
             f"n_queries must be a non-negative integer, not {self.n_queries!r}")
        need(is_int(self.strip_length) and self.strip_length >= 2,
             f"strip_length must be an integer >= 2, not {self.strip_length!r}")
        need(is_int(self.n_strips) and self.n_strips >= 1,
             f"n_strips must be a positive integer, not {self.n_strips!r}")
