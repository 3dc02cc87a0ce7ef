"""Label purity: a cheap polysemanticity measure for labelled image sets.

The entropy (in bits) of the class labels of a unit's ``n`` most activating images: 0 when they all
share one class, ``log2(n_classes)`` at most. A unit that responds to one concept in a labelled set
tends to pick its top images from few classes; a polysemantic one draws them from many.
"""

from __future__ import annotations

import numpy as np


def top_label_entropy(responses: np.ndarray, labels: np.ndarray, n: int) -> float:
    """Entropy in bits of ``labels`` over the ``n`` images of highest ``responses`` (ties by index)."""
    responses = np.asarray(responses, dtype=np.float64)
    labels = np.asarray(labels)
    if len(responses) != len(labels):
        raise ValueError(f"{len(responses)} responses for {len(labels)} labels")
    if n < 1:
        raise ValueError("n must be at least 1")
    top = np.argsort(-responses, kind="stable")[:n]
    _, counts = np.unique(labels[top], return_counts=True)
    p = counts / counts.sum()
    return float(max(0.0, -(p * np.log2(p)).sum()))
