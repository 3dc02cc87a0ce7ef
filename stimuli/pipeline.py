"""The stimulus job: network → activations → bases → units → exemplars → PNGs → measures → region
Sobol indices → artifact."""

from __future__ import annotations

import datetime as _dt
import logging
import os
from functools import partial
from pathlib import Path
from typing import Any, Callable

import numpy as np

from . import SCHEMA_VERSION, __version__
from .artifact import ArtifactWriter
from .config import MIS_SELECTIONS, StimulusConfig

log = logging.getLogger(__name__)

STAGES = ("network", "activations", "bases", "exemplars", "render", "featurevis", "measures", "sobol", "write")

Progress = Callable[[str, float], None]


def versions() -> dict[str, str]:
    import PIL
    import sklearn
    import torch
    import torchvision

    return {"stimuli": __version__, "torch": torch.__version__, "torchvision": torchvision.__version__,
            "scikit-learn": sklearn.__version__, "numpy": np.__version__, "pillow": PIL.__version__}


def _basis_params(config: StimulusConfig, name: str) -> dict[str, Any]:
    params: dict[str, Any] = {"n_components": config.components_for(name), "random_state": config.seed}
    if name == "nmf":
        params.update(config.nmf_params())
    elif name == "dictionary":
        params.update(config.dictionary_params())
    elif name == "sae":
        params.update(config.sae_params(), device=config.device)
    return params


def _r(values, digits: int = 6) -> list[float]:
    return [round(float(v), digits) for v in np.asarray(values).ravel()]


def _influence(config: StimulusConfig, net, images, fitted: dict, device, report) -> dict:
    """Per (layer, basis): the units' influence on the class of interest (stimuli.influence), read
    from one backward pass per layer. Ranking and concentration use the direction form."""
    from .influence import Quantity, concentration, influence_from_gradient, influence_order, pooled_gradient
    from .selection import unit_rng

    quantity = Quantity(config.influence_class, config.influence_versus)
    if net.n_classes:
        quantity.check(net.n_classes)
    labels = images.labels if images.labels is not None and net.class_names \
        and images.class_names == net.class_names else None
    pool_images, pool_labels = images, labels
    if config.influence_distribution == "class" and labels is not None:
        keep = np.flatnonzero(np.asarray(labels) == quantity.cls)
        pool_images, pool_labels = images.subset(keep), np.asarray(labels)[keep]
    limit = config.influence_max_images
    if limit and len(pool_images) > limit:
        sub = np.sort(unit_rng(config.seed, "influence").choice(len(pool_images), size=limit, replace=False))
        pool_images = pool_images.subset(sub)
        pool_labels = None if pool_labels is None else pool_labels[sub]
    out = {}
    for layer in config.layers:
        g, n = pooled_gradient(net.model, pool_images, net.preprocess, layer, quantity,
                               activation=config.activation, pooling=config.pooling,
                               distribution=config.influence_distribution, labels=pool_labels, device=device,
                               batch_size=config.batch_size)
        for name in config.bases:
            basis = fitted[(layer, name)][0]
            chi, direction = influence_from_gradient(basis, g), influence_from_gradient(basis, g, per="direction")
            rank = np.empty(len(chi), dtype=np.int64)
            rank[influence_order(direction)] = np.arange(len(chi))
            out[(layer, name)] = {
                "code": chi, "direction": direction, "rank": rank, "concentration": concentration(direction),
                "quantity": {**quantity.to_dict(), "distribution": config.influence_distribution, "n_images": n,
                             "reference": "labels" if labels is not None else "predictions"},
            }
    return out


