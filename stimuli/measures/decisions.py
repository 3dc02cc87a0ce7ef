"""From units to decisions: the stimulus job's essence, ablation, label-purity and surrogate measures
(stimuli.measures.essence, stimuli.measures.ablation, stimuli.measures.purity,
stimuli.measures.surrogate) for every layer and basis.

One pass of the network's head per image and (layer, basis) serves every intervention: the essence
curves' and the ablations' sets of units at their mean code run together through the tail
(:func:`stimuli.measures.ablation.units_at_mean`), and the unablated pass gives the predictions the surrogate
trees learn. The measures use a seeded subset of ``decision_max_images`` images.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..sections import Section, is_int, is_int_list, need


@dataclass(frozen=True)
class DecisionMeasuresSettings(Section):
    """Which decision measures a job computes, on a seeded subset of ``decision_max_images`` images: the
    essence curves of the class of interest (over ``essence_k``, default 1, 2, 4, … K, with
    ``essence_random_seeds`` random orders); per-unit ablation of the chosen units and, for the layer's
    mean, up to ``ablation_max_units`` units; the label purity of the top ``label_entropy_top_n`` images
    (0: none); surrogate trees over ``surrogate_k`` units x ``surrogate_depth`` depths. Each intervention
    re-runs only the network after the layer (:mod:`stimuli.measures.tail`), so on the demo these add a
    few seconds. The flat keys are the field names."""

    decision_max_images: int | None = 256
    essence: bool = True
    essence_k: list[int] | None = None
    essence_random_seeds: int = 3
    ablation: bool = True
    ablation_max_units: int = 32
    label_entropy_top_n: int = 50
    surrogate: bool = True
    surrogate_k: list[int] | None = None
    surrogate_depth: list[int] = field(default_factory=lambda: [1, 2, 3, 4, 5])

    def validate(self) -> None:
        need(self.decision_max_images is None or (is_int(self.decision_max_images) and self.decision_max_images >= 4),
             "decision_max_images must be null or an integer >= 4")
        for key in ("essence", "ablation", "surrogate"):
            need(isinstance(getattr(self, key), bool), f"{key} must be true or false")
        for key in ("essence_k", "surrogate_k"):
            value = getattr(self, key)
            need(value is None or is_int_list(value), f"{key} must be null or a non-empty list of positive integers")
        need(is_int_list(self.surrogate_depth), "surrogate_depth must be a non-empty list of positive integers")
        need(is_int(self.essence_random_seeds) and self.essence_random_seeds >= 0,
             "essence_random_seeds must be a non-negative integer")
        need(is_int(self.ablation_max_units) and self.ablation_max_units >= 0,
             "ablation_max_units must be a non-negative integer")
        need(is_int(self.label_entropy_top_n) and self.label_entropy_top_n >= 0,
             "label_entropy_top_n must be a non-negative integer")


log = logging.getLogger(__name__)

SURROGATE_K = (1, 2, 4, 8, 16)


@dataclass
class DecisionMeasures:
    """Per (layer, basis): entries for the manifest's layer entry; per (layer, basis, unit): measures."""

    layers: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    units: dict[tuple[str, str, int], dict[str, Any]] = field(default_factory=dict)

    def layer_entry(self, layer: str, basis: str) -> dict[str, Any]:
        return self.layers.get((layer, basis), {})

    def unit_measures(self, layer: str, basis: str, unit: int) -> dict[str, Any]:
        return self.units.get((layer, basis, int(unit)), {})


def wanted(settings: DecisionMeasuresSettings) -> bool:
    return bool(settings.essence or settings.ablation or settings.surrogate or settings.label_entropy_top_n)


def _ablated_units(settings: DecisionMeasuresSettings, seed: int, K: int, chosen_units: list[int],
                   key: tuple[str, str]) -> list[int]:
    """The chosen units first, then a seeded sample of the others up to ``ablation_max_units`` (all
    units where the basis has no more): the layer's mean is over this sample."""
    from ..selection import unit_rng

    rest = [u for u in range(K) if u not in set(chosen_units)]
    room = max(0, min(settings.ablation_max_units, K) - len(chosen_units))
    sample = unit_rng(seed, "ablation", *key).choice(rest, size=min(room, len(rest)), replace=False) \
        if room and rest else []
    return list(chosen_units) + sorted(int(u) for u in sample)


