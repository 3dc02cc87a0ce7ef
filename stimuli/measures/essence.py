"""A class's essence (Leino et al., 2018): how much of the network's decision for one class the top-k
units of a layer carry, when they are ordered by their distributional influence on that class.

For k units kept, every other unit of the basis is set to its mean code (:mod:`stimuli.measures.ablation`
says how) and the network decides again. The decision is the class's: "class vs the rest" (the
network's top-1 class is the class, or not) or, with ``versus``, "class vs versus" (the class's logit
above the versus class's, on the images of either class). It is scored as balanced accuracy — the mean
of the recall on the class and on the rest — so that a network that never answers "the class" scores
0.5 rather than the share of the other classes. The reference is the image's label where the dataset's
classes are the network's, else the network's own decision on the unablated image.

Three orders are compared: by |influence| (Leino's essence), by explained variance (the order a
basis is usually read in), and random orders (mean ± sd over seeds). At k = all no unit is changed,
so every curve ends at the network's own accuracy.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch

from .ablation import Interventions, units_at_mean


def balanced_accuracy(decided: np.ndarray, truth: np.ndarray) -> float:
    """Mean recall over the two answers that occur in ``truth`` (boolean arrays)."""
    decided, truth = np.asarray(decided, bool), np.asarray(truth, bool)
    recalls = [np.mean(decided[truth == side] == side) for side in (True, False) if np.any(truth == side)]
    return float(np.mean(recalls)) if recalls else float("nan")


def _decisions(run: Interventions, cls: int, versus: int | None, labels: np.ndarray | None):
    """(decided V x M, truth M, clean decided M) over the images the decision is about."""
    if versus is None:
        truth_source = run.clean_predictions if labels is None else np.asarray(labels)[run.indices]
        return run.predictions == cls, truth_source == cls, run.clean_predictions == cls
    if labels is None:
        clean_margin = run.clean_logits[:, cls] - run.clean_logits[:, versus]
        keep = np.isin(run.clean_predictions, (cls, versus))
        truth = clean_margin > 0
    else:
        lab = np.asarray(labels)[run.indices]
        keep = np.isin(lab, (cls, versus))
        truth = lab == cls
    margin = run.columns[:, :, 0] - run.columns[:, :, 1]
    clean = run.clean_logits[:, cls] > run.clean_logits[:, versus]
    return margin[:, keep] > 0, truth[keep], clean[keep]


def essence_orders(influence_order: Sequence[int], variance_order: Sequence[int], n_random: int,
                   seed: int = 0) -> dict[str, list[np.ndarray]]:
    """The unit orders compared: ``influence``, ``variance`` and ``n_random`` seeded permutations."""
    K = len(influence_order)
    rng = np.random.default_rng(seed)
    return {"influence": [np.asarray(influence_order)], "variance": [np.asarray(variance_order)],
            "random": [rng.permutation(K) for _ in range(n_random)]}


def essence_variants(orders: dict[str, list[np.ndarray]], ks: Sequence[int]) -> list[list[int]]:
    """For each order and k: the units set to their mean code (those after the first k)."""
    return [sorted(int(u) for u in order[k:]) for name in ("influence", "variance", "random")
            for order in orders[name] for k in ks]


def essence_summary(run: Interventions, orders: dict[str, list[np.ndarray]], ks: Sequence[int], cls: int,
                    versus: int | None = None, labels: np.ndarray | None = None, offset: int = 0) -> dict:
    """The manifest's ``essence`` entry from a run whose variants from ``offset`` are
    :func:`essence_variants` of ``orders`` and ``ks``."""
    decided, truth, clean = _decisions(run, cls, versus, labels)
    if not np.any(truth):
        raise ValueError(f"no image of class {cls} among the {len(run.indices)} images: the essence is undefined")
    acc = np.array([balanced_accuracy(d, truth) for d in decided])
    n_k = len(ks)
    curves, j = {}, offset
    for name in ("influence", "variance", "random"):
        rows = []
        for _ in orders[name]:
            rows.append(acc[j:j + n_k])
            j += n_k
        curves[name] = np.array(rows)
    rnd = curves["random"]

    def r(values):
        return [round(float(v), 6) for v in values]

    return {
        "class": int(cls), "versus": None if versus is None else int(versus), "k": [int(k) for k in ks],
        "accuracy_influence": r(curves["influence"][0]), "accuracy_variance": r(curves["variance"][0]),
        "accuracy_random_mean": r(rnd.mean(0)) if len(rnd) else None,
        "accuracy_random_sd": r(rnd.std(0, ddof=1) if len(rnd) > 1 else np.zeros(n_k)) if len(rnd) else None,
        "n_random": int(len(rnd)), "baseline_accuracy": round(balanced_accuracy(clean, truth), 6),
        "metric": "balanced_accuracy", "reference": "predictions" if labels is None else "labels",
        "n_images": int(len(truth)),
    }


def essence(model: torch.nn.Module, images, preprocess: Callable | None, layer: str, basis, cls: int,
            influence_order: Sequence[int], variance_order: Sequence[int], ks: Sequence[int],
            versus: int | None = None, n_random: int = 5, seed: int = 0, labels: np.ndarray | None = None,
            activation: str = "post_relu", device: torch.device | str = "cpu", batch_size: int = 256,
            progress: Callable[[float], None] | None = None) -> dict:
    """The essence curves of ``cls`` (against ``versus``, or the rest) over ``ks`` (module docstring)."""
    orders = essence_orders(influence_order, variance_order, n_random, seed)
    variants = essence_variants(orders, ks)
    columns = () if versus is None else (cls, versus)
    run = units_at_mean(model, images, preprocess, layer, basis, variants, columns=columns, activation=activation,
                        device=device, batch_size=batch_size, progress=progress)
    return essence_summary(run, orders, ks, cls, versus, labels)