def _attribution_overlays(config: StimulusConfig, net, images, fitted: dict, chosen: dict, writer, size,
                          device) -> dict:
    """Per (layer, basis, unit): overlay files aligned with the unit's ``references_max``."""
    from .attribution import attribution_overlays
    from .render import render

    out = {}
    for (layer, name), entries in chosen.items():
        basis = fitted[(layer, name)][0]
        for u, ex, _measures in entries:
            pictures = attribution_overlays(net.model, images, net.preprocess, ex.references_max, layer, basis, u,
                                            config.attribution_method, size=size, activation=config.activation,
                                            pooling=config.pooling, device=device)
            out[(layer, name, u)] = [writer.add_image(render(p)[1]) for p in pictures]
    return out


def _unit_exemplars(config: StimulusConfig, codes: np.ndarray, layer: str, basis: str, unit: int):
    """A unit's exemplars, seeded by the unit's own name (not its position among the chosen), so that a
    unit gets the same exemplars however it was chosen."""
    from .exemplars import select_exemplars
    from .selection import unit_rng

    return select_exemplars(codes[:, unit], config.n_references, config.query_percentile, config.n_queries,
                            config.strip_length, rng=unit_rng(config.seed, "queries", layer, basis, str(unit)),
                            n_strips=config.n_strips)


def _mis_embeddings(config: StimulusConfig, net, images, device):
    """The machine observer's embedding of every image, computed once for all units and bases. Centred
    on the image set's own mean: raw post-ReLU activations make every cosine similarity high and squash
    the score towards 0.5."""
    from .mis import embed_images

    return embed_images(images, net.model, net.preprocess, config.mis_layer, pooling=config.pooling,
                        activation=config.activation, device=device, batch_size=config.batch_size).centred()


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
    from .mis import machine_score_details
    from .selection import select_by_score

    exemplars = []
    for c, u in enumerate(candidates):
        exemplars.append(exemplars_of(u))
        progress((c + 1) / len(candidates))
    scores = machine_score_details(embeddings, exemplars, alpha=config.mis_alpha)
    mis = np.array([s.mis for s in scores], dtype=np.float64)
    picked = select_by_score(mis, n_units, config.unit_selection.removeprefix("mis_"))
    if len(picked) == 0:
        raise ValueError(f"no candidate unit of {where} has a machine score (no query pairs): raise "
                         "query_percentile or use more images")
    record = {"by": config.unit_selection, "candidates": [int(u) for u in candidates],
              "scores": [round(float(v), 6) if np.isfinite(v) else None for v in mis]}
    return [(int(candidates[p]), exemplars[p], scores[p]) for p in picked], record


def _region_sobol(config: StimulusConfig, net, images, writer, size, device, report) -> dict:
    """The manifest's ``sobol`` entry: Sobol-SBSA region indices of the network's decision (its
    prediction) for ``config.sobol_images`` images spread over the classes, and the network's
    interaction share. First and total order only: the share needs no second-order indices, which
    would double the forward passes."""
    from .render import render
    from .selection import unit_rng
    from .sobol import choose_images, region_sobol_images, share_summary

    chosen = choose_images(len(images), config.sobol_images, images.labels, unit_rng(config.seed, "sobol"))
    results = region_sobol_images(net.model, images, net.preprocess, chosen, grid=config.sobol_grid,
                                  n_samples=config.sobol_n_samples, perturbation=config.sobol_perturbation,
                                  device=device, batch_size=config.batch_size, second_order=False,
                                  seed=config.seed, progress=lambda f: report("sobol", f))
    per_image = []
    for i, res in zip(chosen, results):
        d = res.to_dict()
        per_image.append({
            "index": int(i), "image_id": images.image_id(int(i)),
            "image": writer.add_image(render(images.display(int(i), size))[1]),
            "label": None if images.labels is None else int(images.labels[int(i)]),
            "target_class": res.target_class,
            **{k: d[k] for k in ("S1", "ST", "S1_conf", "ST_conf", "interaction_share", "variance")},
        })
    first = results[0]
    return {
        "grid": list(first.grid), "n_samples": config.sobol_n_samples, "n_base": first.n_base,
        "n_forwards_per_image": first.n_forwards, "perturbation": config.sobol_perturbation,
        "output": first.output, "target": "prediction", "second_order": False,
        "images": per_image,
        "interaction_share": share_summary([res.interaction_share for res in results]),
    }


