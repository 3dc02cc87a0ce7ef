"""Which units of a basis a study shows: a seeded random draw, the top explained variance, or the
most influential on a class (:mod:`stimuli.influence`)."""

from __future__ import annotations

import zlib

import numpy as np

from .config import UNIT_SELECTIONS


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