def decision_measures(settings: DecisionMeasuresSettings, net, images, fitted: dict, chosen: dict, influence: dict,
                      device, *, cls: int | None = None, versus: int | None = None, seed: int = 0,
                      activation: str = "post_relu", batch_size: int = 256,
                      report: Callable[[str, float], None] | None = None, stage: str = "measures") -> DecisionMeasures:
    """The decision measures of every (layer, basis) of ``fitted`` whose units are in ``chosen``
    (``{(layer, basis): [(unit, exemplars, measures), …]}``, as the pipeline builds them; ``fitted``
    maps (layer, basis) to ``(basis, codes)`` with :class:`stimuli.scores.Codes`), for the class of
    interest ``cls`` (versus ``versus``) whose influence is ``influence`` (per (layer, basis), as
    :func:`stimuli.pipeline.measure_influence` gives it)."""
    from ..selection import unit_rng
    from .ablation import units_at_mean_bases
    from .completeness import default_k, unit_order
    from .essence import essence_orders, essence_variants
    from .purity import top_label_entropy

    out = DecisionMeasures()
    if not wanted(settings):
        return out
    net_labels = images.labels if images.labels is not None and net.class_names \
        and images.class_names == net.class_names else None
    n = len(images)
    sub = np.arange(n)
    if settings.decision_max_images and n > settings.decision_max_images:
        sub = np.sort(unit_rng(seed, "decisions").choice(n, size=settings.decision_max_images, replace=False))
    sub_images = images.subset(sub) if len(sub) < n else images
    sub_labels = None if net_labels is None else np.asarray(net_labels)[sub]
    keys = list(chosen)
    if settings.label_entropy_top_n and images.labels is not None:
        for layer, name in keys:
            codes = fitted[(layer, name)][1]
            for u, _ex, _m in chosen[(layer, name)]:
                out.units[(layer, name, int(u))] = {"top_label_entropy": round(top_label_entropy(
                    codes.column(int(u)), images.labels, settings.label_entropy_top_n), 6)}
    if not (settings.essence or settings.ablation or settings.surrogate):
        return out
    columns: tuple[int, ...] = ()
    if settings.essence and versus is not None:
        columns = (cls, versus)
    layers = list(dict.fromkeys(layer for layer, _ in keys))
    for j, layer in enumerate(layers):
        plans = []
        for name in [n for l, n in keys if l == layer]:
            key = (layer, name)
            basis = fitted[key][0]
            K = int(basis.n_components_)
            variance_order = unit_order(basis)
            infl = influence.get(key)
            importance = np.argsort(infl["rank"], kind="stable") if infl else variance_order
            variants: list[list[int]] = []
            orders = ks = None
            if settings.essence and infl:
                ks = [k for k in (settings.essence_k or default_k(K)) if k <= K] or [K]
                orders = essence_orders(importance, variance_order, settings.essence_random_seeds,
                                        seed=int(unit_rng(seed, "essence", layer, name).integers(2 ** 31)))
                variants += essence_variants(orders, ks)
            units = [int(u) for u, _ex, _m in chosen[key]]
            ablated = _ablated_units(settings, seed, K, units, key) if settings.ablation else []
            plans.append(dict(key=key, name=name, K=K, infl=infl, importance=importance, orders=orders, ks=ks,
                              units=units, ablated=ablated, offset=len(variants),
                              variants=variants + [[u] for u in ablated]))
        try:
            runs = units_at_mean_bases(
                net.model, sub_images, net.preprocess, layer, [(fitted[p["key"]][0], p["variants"]) for p in plans],
                columns=columns, activation=activation, device=device, batch_size=batch_size,
                progress=None if report is None else (lambda f, j=j: report(stage, (j + f) / len(layers))))
        except (ValueError, RuntimeError) as exc:
            # as completeness does: a layer that is no module (an FX node name) loses these measures,
            # not the job
            message = str(exc).splitlines()[0]
            log.warning("decision measures skipped for %s: %s", layer, message)
            for plan in plans:
                out.layers[plan["key"]] = {"decisions_error": message}
            continue
        for plan, run in zip(plans, runs):
            codes = fitted[plan["key"]][1].rows(sub[run.indices])
            out.layers[plan["key"]] = _layer_entry(settings, net, plan, run, codes, sub_labels, out,
                                                         cls=cls, versus=versus, seed=seed)
    return out


def _layer_entry(settings: DecisionMeasuresSettings, net, plan: dict, run, codes: np.ndarray, labels,
                 out: DecisionMeasures, *, cls: int | None, versus: int | None, seed: int) -> dict:
    """One (layer, basis)'s ``essence``, ``ablation`` and ``surrogate`` from its run; the chosen units'
    ablation measures go into ``out.units``."""
    from .ablation import ablation_summary
    from .essence import essence_summary
    from .surrogate import surrogate_rules

    layer, name = plan["key"]
    entry: dict[str, Any] = {}
    if plan["orders"] is not None:
        try:
            entry["essence"] = essence_summary(run, plan["orders"], plan["ks"], cls,
                                               versus, labels)
        except ValueError as exc:
            entry["essence_error"] = str(exc).splitlines()[0]
    if plan["ablated"]:
        summary = ablation_summary(run, plan["ablated"], labels, offset=plan["offset"])
        entry["ablation"] = summary
        for u, drop, change in zip(summary["units"][:len(plan["units"])], summary["accuracy_drop"],
                                   summary["logit_change"]):
            out.units.setdefault((layer, name, u), {}).update(
                {"ablation_accuracy_drop": drop, "ablation_logit_change": change})
    if settings.surrogate:
        ks_tree = [k for k in (settings.surrogate_k or SURROGATE_K) if k <= plan["K"]] or [plan["K"]]
        try:
            entry["surrogate"] = surrogate_rules(codes, run.clean_predictions, plan["importance"], ks_tree,
                                                 settings.surrogate_depth, layer, name,
                                                 class_names=net.class_names or None, seed=seed)
            entry["surrogate"]["order"] = "influence" if plan["infl"] else "variance"
        except ValueError as exc:
            entry["surrogate_error"] = str(exc).splitlines()[0]
    return entry


