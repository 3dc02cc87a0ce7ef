"""Per-unit ablation (Colin et al., 2024): how much of the network's decision a unit carries.

A unit is ablated by setting its code to its mean code over the image set, at every spatial position
of the layer, while every other unit keeps its code and the part of the activation that no unit
explains is left as it is: the layer's output ``a`` becomes ``a − Σ_{j∈S} (h_j − h̄_j)·W_j`` for the set
``S`` of ablated units. For neurons this is the channel set to its mean; for a basis that reconstructs
the layer exactly (PCA with every component) it is the projection with those components at their
mean. Ablating no unit leaves the network as it is, so every curve built on this
(:mod:`stimuli.measures.essence` too) ends at the network's own accuracy.

:func:`units_at_mean` runs the network once per image batch up to the layer (:mod:`stimuli.measures.tail`) and
the rest once per set of ablated units. :func:`unit_ablation` reads, per unit, the drop in accuracy
(against the labels where the dataset's classes are the network's, else against the network's own
prediction) and the mean absolute change of the target logit — the logit of the class the unablated
network predicts for that image.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial

import numpy as np
import torch

from ..layers import hook as layer_hook, resolve
from .completeness import _channels_first, _channels_last, _Projector


@dataclass
class Interventions:
    """Outputs of the network with sets of units at their mean code, for the images that were read."""

    clean_logits: np.ndarray      # N x classes, nothing ablated
    predictions: np.ndarray       # V x N, top-1 class with each set ablated
    target_logit: np.ndarray      # V x N, logit of the clean prediction with each set ablated
    columns: np.ndarray           # V x N x len(columns), chosen logits with each set ablated
    indices: np.ndarray           # N positions in the image set that were read
    split: bool                   # the tail alone was re-run (else the whole network)

    @property
    def clean_predictions(self) -> np.ndarray:
        return self.clean_logits.argmax(1)


def _input_batches(images, preprocess, batch_size: int):
    from .influence import _input_batches as batches

    return batches(images, preprocess, batch_size)


def units_at_mean(model: torch.nn.Module, images, preprocess: Callable | None, layer: str, basis,
                  variants: Sequence[Sequence[int]], columns: Sequence[int] = (), activation: str = "post_relu",
                  device: torch.device | str = "cpu", batch_size: int = 256,
                  progress: Callable[[float], None] | None = None) -> Interventions:
    """The network's outputs with each set of units in ``variants`` at its mean code (module docstring).

    ``images`` is an ImageSet (read through ``preprocess``) or an N x ... tensor of network inputs.
    """
    return units_at_mean_bases(model, images, preprocess, layer, [(basis, variants)], columns, activation,
                               device, batch_size, progress)[0]


class _Sets:
    """One basis's distinct sets of units: essence curves share sets (every order keeps all units at
    k = K), so each distinct set runs once and the results are expanded back to ``variants``' order."""

    def __init__(self, basis, variants: Sequence[Sequence[int]], device: torch.device) -> None:
        keys = [tuple(sorted(int(u) for u in v)) for v in variants]
        position: dict[tuple[int, ...], int] = {}
        for k in keys:
            position.setdefault(k, len(position))
        self.expand = np.array([position[k] for k in keys], dtype=np.int64)
        K = int(basis.n_components_)
        self.sets = [torch.as_tensor(np.asarray(k, dtype=np.int64), device=device) for k in position]
        # a set of more than half the units is changed through its complement: Σ_S = Σ_all − Σ_rest
        self.complements = [torch.as_tensor(np.setdiff1d(np.arange(K), k), device=device) if 2 * len(k) > K
                            else None for k in position]
        self.neurons = basis.tags.channel_codes
        self.projector = _Projector(basis, device)
        self.preds, self.targets, self.picked = [], [], []

    def changed(self, flat: torch.Tensor, centred: torch.Tensor, v: int, cache: dict) -> torch.Tensor:
        """The layer's output (rows x channels) with set ``v`` at its mean code. For neurons that is the
        channels set to their means, with no product at all; otherwise the product runs over at most
        half the units (an essence curve's sets hold nearly all of them at small k)."""
        units = self.sets[v]
        if self.neurons:
            out = flat.clone()
            out[:, units] = self.projector.code_mean[units]
            return out
        W = self.projector.W
        rest = self.complements[v]
        if rest is None:
            return flat - centred[:, units] @ W[units]
        if "all" not in cache:
            cache["all"] = flat - centred @ W
        return cache["all"] + centred[:, rest] @ W[rest]