def run(config: StimulusConfig | dict, out_dir: str | os.PathLike, progress: Progress | None = None,
        overwrite: bool = False) -> Path:
    """Generate one stimulus artifact in ``out_dir`` (docs/contracts.md, section 1) and return its path.

    ``progress(stage, fraction)`` is called with the stages of :data:`STAGES`. ``out_dir`` must not
    exist unless ``overwrite``; it is replaced only once the new artifact is complete.
    """
    import torch

    from . import activations as act
    from .bases import make_basis
    from .completeness import cumulative_explained_variance, default_k, network_completeness, unit_order
    from .datasets import load_dataset
    from .exemplars import strip_ranks
    from .mis import machine_score_details
    from .networks import load_network, resolve_device
    from .render import render
    from .scores import score_matrix
    from .selection import select_units, unit_rng

    if isinstance(config, dict):
        config = StimulusConfig.from_dict(config)
    out_dir = Path(out_dir)
    if out_dir.exists() and not overwrite:
        raise FileExistsError(f"output folder already exists: {out_dir}")

    def report(stage: str, fraction: float) -> None:
        if progress is not None:
            progress(stage, float(min(1.0, max(0.0, fraction))))

    # -- network ----------------------------------------------------------------------------------
    report("network", 0.0)
    device = resolve_device(config.device)
    net = load_network(config.network, weights=config.weights, architecture=config.architecture,
                       num_classes=config.num_classes, allow_download=config.allow_download,
                       log=log.info)
    images = load_dataset(config.dataset, max_images=config.max_images, seed=config.seed)
    report("network", 1.0)

    # -- activations ------------------------------------------------------------------------------
    report("activations", 0.0)
    acts = act.extract(net.model, images, net.preprocess, config.layers, pooling=config.pooling,
                       activation=config.activation, device=device, batch_size=config.batch_size,
                       num_workers=config.num_workers, progress=lambda f: report("activations", f))
    if len(acts.indices) < len(images):
        images = images.subset(acts.indices)
    n_images = len(images)
    # refuse an image set too small for the strips now, not after the bases are fitted
    strip_ranks(n_images, config.strip_length, config.n_strips)
    report("activations", 1.0)

    # -- bases ------------------------------------------------------------------------------------
    jobs = [(layer, b) for layer in config.layers for b in config.bases]
    fitted: dict[tuple[str, str], tuple[Any, np.ndarray]] = {}
    report("bases", 0.0)
    for j, (layer, name) in enumerate(jobs):
        A = acts.values[layer]
        basis = make_basis(name, **_basis_params(config, name))
        # the unit's score (stimuli.scores) ranks the images, as it drives feature visualizations
        codes = score_matrix(basis.fit(A), A)
        fitted[(layer, name)] = (basis, codes)
        report("bases", (j + 1) / len(jobs))
    influence = _influence(config, net, images, fitted, device, report) if config.influence_class is not None else {}

    # -- units and exemplars ----------------------------------------------------------------------
    report("exemplars", 0.0)
    embeddings = _mis_embeddings(config, net, images, device) if config.mis_layer is not None else None
    chosen: dict[tuple[str, str], list[tuple[int, Any, dict]]] = {}
    selections: dict[tuple[str, str], dict] = {}
    for j, (layer, name) in enumerate(jobs):
        basis, codes = fitted[(layer, name)]
        std = codes.std(axis=0)
        exemplars_of = partial(_unit_exemplars, config, codes, layer, name)
        if config.unit_selection in MIS_SELECTIONS:
            candidates = select_units(basis.explained_variance_ratio_, config.mis_candidates, "top_variance",
                                      responses_std=std)
            picked, selections[(layer, name)] = _choose_by_machine_score(
                config, candidates, exemplars_of, embeddings, config.units_for(name), f"{layer}/{name}",
                lambda f: report("exemplars", (j + f) / len(jobs)))
        else:
            units = select_units(basis.explained_variance_ratio_, config.units_for(name), config.unit_selection,
                                 seed=config.seed, responses_std=std, key=(layer, name),
                                 influence=influence[(layer, name)]["direction"] if influence else None)
            exemplars = [exemplars_of(u) for u in units]
            scores = machine_score_details(embeddings, exemplars, alpha=config.mis_alpha) \
                if embeddings is not None else [None] * len(units)
            picked = [(int(u), ex, score) for u, ex, score in zip(units, exemplars, scores)]
        rank = np.empty(len(std), dtype=np.int64)
        rank[unit_order(basis)] = np.arange(len(std))
        entries = []
        for u, ex, score in picked:
            r = codes[:, u]
            measures = {
                "explained_variance_ratio": round(float(basis.explained_variance_ratio_[u]), 6),
                "variance_rank": int(rank[u]) + 1,
                "response_mean": round(float(r.mean()), 6), "response_std": round(float(std[u]), 6),
                "response_min": round(float(r.min()), 6), "response_max": round(float(r.max()), 6),
                "query_max_threshold": round(ex.band_max_threshold, 6),
                "query_min_threshold": round(ex.band_min_threshold, 6),
            }
            if influence:
                infl = influence[(layer, name)]
                measures["influence"] = round(float(infl["code"][u]), 6)
                measures["influence_direction"] = round(float(infl["direction"][u]), 6)
                measures["influence_rank"] = int(infl["rank"][u]) + 1
            if score is not None:
                measures.update(_mis_measures(score))
            entries.append((u, ex, measures))
        chosen[(layer, name)] = entries
        report("exemplars", (j + 1) / len(jobs))

    needed = sorted({int(i) for entries in chosen.values() for _, ex, _ in entries for i in ex.all_indices()})

    with ArtifactWriter(out_dir, overwrite=overwrite) as writer:
        # -- render -------------------------------------------------------------------------------
        report("render", 0.0)
        files: dict[int, str] = {}
        size = config.render_size or images.default_display_size
        # PIL releases the GIL while decoding, resizing and compressing, so threads render in parallel;
        # map keeps the order, and files are written from this thread only
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(max_workers=max(1, min(8, os.cpu_count() or 1))) as pool:
            rendered = pool.map(lambda i: render(images.display(i, size))[1], needed)
            for j, (i, data) in enumerate(zip(needed, rendered)):
                files[i] = writer.add_image(data)
                if (j + 1) % 64 == 0 or j + 1 == len(needed):
                    report("render", (j + 1) / len(needed))
        overlays = _attribution_overlays(config, net, images, fitted, chosen, writer, size, device) \
            if config.attribution_overlays else {}
        report("render", 1.0)

        # -- featurevis (stimuli.featurevis): synthetic references, measures added to `chosen` --------
        report("featurevis", 0.0)
        synthetic, feature_vis = {}, None
        if config.feature_vis_params() is not None:
            from .featurevis import synthetic_references
            synthetic, feature_vis = synthetic_references(config, net, images, fitted, chosen, writer, size,
                                                          device, report)
        report("featurevis", 1.0)
        # -- end featurevis ---------------------------------------------------------------------

        # -- measures -----------------------------------------------------------------------------
        report("measures", 0.0)
        layer_entries = []
        labels = None
        if images.labels is not None and net.class_names and images.class_names == net.class_names:
            labels = images.labels
        comp_images = images
        comp_labels = labels
        if config.completeness_max_images and n_images > config.completeness_max_images:
            sub = np.sort(unit_rng(config.seed, "completeness").choice(
                n_images, size=config.completeness_max_images, replace=False))
            comp_images = images.subset(sub)
            comp_labels = None if labels is None else labels[sub]
        for j, (layer, name) in enumerate(jobs):
            basis, codes = fitted[(layer, name)]
            A = acts.values[layer]
            cum = cumulative_explained_variance(basis, A, codes)
            completeness = None
            completeness_error = None
            if config.completeness:
                try:
                    ks = config.completeness_k or default_k(basis.n_components_)
                    completeness = network_completeness(
                        net.model, comp_images, net.preprocess, layer, basis, ks, config.activation,
                        labels=comp_labels, device=device, batch_size=config.batch_size,
                        progress=lambda f: report("measures", (j + f) / len(jobs)))
                except (ValueError, RuntimeError) as exc:
                    completeness_error = str(exc).splitlines()[0]
                    log.warning("completeness skipped for %s/%s: %s", layer, name, completeness_error)
            units_out = []
            for u, ex, measures in chosen[(layer, name)]:
                units_out.append({
                    "index": u,
                    "id": f"{layer}:{name}:{u}",
                    "measures": measures,
                    "references_max": [files[int(i)] for i in ex.references_max],
                    "references_min": [files[int(i)] for i in ex.references_min],
                    "queries_max": [files[int(i)] for i in ex.queries_max],
                    "queries_min": [files[int(i)] for i in ex.queries_min],
                    "strip": [files[int(i)] for i in ex.strip],
                    "strips": [[files[int(i)] for i in row] for row in ex.strips],
                })
                units_out[-1].update(synthetic.get((layer, name, u), {}))
                if overlays:
                    units_out[-1]["attribution_overlays_max"] = overlays[(layer, name, u)]
            entry = {
                "layer": layer, "basis": name, "n_components": basis.n_components_,
                "n_channels": int(A.shape[1]),
                "activation_shape": list(acts.shapes.get(layer, ())) if acts.shapes else None,
                "explained_variance_ratio": _r(basis.explained_variance_ratio_),
                "cumulative_explained_variance": _r(cum),
                "cumulative_order": [int(i) for i in unit_order(basis)],
                "completeness": completeness,
                "units": units_out,
            }
            if completeness_error:
                entry["completeness_error"] = completeness_error
            if (layer, name) in selections:
                entry["selection"] = selections[(layer, name)]
            if influence:
                infl = influence[(layer, name)]
                entry["influence_quantity"] = infl["quantity"]
                entry["influence_concentration"] = _r(infl["concentration"])
            if overlays:
                entry["attribution_method"] = config.attribution_method
            if hasattr(basis, "reconstruction_err_"):
                entry["reconstruction_error"] = round(float(basis.reconstruction_err_), 6)
            layer_entries.append(entry)
            report("measures", (j + 1) / len(jobs))

        # -- sobol --------------------------------------------------------------------------------
        report("sobol", 0.0)
        sobol = _region_sobol(config, net, images, writer, size, device, report) if config.sobol_images else None
        report("sobol", 1.0)

        # -- write --------------------------------------------------------------------------------
        report("write", 0.0)
        dataset_info = images.describe()
        dataset_info["n_skipped"] = int(dataset_info["n_skipped"] + acts.n_failed)
        dataset_info["n_images"] = n_images
        manifest = {
            "schema_version": SCHEMA_VERSION,
            "created": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "network": net.describe(),
            "dataset": dataset_info,
            "seed": config.seed,
            "parameters": {k: v for k, v in config.to_dict().items() if k not in ("network", "dataset", "seed")},
            "versions": versions(),
            "device": str(device),
            "n_images_rendered": writer.n_images,
            "layers": layer_entries,
        }
        if sobol is not None:
            manifest["sobol"] = sobol
        if feature_vis is not None:
            manifest["parameters"]["feature_vis"] = config.feature_vis_params()
            manifest["feature_vis"] = feature_vis
        if device.type == "cuda":
            manifest["device_name"] = torch.cuda.get_device_name(device)
        path = writer.commit(manifest)
        report("write", 1.0)
    return path