MEASURES = ("essence", "ablate", "surrogate")


def layer_report(measure: str, network: str = "demo", dataset: str = "digits", layer: str = "conv2",
                 bases: tuple[str, ...] = ("neuron", "pca", "nmf"), *, cls: int | None = None,
                 versus: int | None = None, weights: str | None = None, architecture: str | None = None,
                 allow_download: bool = True, max_images: int | None = None, n_components: int | None = None,
                 distribution: str = "class", pooling: str = "mean", activation: str = "post_relu", seed: int = 0,
                 ks: list[int] | None = None, depths: list[int] | None = None, units: list[int] | None = None,
                 n_random: int = 5, device: str = "auto", batch_size: int = 256,
                 checkpoint: str | None = None) -> dict:
    """One measure for one layer and several bases, from names alone, for the command line: the
    essence curves of ``cls`` (``measure="essence"``), the ablation of ``units`` (default all) or the
    surrogate rules (units ordered by influence on ``cls`` when given, else by explained variance)."""
    from ..activations import extract
    from ..bases import make_basis
    from ..datasets import load_dataset
    from ..networks import load_network, resolve_device
    from .ablation import unit_ablation
    from .completeness import default_k, unit_order
    from .essence import essence
    from .influence import Quantity, influence_from_gradient, influence_order, pooled_gradient
    from .surrogate import surrogate_rules

    if measure not in MEASURES:
        raise ValueError(f"measure must be one of {', '.join(MEASURES)}, not {measure!r}")
    if measure == "essence" and cls is None:
        raise ValueError("the essence is that of a class: give --class")
    device = resolve_device(device)
    net = load_network(network, weights=weights, architecture=architecture, allow_download=allow_download,
                       checkpoint=checkpoint)
    images = load_dataset(dataset, max_images=max_images, seed=seed)
    net = net.for_classes(images.class_names)
    acts = extract(net.model, images, net.preprocess, [layer], pooling=pooling, activation=activation,
                   device=device, batch_size=batch_size)
    if len(acts.indices) < len(images):
        images = images.subset(acts.indices)
    A = acts.values[layer]
    labels = images.labels if images.labels is not None and net.class_names \
        and images.class_names == net.class_names else None
    gradient = None
    if cls is not None:
        quantity = Quantity(cls, versus)
        gradient, _ = pooled_gradient(net.model, images, net.preprocess, layer, quantity, activation=activation,
                                      pooling=pooling, distribution=distribution, labels=labels, device=device,
                                      batch_size=batch_size)
    out: dict[str, Any] = {"measure": measure, "network": network, "layer": layer, "n_images": len(images),
                           "class": cls, "versus": versus, "bases": {}}
    kwargs = dict(activation=activation, device=device, batch_size=batch_size)
    for name in bases:
        basis = make_basis(name, n_components=n_components, random_state=seed)
        codes = basis.fit_transform(A)
        K = int(basis.n_components_)
        order = influence_order(influence_from_gradient(basis, gradient, per="direction")) \
            if gradient is not None else unit_order(basis)
        if measure == "essence":
            kk = [k for k in (ks or default_k(K)) if k <= K] or [K]
            result = essence(net.model, images, net.preprocess, layer, basis, cls, order, unit_order(basis), kk,
                             versus=versus, n_random=n_random, seed=seed, labels=labels, **kwargs)
        elif measure == "ablate":
            chosen = [u for u in (units if units is not None else range(K)) if 0 <= u < K]
            result = unit_ablation(net.model, images, net.preprocess, layer, basis, chosen, labels=labels, **kwargs)
        else:
            from .ablation import units_at_mean

            run = units_at_mean(net.model, images, net.preprocess, layer, basis, [], **kwargs)
            result = surrogate_rules(codes[run.indices], run.clean_predictions, order, ks or SURROGATE_K,
                                     depths or [1, 2, 3, 4, 5], layer, name, class_names=net.class_names or None,
                                     seed=seed)
            result["order"] = "influence" if gradient is not None else "variance"
        out["bases"][name] = {"n_components": K, **result}
    return out