def units_at_mean_bases(model: torch.nn.Module, images, preprocess: Callable | None, layer: str,
                        bases_variants: Sequence[tuple[object, Sequence[Sequence[int]]]], columns: Sequence[int] = (),
                        activation: str = "post_relu", device: torch.device | str = "cpu", batch_size: int = 256,
                        progress: Callable[[float], None] | None = None) -> list[Interventions]:
    """:func:`units_at_mean` for several bases of one layer, with one pass of the network's head per
    image for all of them."""
    from .tail import checked, split_at, stack_size, stacked_tails

    device = torch.device(device)
    model = model.to(device).eval()
    # any name `layers` prints: a module, a later call of one, or a function's result (stimuli.layers)
    site = resolve(model, layer)
    split = split_at(model, layer)
    per_basis = [_Sets(basis, variants, device) for basis, variants in bases_variants]
    cols = torch.as_tensor(np.asarray(columns, dtype=np.int64), device=device)
    state: dict = {}

    def at_layer(value):
        if state.get("replace") is not None:
            return state["replace"]
        state["captured"] = value
        return None

    clean, seen = [], []
    n_total = len(images)
    with layer_hook(model, layer, at_layer, site=site), torch.inference_mode():
        for idx, x in _input_batches(images, preprocess, batch_size):
            x = x.to(device)
            if split is not None and not seen:
                split = checked(split, model, x[:8], state)
            if split is not None:
                t, *carried = split.head(x)
                logits = split.tail(t, *carried).float()
            else:
                state["replace"] = None
                logits = model(x).float()
                t = state.pop("captured")
            a = torch.relu(t) if activation == "post_relu" else t
            flat, moved_shape = _channels_last(a.float())
            target = logits.argmax(1)
            for b in per_basis:
                centred = b.projector.codes(flat) - b.projector.code_mean
                p = torch.empty(len(b.sets), len(x), dtype=torch.long, device=device)
                tl = torch.empty(len(b.sets), len(x), device=device)
                pc = torch.empty(len(b.sets), len(x), len(cols), device=device)
                cache: dict = {}

                def replaced(v, b=b, flat=flat, centred=centred, cache=cache, shape=moved_shape, t=t):
                    return _channels_first(b.changed(flat, centred, v, cache), shape, t.ndim).to(t.dtype)

                # the sets' tails, several per call (stimuli.measures.tail.stacked_tails), in the order below
                stacked = None if split is None else stacked_tails(
                    split, (partial(replaced, v) for v, units in enumerate(b.sets) if len(units)), carried,
                    stack_size(len(x), batch_size, device))
                for v, units in enumerate(b.sets):
                    if len(units) == 0:
                        out = logits
                    elif stacked is not None:
                        out = next(stacked)
                    else:
                        state["replace"] = replaced(v)
                        out = model(x).float()
                        state["replace"] = None
                    p[v] = out.argmax(1)
                    tl[v] = out.gather(1, target[:, None])[:, 0]
                    pc[v] = out[:, cols]
                b.preds.append(p.cpu().numpy())
                b.targets.append(tl.cpu().numpy())
                b.picked.append(pc.cpu().numpy())
            clean.append(logits.cpu().numpy())
            seen.append(idx.numpy())
            if progress:
                progress(sum(len(s) for s in seen) / n_total)
    if not seen:
        raise ValueError("no image could be read for the ablations")
    clean_logits, indices = np.concatenate(clean), np.concatenate(seen)
    return [Interventions(clean_logits=clean_logits, predictions=np.concatenate(b.preds, axis=1)[b.expand],
                          target_logit=np.concatenate(b.targets, axis=1)[b.expand],
                          columns=np.concatenate(b.picked, axis=1)[b.expand], indices=indices,
                          split=split is not None)
            for b in per_basis]


def unit_ablation(model: torch.nn.Module, images, preprocess: Callable | None, layer: str, basis,
                  units: Sequence[int], labels: np.ndarray | None = None, activation: str = "post_relu",
                  device: torch.device | str = "cpu", batch_size: int = 256,
                  progress: Callable[[float], None] | None = None) -> dict:
    """Per unit of ``units``: ``accuracy_drop`` (accuracy of the network minus its accuracy with the
    unit at its mean code) and ``logit_change`` (mean |Δ target logit|), with their means over the
    units. ``labels`` (one per image) score accuracy; without them the reference is the network's own
    prediction, so the baseline accuracy is 1."""
    units = [int(u) for u in units]
    run = units_at_mean(model, images, preprocess, layer, basis, [[u] for u in units], activation=activation,
                        device=device, batch_size=batch_size, progress=progress)
    return ablation_summary(run, units, labels)


def ablation_summary(run: Interventions, units: Sequence[int], labels: np.ndarray | None = None,
                     offset: int = 0) -> dict:
    """:func:`unit_ablation`'s numbers from the variants ``offset … offset + len(units) − 1`` of a run."""
    clean_pred = run.clean_predictions
    reference = clean_pred if labels is None else np.asarray(labels)[run.indices]
    base = float(np.mean(clean_pred == reference))
    clean_target = run.clean_logits[np.arange(len(clean_pred)), clean_pred]
    rows = slice(offset, offset + len(units))
    drop = base - np.mean(run.predictions[rows] == reference[None, :], axis=1)
    change = np.mean(np.abs(run.target_logit[rows] - clean_target[None, :]), axis=1)
    return {
        "units": [int(u) for u in units],
        "accuracy_drop": [round(float(v), 6) for v in drop],
        "logit_change": [round(float(v), 6) for v in change],
        "accuracy_drop_mean": round(float(drop.mean()), 6) if len(units) else None,
        "logit_change_mean": round(float(change.mean()), 6) if len(units) else None,
        "baseline_accuracy": round(base, 6),
        "reference": "predictions" if labels is None else "labels",
        "n_images": int(len(clean_pred)),
    }
