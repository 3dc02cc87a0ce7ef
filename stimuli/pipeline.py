"""The stimulus job: network → activations → bases → units → exemplars → PNGs → occlusion pairs → measures → region
Sobol indices → artifact.

:func:`run` calls one function per stage of :data:`STAGES`, each taking what it reads by name and
returning what the next stages read; the manifest itself is built by :mod:`stimuli.artifact`.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

# STAGES (the stages' names and order) is part of the artifact contract: progress calls, the manifest's timings
from .artifact import STAGES, ArtifactWriter, build_manifest
from .config import MIS_SELECTIONS, StimulusConfig
from .figures import draw_figures
from .measures.decisions import decision_measures

log = logging.getLogger(__name__)

Progress = Callable[[str, float], None]


@dataclass(frozen=True)
class Inputs:
    """What the ``network`` stage loads: the network, the image set (after ``activations``: the images
    whose activations were read) and the device the work runs on."""

    net: Any
    images: Any
    device: Any


class Fitted(NamedTuple):
    """A basis fitted on a layer's pooled activations, and the images' codes in it
    (:class:`stimuli.scores.Codes`: one unit's column at a time, never an N x K float64 matrix)."""

    basis: Any
    codes: Any


class ChosenUnit(NamedTuple):
    """A unit a study will show: its index in the basis, its exemplars and its measures."""

    index: int
    exemplars: Any
    measures: dict


@dataclass(frozen=True)
class Chosen:
    """What the ``exemplars`` stage chose per (layer, basis): the units, and the ``selection`` record
    of a choice by the machine score."""

    units: dict[tuple[str, str], list[ChosenUnit]]
    selections: dict[tuple[str, str], dict]

    def image_indices(self) -> list[int]:
        """Every image an exemplar of a chosen unit shows, in index order."""
        return sorted({int(i) for entries in self.units.values() for u in entries
                       for i in u.exemplars.all_indices()})


@dataclass(frozen=True)
class Rendered:
    """What the ``render`` stage wrote: each shown image's file, the overlay files per
    (layer, basis, unit), and the display size."""

    files: dict[int, str]
    overlays: dict[tuple[str, str, int], list[str]]
    size: int


def _basis_params(config: StimulusConfig, name: str) -> dict[str, Any]:
    from .bases import basis_class

    return basis_class(name).params_from_settings(config.bases, seed=config.seed, device=config.network.device)


def _r(values, digits: int = 6) -> list[float]:
    return [round(float(v), digits) for v in np.asarray(values).ravel()]


def measure_influence(config: StimulusConfig, inputs: Inputs, fitted: dict[tuple[str, str], Fitted]) -> dict:
    """Per (layer, basis): the units' influence on the class of interest (stimuli.measures.influence), read
    from one backward pass per layer; empty without ``influence_class``. Ranking and concentration
    use the direction form. Part of the ``bases`` stage (unit selection by influence needs it)."""
    from .measures.influence import Quantity, concentration, influence_from_gradient, influence_order, pooled_gradient
    from .selection import unit_rng

    if config.influence.class_index is None:
        return {}
    net, images, device = inputs.net, inputs.images, inputs.device
    quantity = Quantity(config.influence.class_index, config.influence.versus)
    if net.n_classes:
        quantity.check(net.n_classes)
    labels = _network_labels(inputs)
    pool_images, pool_labels = images, labels
    if config.influence.distribution == "class" and labels is not None:
        keep = np.flatnonzero(np.asarray(labels) == quantity.cls)
        pool_images, pool_labels = images.subset(keep), np.asarray(labels)[keep]
    limit = config.influence.max_images
    if limit and len(pool_images) > limit:
        sub = np.sort(unit_rng(config.seed, "influence").choice(len(pool_images), size=limit, replace=False))
        pool_images = pool_images.subset(sub)
        pool_labels = None if pool_labels is None else pool_labels[sub]
    out = {}
    for layer in config.activations.layers:
        g, n = pooled_gradient(net.model, pool_images, net.preprocess, layer, quantity,
                               activation=config.activations.activation, pooling=config.activations.pooling,
                               distribution=config.influence.distribution, labels=pool_labels, device=device,
                               batch_size=config.activations.batch_size)
        for name in config.bases.names:
            basis = fitted[(layer, name)].basis
            chi, direction = influence_from_gradient(basis, g), influence_from_gradient(basis, g, per="direction")
            rank = np.empty(len(chi), dtype=np.int64)
            rank[influence_order(direction)] = np.arange(len(chi))
            out[(layer, name)] = {
                "code": chi, "direction": direction, "rank": rank, "concentration": concentration(direction),
                "quantity": {**quantity.to_dict(), "distribution": config.influence.distribution, "n_images": n,
                             "reference": "labels" if labels is not None else "predictions"},
            }
    return out


def _attribution_overlays(config: StimulusConfig, net, images, fitted: dict[tuple[str, str], Fitted],
                          chosen: dict[tuple[str, str], list[ChosenUnit]], writer, size, device) -> dict:
    """Per (layer, basis, unit): overlay files aligned with the unit's ``references_max``."""
    from .measures.attribution import attribution_overlays
    from .render import render

    out = {}
    for (layer, name), entries in chosen.items():
        basis = fitted[(layer, name)].basis
        for u, ex, _measures in entries:
            pictures = attribution_overlays(net.model, images, net.preprocess, ex.references_max, layer, basis, u,
                                            config.attribution.method, size=size,
                                            activation=config.activations.activation,
                                            pooling=config.activations.pooling, device=device)
            out[(layer, name, u)] = [writer.add_image(render(p)[1]) for p in pictures]
    return out


def _unit_exemplars(config: StimulusConfig, codes, layer: str, basis: str, unit: int):
    """A unit's exemplars, seeded by the unit's own name (not its position among the chosen), so that a
    unit gets the same exemplars however it was chosen."""
    from .exemplars import select_exemplars
    from .selection import unit_rng

    ex = config.exemplars
    return select_exemplars(codes.column(unit), ex.n_references, ex.query_percentile, ex.n_queries, ex.strip_length,
                            rng=unit_rng(config.seed, "queries", layer, basis, str(unit)), n_strips=ex.n_strips,
                            bands=ex.query_bands)


def _mis_embeddings(config: StimulusConfig, net, images, device):
    """The machine observer's embedding of every image, computed once for all units and bases. Centred
    on the image set's own mean: raw post-ReLU activations make every cosine similarity high and squash
    the score towards 0.5."""
    from .measures.mis import embed_images

    act = config.activations
    return embed_images(images, net.model, net.preprocess, config.mis.layer, pooling=act.pooling,
                        activation=act.activation, device=device, batch_size=act.batch_size).centred()


def _mis_measures(score) -> dict:
    """A unit's Machine Interpretability Score as measures `mis` and `mis_mean_delta`, and the Δ of each
    task as `mis_deltas` (aligned with the query pairs, for fitting α to human answers per trial)."""
    return {"mis": round(float(score.mis), 6), "mis_mean_delta": round(float(score.mean_delta), 6),
            "mis_deltas": _r(score.deltas)}


def _choose_by_machine_score(config: StimulusConfig, candidates, exemplars_of: Callable, embeddings,
                             n_units: int, where: str, progress: Callable[[float], None]):
    """unit_selection mis_*: each candidate's exemplars (those it would get if chosen any other way) and
    machine score, then ``n_units`` of them by :func:`stimuli.selection.select_by_score`. Returns
    ``[(unit, exemplars, score)]`` for the chosen units and the layer entry's ``selection`` record."""
    from .measures.mis import machine_score_details
    from .selection import select_by_score

    exemplars = []
    for c, u in enumerate(candidates):
        exemplars.append(exemplars_of(u))
        progress((c + 1) / len(candidates))
    scores = machine_score_details(embeddings, exemplars, alpha=config.mis.alpha)
    mis = np.array([s.mis for s in scores], dtype=np.float64)
    picked = select_by_score(mis, n_units, config.selection.method.removeprefix("mis_"))
    if len(picked) == 0:
        raise ValueError(f"no candidate unit of {where} has a machine score (no query pairs): raise "
                         "query_percentile or use more images")
    record = {"by": config.selection.method, "candidates": [int(u) for u in candidates],
              "scores": [round(float(v), 6) if np.isfinite(v) else None for v in mis]}
    return [(int(candidates[p]), exemplars[p], scores[p]) for p in picked], record


def _region_sobol(config: StimulusConfig, net, images, writer, size, device, report) -> dict:
    """The manifest's ``sobol`` entry: Sobol-SBSA region indices of the network's decision (its
    prediction) for ``sobol_images`` images spread over the classes, and the network's
    interaction share. Second-order indices only with ``sobol_second_order``: the share needs none, and
    they double the forward passes. Regions are the grid or, with ``sobol_regions="superpixels"``, each
    image's SLIC superpixels; either way each image's label map is stored as a PNG."""
    from .measures.sobol import (
        choose_images,
        label_map_png,
        region_sobol_images,
        share_summary,
        superpixel_labels,
        upper_triangle,
    )
    from .render import render
    from .selection import unit_rng

    chosen = choose_images(len(images), config.sobol.images, images.labels, unit_rng(config.seed, "sobol"))
    regions = partial(superpixel_labels, n_segments=config.sobol.superpixels) \
        if config.sobol.regions == "superpixels" else None
    results = region_sobol_images(net.model, images, net.preprocess, chosen, grid=config.sobol.grid,
                                  n_samples=config.sobol.n_samples, perturbation=config.sobol.perturbation,
                                  device=device, batch_size=config.activations.batch_size,
                                  second_order=config.sobol.second_order,
                                  seed=config.seed, progress=lambda f: report("sobol", f), regions=regions)
    per_image = []
    for i, res in zip(chosen, results):
        d = res.to_dict()
        per_image.append({
            "index": int(i), "image_id": images.image_id(int(i)),
            "image": writer.add_image(render(images.display(int(i), size))[1]),
            "label": None if images.labels is None else int(images.labels[int(i)]),
            "target_class": res.target_class,
            **{k: d[k] for k in ("S1", "ST", "S1_conf", "ST_conf", "interaction_share", "variance")},
            "n_regions": res.n_regions, "regions": writer.add_image(label_map_png(res.labels)),
        })
        if config.sobol.second_order:
            per_image[-1].update(S2=upper_triangle(res.S2), S2_conf=upper_triangle(res.S2_conf))
    first = results[0]
    return {
        "grid": list(first.grid) if first.grid else None, "regions": config.sobol.regions,
        "n_samples": config.sobol.n_samples, "n_base": first.n_base,
        "n_forwards_per_image": first.n_forwards, "perturbation": config.sobol.perturbation,
        "output": first.output, "target": "prediction", "second_order": config.sobol.second_order,
        "images": per_image,
        "interaction_share": share_summary([res.interaction_share for res in results]),
    }


# -------------------------------------------------------------------------------------------------
# the stages, in the order run() calls them
# -------------------------------------------------------------------------------------------------
def load_inputs(config: StimulusConfig, report: Progress, images=None) -> Inputs:
    """Stage ``network``: the network, the image set (``images`` when given, as
    :func:`stimuli.shards.listed_images` builds it from a listing) and the device."""
    from .datasets import load_dataset
    from .networks import load_network, resolve_device

    report("network", 0.0)
    device = resolve_device(config.network.device)
    spec = config.network
    net = load_network(spec.name, weights=spec.weights, architecture=spec.architecture,
                       num_classes=spec.num_classes, allow_download=spec.allow_download,
                       log=log.info, checkpoint=spec.checkpoint)
    if images is None:
        images = load_dataset(config.dataset.name, max_images=config.dataset.max_images, seed=config.seed)
    # an open_clip image tower classifies by zero-shot prompts over the image set's class names
    net = net.for_classes(images.class_names)
    report("network", 1.0)
    return Inputs(net=net, images=images, device=device)


def read_activations(config: StimulusConfig, inputs: Inputs, report: Progress, acts=None):
    """Stage ``activations``: the pooled activations of every layer, and the inputs with the image set
    narrowed to the images that could be read. ``acts`` given (a sharded pass merged by
    :func:`stimuli.shards.merge_shards`) stand in for the pass. Refuses an image set too small for the
    strips now, not after the bases are fitted."""
    from . import activations as act
    from .exemplars import strip_ranks

    report("activations", 0.0)
    images = inputs.images
    if acts is None:
        settings = config.activations
        acts = act.extract(inputs.net.model, images, inputs.net.preprocess, settings.layers, pooling=settings.pooling,
                           activation=settings.activation, device=inputs.device, batch_size=settings.batch_size,
                           num_workers=settings.num_workers, progress=lambda f: report("activations", f),
                           decode=settings.decode)
    elif sorted(acts.values) != sorted(config.activations.layers) or np.any(np.diff(acts.indices) <= 0) \
            or (len(acts.indices) > 0 and not 0 <= acts.indices[0] <= acts.indices[-1] < len(images)):
        raise ValueError(f"the given activations (layers {', '.join(acts.values)}, {len(acts.indices)} images) "
                         f"are not those of this job's layers and {len(images)} images")
    if len(acts.indices) < len(images):
        images = images.subset(acts.indices)
    strip_ranks(len(images), config.exemplars.strip_length, config.exemplars.n_strips)
    report("activations", 1.0)
    return acts, Inputs(net=inputs.net, images=images, device=inputs.device)


def fit_bases(config: StimulusConfig, acts, report: Progress) -> dict[tuple[str, str], Fitted]:
    """Stage ``bases``: every basis of the job fitted on every layer's activations. The codes
    reference the pooled matrices rather than copy them (:class:`stimuli.scores.Codes`), so what this
    stage adds per (layer, basis) does not grow with the number of images for neurons and PCA."""
    from .bases import make_basis
    from .scores import Codes

    jobs = [(layer, b) for layer in config.activations.layers for b in config.bases.names]
    fitted: dict[tuple[str, str], Fitted] = {}
    report("bases", 0.0)
    for j, (layer, name) in enumerate(jobs):
        A = acts.values[layer]
        basis = make_basis(name, **_basis_params(config, name))
        # the unit's score (stimuli.scores) ranks the images, as it drives feature visualizations
        fitted[(layer, name)] = Fitted(basis, Codes(basis.fit(A), A))
        report("bases", (j + 1) / len(jobs))
    return fitted


def _unit_measures(fitted: Fitted, std: np.ndarray, rank: np.ndarray, unit: int, exemplars,
                   influence: dict | None, score) -> dict:
    """A chosen unit's measures: its share of the variance, its responses, its query bands, and its
    influence and machine score where those were computed."""
    basis, codes = fitted
    measures = {
        "explained_variance_ratio": round(float(basis.explained_variance_ratio_[unit]), 6),
        "variance_rank": int(rank[unit]) + 1,
        "response_mean": round(float(codes.mean[unit]), 6), "response_std": round(float(std[unit]), 6),
        "response_min": round(float(codes.min[unit]), 6), "response_max": round(float(codes.max[unit]), 6),
        "query_max_threshold": round(exemplars.band_max_threshold, 6),
        "query_min_threshold": round(exemplars.band_min_threshold, 6),
    }
    if influence:
        measures["influence"] = round(float(influence["code"][unit]), 6)
        measures["influence_direction"] = round(float(influence["direction"][unit]), 6)
        measures["influence_rank"] = int(influence["rank"][unit]) + 1
    if score is not None:
        measures.update(_mis_measures(score))
    return measures


def choose_units(config: StimulusConfig, inputs: Inputs, fitted: dict[tuple[str, str], Fitted],
                 influence: dict, report: Progress) -> Chosen:
    """Stage ``exemplars``: the units of each (layer, basis) a study shows, with their exemplars and
    measures (:mod:`stimuli.selection`, :mod:`stimuli.exemplars`, :mod:`stimuli.measures.mis`)."""
    from .measures.completeness import unit_order
    from .measures.mis import machine_score_details
    from .selection import select_units

    report("exemplars", 0.0)
    embeddings = _mis_embeddings(config, inputs.net, inputs.images, inputs.device) \
        if config.mis.layer is not None else None
    units: dict[tuple[str, str], list[ChosenUnit]] = {}
    selections: dict[tuple[str, str], dict] = {}
    for j, key in enumerate(fitted):
        layer, name = key
        basis, codes = fitted[key]
        std = codes.std
        exemplars_of = partial(_unit_exemplars, config, codes, layer, name)
        if config.selection.method in MIS_SELECTIONS:
            candidates = select_units(basis.explained_variance_ratio_, config.mis.candidates, "top_variance",
                                      responses_std=std)
            picked, selections[key] = _choose_by_machine_score(
                config, candidates, exemplars_of, embeddings, config.selection.units_for(name),
                f"{layer}/{name}",
                lambda f, j=j: report("exemplars", (j + f) / len(fitted)))
        else:
            chosen = select_units(basis.explained_variance_ratio_, config.selection.units_for(name),
                                  config.selection.method,
                                  seed=config.seed, responses_std=std, key=key,
                                  influence=influence[key]["direction"] if influence else None)
            exemplars = [exemplars_of(u) for u in chosen]
            scores = machine_score_details(embeddings, exemplars, alpha=config.mis.alpha) \
                if embeddings is not None else [None] * len(chosen)
            picked = [(int(u), ex, score) for u, ex, score in zip(chosen, exemplars, scores)]
        rank = np.empty(len(std), dtype=np.int64)
        rank[unit_order(basis)] = np.arange(len(std))
        units[key] = [ChosenUnit(u, ex, _unit_measures(fitted[key], std, rank, u, ex, influence.get(key), score))
                      for u, ex, score in picked]
        report("exemplars", (j + 1) / len(fitted))
    return Chosen(units=units, selections=selections)


def render_images(config: StimulusConfig, inputs: Inputs, fitted: dict[tuple[str, str], Fitted], chosen: Chosen,
                  writer: ArtifactWriter, report: Progress) -> Rendered:
    """Stage ``render``: a PNG of every image an exemplar shows, and the attribution overlays."""
    from concurrent.futures import ThreadPoolExecutor

    from .render import render

    report("render", 0.0)
    images = inputs.images
    needed = chosen.image_indices()
    files: dict[int, str] = {}
    size = config.render.size or images.default_display_size
    # PIL releases the GIL while decoding, resizing and compressing, so threads render in parallel;
    # map keeps the order, and files are written from this thread only
    with ThreadPoolExecutor(max_workers=max(1, min(8, os.cpu_count() or 1))) as pool:
        rendered = pool.map(lambda i: render(images.display(i, size))[1], needed)
        for j, (i, data) in enumerate(zip(needed, rendered)):
            files[i] = writer.add_image(data)
            if (j + 1) % 64 == 0 or j + 1 == len(needed):
                report("render", (j + 1) / len(needed))
    overlays = _attribution_overlays(config, inputs.net, images, fitted, chosen.units, writer, size, inputs.device) \
        if config.attribution.overlays else {}
    report("render", 1.0)
    return Rendered(files=files, overlays=overlays, size=size)


def _completeness(config: StimulusConfig, inputs: Inputs, layer: str, basis, progress: Callable[[float], None]):
    """``(completeness, error)`` of a basis at its layer: the measure, or None and the reason it could
    not be taken (a layer whose output cannot be replaced)."""
    from .measures.completeness import default_k, network_completeness
    from .selection import unit_rng

    if not config.completeness.enabled:
        return None, None
    images = inputs.images
    labels = _network_labels(inputs)
    if config.completeness.max_images and len(images) > config.completeness.max_images:
        sub = np.sort(unit_rng(config.seed, "completeness").choice(
            len(images), size=config.completeness.max_images, replace=False))
        images = images.subset(sub)
        labels = None if labels is None else labels[sub]
    try:
        ks = config.completeness.k or default_k(basis.n_components_)
        return network_completeness(inputs.net.model, images, inputs.net.preprocess, layer, basis, ks,
                                    config.activations.activation, labels=labels, device=inputs.device,
                                    batch_size=config.activations.batch_size, progress=progress), None
    except (ValueError, RuntimeError) as exc:
        error = str(exc).splitlines()[0]
        log.warning("completeness skipped for %s/%s: %s", layer, basis.name, error)
        return None, error


def _network_labels(inputs: Inputs) -> np.ndarray | None:
    """The images' labels where the image set's classes are the network's, else None (the network's
    own predictions then stand in)."""
    images, net = inputs.images, inputs.net
    if images.labels is not None and net.class_names and images.class_names == net.class_names:
        return images.labels
    return None


def _layout_keys(acts, layer: str, pooling: str) -> dict:
    """A layer entry's ``layout`` (BCHW, BTC, BHWC or BC), its patch grid and prefix tokens, and the
    pooling that made one value per channel (:class:`stimuli.layers.Layout`)."""
    layout = acts.layout(layer)
    if layout is None:
        return {}
    keys = layout.describe()
    keys.pop("n_channels")
    return {**keys, "pooling": pooling}


def _unit_entry(layer: str, name: str, unit: ChosenUnit, rendered: Rendered, synthetic: dict,
                occlusion: dict | None = None) -> dict:
    files = rendered.files
    ex = unit.exemplars
    entry = {
        "index": unit.index,
        "id": f"{layer}:{name}:{unit.index}",
        "measures": unit.measures,
        "references_max": [files[int(i)] for i in ex.references_max],
        "references_min": [files[int(i)] for i in ex.references_min],
        "queries_max": [files[int(i)] for i in ex.queries_max],
        "queries_min": [files[int(i)] for i in ex.queries_min],
        "queries_max_percentile": [float(p) for p in ex.queries_max_percentile],
        "queries_min_percentile": [float(p) for p in ex.queries_min_percentile],
        "strip": [files[int(i)] for i in ex.strip],
        "strips": [[files[int(i)] for i in row] for row in ex.strips],
    }
    entry.update(synthetic.get((layer, name, unit.index), {}))
    entry.update((occlusion or {}).get((layer, name, unit.index), {}))
    if rendered.overlays:
        entry["attribution_overlays_max"] = rendered.overlays[(layer, name, unit.index)]
    return entry


class Synthetic(NamedTuple):
    """What the ``featurevis`` stage wrote: each unit's ``synthetic_max`` / ``synthetic_min`` files by
    (layer, basis, unit), and the manifest's ``feature_vis`` entry (None when off)."""

    files: dict[tuple[str, str, int], dict]
    entry: dict | None


def feature_visualizations(config: StimulusConfig, inputs: Inputs, fitted: dict[tuple[str, str], Fitted],
                           chosen: Chosen, writer: ArtifactWriter, size: int, report: Progress) -> Synthetic:
    """Stage ``featurevis``: synthetic references of every chosen unit (:mod:`stimuli.featurevis`), their
    scores added to the units' measures; nothing when ``feature_vis`` is off."""
    report("featurevis", 0.0)
    synthetic = Synthetic({}, None)
    if config.feature_vis.enabled:
        from .featurevis import synthetic_references

        act = config.activations
        synthetic = Synthetic(*synthetic_references(
            config.feature_vis, inputs.net, inputs.images, fitted, chosen.units, writer, size, inputs.device, report,
            n_references=config.exemplars.n_references, pooling=act.pooling, activation=act.activation,
            batch_size=act.batch_size))
    report("featurevis", 1.0)
    return synthetic


def occlusion_pairs(config: StimulusConfig, inputs: Inputs, fitted: dict[tuple[str, str], Fitted], chosen: Chosen,
                    writer: ArtifactWriter, size: int, report: Progress) -> dict:
    """Stage ``occlusion``: each chosen unit's occlusion pairs and catch pairs (:mod:`stimuli.measures.occlusion`),
    scored on their PNGs; nothing when ``occlusion.pairs_per_unit`` is 0."""
    from .measures.occlusion import occlusion_stage

    report("occlusion", 0.0)
    act = config.activations
    out = occlusion_stage(config.occlusion, inputs.net, inputs.images, fitted, chosen.units, writer, size,
                          inputs.device, report, seed=config.seed, pooling=act.pooling, activation=act.activation,
                          batch_size=act.batch_size)
    report("occlusion", 1.0)
    return out


def measure_decisions(config: StimulusConfig, inputs: Inputs, fitted: dict[tuple[str, str], Fitted],
                      chosen: Chosen, influence: dict, report: Progress):
    """Part of stage ``measures``: the decision measures of :mod:`stimuli.measures.decisions` (essence, ablation,
    label purity, surrogate rules), added to each chosen unit's measures; the per-layer entries are
    returned for :func:`layer_entries`."""
    report("measures", 0.0)
    decisions = decision_measures(config.decisions, inputs.net, inputs.images, fitted, chosen.units, influence,
                                  inputs.device, cls=config.influence.class_index, versus=config.influence.versus,
                                  seed=config.seed, activation=config.activations.activation,
                                  batch_size=config.activations.batch_size)
    for (layer, name), units in chosen.units.items():
        for unit in units:
            unit.measures.update(decisions.unit_measures(layer, name, unit.index))
    return decisions


def layer_entries(config: StimulusConfig, inputs: Inputs, acts, fitted: dict[tuple[str, str], Fitted],
                  influence: dict, chosen: Chosen, rendered: Rendered, synthetic: Synthetic, decisions,
                  report: Progress, occlusion: dict | None = None, timings: dict | None = None) -> list[dict]:
    """Stage ``measures``: the manifest's entry of each (layer, basis): the basis's variance curves and
    completeness, its decision measures, and its chosen units with their files. ``timings``, when given,
    gets the seconds spent on completeness under ``"completeness"``."""
    from .measures.completeness import cumulative_explained_variance, unit_order

    report("measures", 0.0)
    entries = []
    for j, key in enumerate(fitted):
        layer, name = key
        basis, codes = fitted[key]
        A = acts.values[layer]
        cum = cumulative_explained_variance(basis, A, codes)
        started = time.perf_counter()
        completeness, completeness_error = _completeness(config, inputs, layer, basis,
                                                         lambda f, j=j: report("measures", (j + f) / len(fitted)))
        if timings is not None:
            timings["completeness"] = timings.get("completeness", 0.0) + time.perf_counter() - started
        entry = {
            "layer": layer, "basis": name, "n_components": basis.n_components_,
            "n_channels": int(A.shape[1]),
            "activation_shape": list(acts.shapes.get(layer, ())) if acts.shapes else None,
            **_layout_keys(acts, layer, config.activations.pooling),
            "explained_variance_ratio": _r(basis.explained_variance_ratio_),
            "cumulative_explained_variance": _r(cum),
            "cumulative_order": [int(i) for i in unit_order(basis)],
            "completeness": completeness,
            "units": [_unit_entry(layer, name, u, rendered, synthetic.files, occlusion) for u in chosen.units[key]],
        }
        if completeness_error:
            entry["completeness_error"] = completeness_error
        if key in chosen.selections:
            entry["selection"] = chosen.selections[key]
        if influence:
            entry["influence_quantity"] = influence[key]["quantity"]
            entry["influence_concentration"] = _r(influence[key]["concentration"])
        if rendered.overlays:
            entry["attribution_method"] = config.attribution.method
        entry.update(decisions.layer_entry(layer, name))
        if hasattr(basis, "reconstruction_err_"):
            entry["reconstruction_error"] = round(float(basis.reconstruction_err_), 6)
        entries.append(entry)
        report("measures", (j + 1) / len(fitted))
    return entries


def region_sobol(config: StimulusConfig, inputs: Inputs, writer: ArtifactWriter, size: int,
                 report: Progress) -> dict | None:
    """Stage ``sobol``: the manifest's ``sobol`` entry, or None with ``sobol_images = 0``."""
    report("sobol", 0.0)
    sobol = _region_sobol(config, inputs.net, inputs.images, writer, size, inputs.device, report) \
        if config.sobol.images else None
    report("sobol", 1.0)
    return sobol


def write_manifest(config: StimulusConfig, inputs: Inputs, acts, layers: list[dict], sobol: dict | None,
                   figures: list[dict], feature_vis: dict | None, writer: ArtifactWriter, report: Progress,
                   timings: dict | None = None) -> Path:
    """Stage ``write``: the manifest (:func:`stimuli.artifact.build_manifest`), and the artifact
    renamed into place. ``timings`` is the :class:`StageClock`'s record of the stages before this one."""
    import torch

    report("write", 0.0)
    dataset = inputs.images.describe()
    dataset["n_skipped"] = int(dataset["n_skipped"] + acts.n_failed)
    dataset["n_images"] = len(inputs.images)
    device = inputs.device
    # the flat form, whose feature_vis is false or the full mapping with its defaults filled in
    parameters = {k: v for k, v in config.to_dict().items() if k not in ("network", "dataset", "seed")}
    manifest = build_manifest(
        network=inputs.net.describe(), dataset=dataset, seed=config.seed, parameters=parameters,
        layers=layers, n_images_rendered=writer.n_images, device=str(device), sobol=sobol, figures=figures,
        feature_vis=feature_vis, timings=timings,
        device_name=torch.cuda.get_device_name(device) if device.type == "cuda" else None)
    path = writer.commit(manifest)
    report("write", 1.0)
    return path


class StageClock:
    """Wall seconds per stage of :data:`STAGES` and per part of ``measures``, for the manifest's
    ``timings`` (docs/contracts.md, section 1). ``write`` is not among them: its clock would stop after
    the manifest it is recorded in was written."""

    def __init__(self) -> None:
        self.stages: dict[str, float] = {}
        self.measures: dict[str, float] = {}
        self._start = time.perf_counter()

    def timed(self, stage: str, fn: Callable, *args, part: str | None = None, **kwargs):
        """``fn(*args, **kwargs)``, its seconds added to ``stage`` (and to ``part`` of ``measures``)."""
        started = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            seconds = time.perf_counter() - started
            self.stages[stage] = self.stages.get(stage, 0.0) + seconds
            if part is not None:
                self.measures[part] = self.measures.get(part, 0.0) + seconds

    def record(self) -> dict:
        """The manifest's ``timings``: every stage before ``write`` (0 for one that had nothing to do),
        the parts of ``measures``, and the total so far, in seconds rounded to milliseconds."""
        def ms(v: float) -> float:
            return round(v, 3)

        return {"stages": {s: ms(self.stages.get(s, 0.0)) for s in STAGES if s != "write"},
                "measures": {k: ms(v) for k, v in self.measures.items()},
                "total": ms(time.perf_counter() - self._start)}


def run(config: StimulusConfig | dict, out_dir: str | os.PathLike, progress: Progress | None = None,
        overwrite: bool = False, activations=None, images=None) -> Path:
    """Generate one stimulus artifact in ``out_dir`` (docs/contracts.md, section 1) and return its path.

    ``progress(stage, fraction)`` is called with the stages of :data:`STAGES`. ``out_dir`` must not
    exist unless ``overwrite``; it is replaced only once the new artifact is complete. ``activations``,
    when given, are the image set's pooled activations computed elsewhere (the shards of
    :mod:`stimuli.shards`, merged), and the pipeline starts from them. ``images``, when given, is the
    image set of the job's dataset (max_images applied) that those activations number, as
    :func:`stimuli.shards.listed_images` rebuilds it, in place of scanning the folder again.
    """
    if isinstance(config, dict):
        config = StimulusConfig.from_dict(config)
    out_dir = Path(out_dir)
    if out_dir.exists() and not overwrite:
        raise FileExistsError(f"output folder already exists: {out_dir}")

    def report(stage: str, fraction: float) -> None:
        if progress is not None:
            progress(stage, float(min(1.0, max(0.0, fraction))))

    clock = StageClock()
    inputs = clock.timed("network", load_inputs, config, report, images=images)
    acts, inputs = clock.timed("activations", read_activations, config, inputs, report, activations)
    fitted = clock.timed("bases", fit_bases, config, acts, report)
    influence = clock.timed("bases", measure_influence, config, inputs, fitted)
    chosen = clock.timed("exemplars", choose_units, config, inputs, fitted, influence, report)
    with ArtifactWriter(out_dir, overwrite=overwrite) as writer:
        rendered = clock.timed("render", render_images, config, inputs, fitted, chosen, writer, report)
        synthetic = clock.timed("featurevis", feature_visualizations, config, inputs, fitted, chosen, writer,
                                rendered.size, report)
        occlusion = clock.timed("occlusion", occlusion_pairs, config, inputs, fitted, chosen, writer, rendered.size,
                                report)
        decisions = clock.timed("measures", measure_decisions, config, inputs, fitted, chosen, influence, report,
                                part="decisions")
        layers = clock.timed("measures", layer_entries, config, inputs, acts, fitted, influence, chosen, rendered,
                             synthetic, decisions, report, occlusion, timings=clock.measures)
        figures = clock.timed("measures", draw_figures, layers, writer.tmp, part="figures") \
            if config.render.figures else []
        sobol = clock.timed("sobol", region_sobol, config, inputs, writer, rendered.size, report)
        return write_manifest(config, inputs, acts, layers, sobol, figures, synthetic.entry, writer, report,
                              timings=clock.record())
