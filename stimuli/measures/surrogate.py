"""Surrogate rules: a shallow decision tree on a layer's top-k unit codes that predicts the network's
own decision (rule extraction with a surrogate model, as the interpretability overview asks).

The tree is scikit-learn's ``DecisionTreeClassifier``, fitted on the pooled codes of the top-k units
(by |influence| where it was computed, else by explained variance) of part of the images, with the
network's top-1 prediction as the target; its fidelity is its agreement with the network on the
held-out images. Fidelity is read over a grid of k and depth; the best tree (highest fidelity, then the
shallowest, then the fewest units) is printed as rules by ``sklearn.tree.export_text``, with features
named by unit id (``layer:basis:index``) so that a rule reads next to each unit's exemplars.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def unit_id(layer: str, basis: str, unit: int) -> str:
    return f"{layer}:{basis}:{int(unit)}"


def surrogate_rules(codes: np.ndarray, predictions: np.ndarray, order: Sequence[int], ks: Sequence[int],
                    depths: Sequence[int], layer: str, basis: str, class_names: Sequence[str] | None = None,
                    test_size: float = 0.3, seed: int = 0) -> dict:
    """Fidelity over ``ks`` x ``depths`` and the best tree's rules (module docstring).

    ``codes`` is N x K (one row per image), ``predictions`` the network's top-1 class per image and
    ``order`` the units from the most to the least important.
    """
    from sklearn.model_selection import train_test_split
    from sklearn.tree import DecisionTreeClassifier, export_text

    codes = np.asarray(codes, dtype=np.float64)
    y = np.asarray(predictions)
    order = np.asarray(order, dtype=np.int64)
    if len(codes) != len(y):
        raise ValueError(f"{len(codes)} code rows for {len(y)} predictions")
    if len(y) < 4:
        raise ValueError("a surrogate needs at least 4 images")
    ks = [int(k) for k in ks if 1 <= k <= len(order)] or [len(order)]
    depths = [int(d) for d in depths]
    train, test = train_test_split(np.arange(len(y)), test_size=test_size, random_state=seed)
    grid = np.zeros((len(ks), len(depths)))
    trees = {}
    for a, k in enumerate(ks):
        cols = order[:k]
        for b, depth in enumerate(depths):
            tree = DecisionTreeClassifier(max_depth=depth, random_state=seed).fit(codes[np.ix_(train, cols)], y[train])
            grid[a, b] = float(np.mean(tree.predict(codes[np.ix_(test, cols)]) == y[test]))
            trees[(a, b)] = tree
    # the best: highest fidelity, then the shallowest tree, then the fewest units
    a, b = min(np.ndindex(grid.shape), key=lambda ab: (-round(grid[ab], 9), depths[ab[1]], ks[ab[0]]))
    best = trees[(a, b)]
    names = [unit_id(layer, basis, u) for u in order[:ks[a]]]
    labels = [str(c) if class_names is None else str(class_names[int(c)]) for c in best.classes_]
    rules = export_text(best, feature_names=names, class_names=labels, decimals=3)
    used = sorted({names[i] for i in best.tree_.feature if i >= 0})
    return {
        "k": ks[a], "depth": depths[b], "fidelity": round(float(grid[a, b]), 6), "rules": rules,
        "units": used, "ks": ks, "depths": depths,
        "fidelity_grid": [[round(float(v), 6) for v in row] for row in grid],
        "fidelity_by_k": [round(float(v), 6) for v in grid[:, b]],
        "fidelity_by_depth": [round(float(v), 6) for v in grid[a, :]],
        "n_train": int(len(train)), "n_test": int(len(test)),
    }
