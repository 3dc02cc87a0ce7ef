"""The stimulus artifact (docs/contracts.md, section 1): its manifest built, validated and read here
and nowhere else, and the folder written into a temporary sibling, then renamed into place, so
``out_dir`` either does not exist or is complete. The web app imports artifacts through
:func:`read_manifest`."""

from __future__ import annotations

import datetime as _dt
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .render import IMAGES_DIR, content_name

MANIFEST = "manifest.json"
# the manifest versions this package reads; it writes the last
SCHEMA_VERSIONS = (1,)
SCHEMA_VERSION = SCHEMA_VERSIONS[-1]


#: the stages of a job (stimuli.pipeline.run), in their order: the names its progress calls and its
#: manifest's ``timings`` use (docs/contracts.md, section 1)
STAGES = ("network", "activations", "bases", "exemplars", "render", "featurevis", "occlusion", "measures", "sobol",
          "write")


class ManifestError(ValueError):
    """A manifest that is missing, not JSON, of an unknown schema version, or not shaped as the
    contract says."""


class ArtifactWriter:
    """Use as a context manager; images are added as they are rendered, the manifest last.

    Leaving the block with an exception removes the temporary folder and leaves ``out_dir``
    untouched; leaving it after :meth:`commit` has renamed the folder into place.
    """

    def __init__(self, out_dir: str | os.PathLike, overwrite: bool = False) -> None:
        self.out_dir = Path(out_dir).expanduser().absolute()
        self.overwrite = overwrite
        self.tmp: Path | None = None
        self.committed = False
        self._names: set[str] = set()

    def __enter__(self) -> ArtifactWriter:
        if self.out_dir.exists() and not self.overwrite:
            raise FileExistsError(f"output folder already exists: {self.out_dir}")
        self.out_dir.parent.mkdir(parents=True, exist_ok=True)
        self.tmp = Path(tempfile.mkdtemp(prefix=f".{self.out_dir.name}.tmp-", dir=self.out_dir.parent))
        (self.tmp / IMAGES_DIR).mkdir()
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if not self.committed and self.tmp is not None:
            shutil.rmtree(self.tmp, ignore_errors=True)

    def add_image(self, data: bytes) -> str:
        """Store PNG bytes under their content name; return the manifest path."""
        name = content_name(data)
        if name not in self._names:
            with open(self.tmp / name, "wb") as f:
                f.write(data)
            self._names.add(name)
        return name

    def add_file(self, name: str, data: bytes) -> str:
        """Store a file beside the manifest (never under images/, which the web serves); return its path."""
        if "/" in name or name in ("", ".", "..", MANIFEST):
            raise ValueError(f"not a plain file name: {name!r}")
        with open(self.tmp / name, "wb") as f:
            f.write(data)
        return name

    @property
    def n_images(self) -> int:
        return len(self._names)

    def commit(self, manifest: dict[str, Any]) -> Path:
        assert self.tmp is not None, "use ArtifactWriter as a context manager"
        with open(self.tmp / MANIFEST, "w", encoding="utf-8") as f:
            json.dump(manifest, f, indent=1, allow_nan=False)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        old = None
        if self.out_dir.exists():
            # a directory cannot be renamed over a non-empty one: move the old one aside first
            old = Path(tempfile.mkdtemp(prefix=f".{self.out_dir.name}.old-", dir=self.out_dir.parent))
            os.replace(self.out_dir, old / "artifact")
        os.replace(self.tmp, self.out_dir)
        self.committed = True
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
        return self.out_dir


def versions() -> dict[str, str]:
    """The versions of the packages that decide an artifact's content."""
    from importlib.metadata import version

    import numpy as np
    import PIL
    import sklearn
    import torch
    import torchvision

    from . import __version__

    # zennit computes the LRP overlays; its rules decide their pixels.
    return {"stimuli": __version__, "torch": torch.__version__, "torchvision": torchvision.__version__,
            "scikit-learn": sklearn.__version__, "numpy": np.__version__, "pillow": PIL.__version__,
            "zennit": version("zennit")}


def build_manifest(*, network: dict[str, Any], dataset: dict[str, Any], seed: int, parameters: dict[str, Any],
                   layers: list[dict[str, Any]], n_images_rendered: int, device: str,
                   device_name: str | None = None, sobol: dict[str, Any] | None = None,
                   figures: list[Any] | None = None, feature_vis: dict[str, Any] | None = None,
                   timings: dict[str, Any] | None = None, created: _dt.datetime | None = None) -> dict[str, Any]:
    """The manifest of an artifact, validated: what the network, the image set and the parameters
    were, the package versions, and one entry per (layer, basis) with its units."""
    created = created or _dt.datetime.now(_dt.UTC)
    manifest: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "created": created.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "network": network,
        "dataset": dataset,
        "seed": seed,
        "parameters": parameters,
        "versions": versions(),
        "device": device,
        "n_images_rendered": n_images_rendered,
        "layers": layers,
    }
    if sobol is not None:
        manifest["sobol"] = sobol
    if figures:
        manifest["figures"] = figures
    if feature_vis is not None:
        manifest["feature_vis"] = feature_vis
    if device_name is not None:
        manifest["device_name"] = device_name
    if timings is not None:
        manifest["timings"] = timings
    return validate_manifest(manifest)


def validate_manifest(manifest: Any, where: str = "the manifest") -> dict[str, Any]:
    """``manifest`` itself if its schema version is one this package reads and it has what every
    reader relies on (a list of layer entries, each naming its layer and basis, with a list of units
    that have an index); else a :class:`ManifestError`."""
    version = manifest.get("schema_version") if isinstance(manifest, dict) else None
    if version not in SCHEMA_VERSIONS:
        raise ManifestError(f"unsupported manifest schema_version {version!r} in {where}; this version of "
                            f"stimuli reads {', '.join(map(str, SCHEMA_VERSIONS))}")
    layers = manifest.get("layers")
    if not isinstance(layers, list):
        raise ManifestError(f"{where} has no list of layers")
    for i, entry in enumerate(layers):
        if not (isinstance(entry, dict) and isinstance(entry.get("layer"), str)
                and isinstance(entry.get("basis"), str) and isinstance(entry.get("units"), list)):
            raise ManifestError(f"layer entry {i} of {where} needs a layer, a basis and a list of units")
        for unit in entry["units"]:
            if not (isinstance(unit, dict) and isinstance(unit.get("index"), int)):
                raise ManifestError(f"a unit of {entry['layer']}/{entry['basis']} in {where} has no index")
    return manifest


def read_manifest(path: str | os.PathLike) -> dict[str, Any]:
    """The manifest of an artifact folder (or of a manifest.json path), validated."""
    path = Path(path)
    if path.is_dir():
        path = path / MANIFEST
    try:
        with open(path, encoding="utf-8") as f:
            manifest = json.load(f)
    except FileNotFoundError:
        raise ManifestError(f"no stimulus manifest at {path}") from None
    except json.JSONDecodeError as exc:
        raise ManifestError(f"{MANIFEST} of {path.parent.name} is not valid JSON: {exc}") from None
    return validate_manifest(manifest, f"{MANIFEST} of {path.parent.name}")


# -- typed reads ---------------------------------------------------------------------------------
# What a reader shows of an artifact, as typed values: a key the contract requires and the manifest lacks
# raises ManifestError naming it (a renamed key fails, never shows as an empty cell); a measure that was
# not asked for is None. They read a manifest or the web app's copy of it without its units.

@dataclass(frozen=True)
class CompletenessCurve:
    """Accuracy of the network with the layer projected on its top-k units, per k."""

    k: tuple[int, ...]
    accuracy: tuple[float, ...]


@dataclass(frozen=True)
class LayerSummary:
    """One (layer, basis) entry's headline measures. ``influence_concentration`` is None without an
    ``influence_class``; ``completeness`` is None when it was turned off or failed (then
    ``completeness_error`` says why); ``decisions_error`` says why the decision measures are missing."""

    layer: str
    basis: str
    n_components: int
    cumulative_explained_variance: tuple[float, ...]
    influence_concentration: tuple[float, ...] | None
    completeness: CompletenessCurve | None
    completeness_error: str | None
    decisions_error: str | None


@dataclass(frozen=True)
class FigureFile:
    """An SVG figure of the artifact: its path inside the artifact folder and its title."""

    layer: str
    kind: str
    title: str
    file: str


def _required(entry: dict[str, Any], key: str, kinds: type | tuple[type, ...], where: str) -> Any:
    if key not in entry:
        raise ManifestError(f"{where} has no {key!r}")
    value = entry[key]
    if not isinstance(value, kinds) or isinstance(value, bool):
        raise ManifestError(f"{where}: {key!r} is a {type(value).__name__}")
    return value


def _numbers(values: Any, key: str, where: str) -> tuple[float, ...]:
    if not isinstance(values, list) or not all(isinstance(v, (int, float)) and not isinstance(v, bool)
                                               for v in values):
        raise ManifestError(f"{where}: {key!r} must be a list of numbers")
    return tuple(float(v) for v in values)


def layer_summaries(manifest: dict[str, Any]) -> list[LayerSummary]:
    """Every (layer, basis) entry of ``manifest`` (or of its copy without units), in manifest order."""
    layers = _required(manifest, "layers", list, "the manifest")
    out = []
    for i, entry in enumerate(layers):
        if not isinstance(entry, dict):
            raise ManifestError(f"layer entry {i} of the manifest is not a mapping")
        where = f"layer entry {i} ({entry.get('layer')}/{entry.get('basis')})"
        completeness = entry.get("completeness")
        curve = None
        if completeness is not None:
            if not isinstance(completeness, dict):
                raise ManifestError(f"{where}: 'completeness' must be a mapping")
            ks = _required(completeness, "k", list, f"{where}'s completeness")
            accuracy = _numbers(_required(completeness, "accuracy", list, f"{where}'s completeness"),
                                "accuracy", where)
            if len(ks) != len(accuracy) or not all(isinstance(k, int) for k in ks):
                raise ManifestError(f"{where}: completeness needs one accuracy per integer k")
            curve = CompletenessCurve(k=tuple(ks), accuracy=accuracy)
        concentration = entry.get("influence_concentration")
        out.append(LayerSummary(
            layer=_required(entry, "layer", str, where),
            basis=_required(entry, "basis", str, where),
            n_components=_required(entry, "n_components", int, where),
            cumulative_explained_variance=_numbers(
                _required(entry, "cumulative_explained_variance", list, where), "cumulative_explained_variance",
                where),
            influence_concentration=None if concentration is None
            else _numbers(concentration, "influence_concentration", where),
            completeness=curve,
            completeness_error=entry.get("completeness_error"),
            decisions_error=entry.get("decisions_error"),
        ))
    return out


def figure_files(manifest: dict[str, Any]) -> list[FigureFile]:
    """The artifact's SVG figures (``figures``: absent when the job drew none)."""
    figures = manifest.get("figures") or []
    if not isinstance(figures, list):
        raise ManifestError("the manifest's 'figures' must be a list")
    out = []
    for i, f in enumerate(figures):
        where = f"figure {i}"
        if not isinstance(f, dict):
            raise ManifestError(f"{where} of the manifest is not a mapping")
        out.append(FigureFile(layer=_required(f, "layer", str, where), kind=_required(f, "kind", str, where),
                              title=_required(f, "title", str, where), file=_required(f, "file", str, where)))
    return out


@dataclass(frozen=True)
class SobolImage:
    """One image's region indices: its picture in the artifact, the class the indices explain, its
    interaction share (1 − Σ S1) and each region's total index ``ST``."""

    image: str
    target_class: int
    interaction_share: float
    ST: tuple[float, ...]


@dataclass(frozen=True)
class SobolSummary:
    """The artifact's ``sobol`` entry: regions on a ``grid`` (rows, columns; None for superpixels),
    ``n_samples`` base samples, the interaction share over the images (mean, median, sd) and each image."""

    grid: tuple[int, int] | None
    n_samples: int
    n_images: int
    share_mean: float
    share_median: float
    share_sd: float
    images: tuple[SobolImage, ...]


def sobol_summary(manifest: dict[str, Any]) -> SobolSummary | None:
    """The artifact's region Sobol indices (None when the job asked for none: ``sobol_images = 0``)."""
    sobol = manifest.get("sobol")
    if sobol is None:
        return None
    where = "the manifest's sobol entry"
    if not isinstance(sobol, dict):
        raise ManifestError(f"{where} must be a mapping")
    if "grid" not in sobol:
        raise ManifestError(f"{where} has no 'grid'")
    grid = sobol["grid"]
    if grid is not None and not (isinstance(grid, list) and len(grid) == 2 and all(isinstance(g, int) for g in grid)):
        raise ManifestError(f"{where}: 'grid' must be null or [rows, columns]")
    share = _required(sobol, "interaction_share", dict, where)
    stats = _numbers([_required(share, key, (int, float), f"{where}'s interaction_share")
                      for key in ("mean", "median", "sd")], "interaction_share", where)
    images = []
    for i, image in enumerate(_required(sobol, "images", list, where)):
        at = f"{where}, image {i}"
        if not isinstance(image, dict):
            raise ManifestError(f"{at} is not a mapping")
        images.append(SobolImage(
            image=_required(image, "image", str, at), target_class=_required(image, "target_class", int, at),
            interaction_share=float(_required(image, "interaction_share", (int, float), at)),
            ST=_numbers(_required(image, "ST", list, at), "ST", at)))
    return SobolSummary(grid=None if grid is None else (grid[0], grid[1]),
                        n_samples=_required(sobol, "n_samples", int, where),
                        n_images=_required(share, "n_images", int, f"{where}'s interaction_share"),
                        share_mean=stats[0], share_median=stats[1], share_sd=stats[2], images=tuple(images))


@dataclass(frozen=True)
class StageTimings:
    """How long the job took: wall seconds per stage of :data:`STAGES` before ``write``
    (in that order, whatever order the stored mapping kept: PostgreSQL's jsonb sorts keys), per part of
    ``measures`` (``decisions``, ``completeness``, ``figures`` where they ran) and in total up to the
    manifest."""

    stages: tuple[tuple[str, float], ...]
    measures: tuple[tuple[str, float], ...]
    total: float


def _seconds(mapping: Any, key: str, where: str) -> tuple[tuple[str, float], ...]:
    if not isinstance(mapping, dict):
        raise ManifestError(f"{where}: {key!r} must be a mapping")
    values = _numbers(list(mapping.values()), key, where)
    return tuple(zip((str(k) for k in mapping), values))


def stage_timings(manifest: dict[str, Any]) -> StageTimings | None:
    """The job's ``timings`` (None for an artifact made before they were recorded)."""
    timings = manifest.get("timings")
    if timings is None:
        return None
    where = "the manifest's timings"
    if not isinstance(timings, dict):
        raise ManifestError(f"{where} must be a mapping")
    stages = _seconds(_required(timings, "stages", dict, where), "stages", where)
    stages = tuple(sorted(stages, key=lambda kv: STAGES.index(kv[0]) if kv[0] in STAGES else len(STAGES)))
    return StageTimings(stages=stages,
                        measures=_seconds(_required(timings, "measures", dict, where), "measures", where),
                        total=float(_required(timings, "total", (int, float), where)))


def job_parameters(manifest: dict[str, Any]) -> dict[str, Any]:
    """The configuration the artifact was made with, as the flat keys of its ``parameters`` entry
    (:meth:`stimuli.config.StimulusConfig.to_dict`, less ``network``, ``dataset`` and ``seed``)."""
    return dict(_required(manifest, "parameters", dict, "the manifest"))


@dataclass(frozen=True)
class QueryCandidates:
    """A unit's query candidates, paired by position (``queries_max[i]`` with ``queries_min[i]``), and each
    candidate's activation percentile (:mod:`stimuli.exemplars`): a maximal candidate's lies in its band
    ``(low, high]``, a minimal one's in the mirror ``[100 − high, 100 − low)``. The percentiles are None
    for an artifact written before they were recorded, whose candidates all come from its one band."""

    queries_max: tuple[str, ...]
    queries_min: tuple[str, ...]
    max_percentiles: tuple[float, ...] | None
    min_percentiles: tuple[float, ...] | None


def query_candidates(unit: dict[str, Any], where: str = "a unit") -> QueryCandidates:
    """A unit entry's query candidates with their percentiles."""
    lists = {}
    for key in ("queries_max", "queries_min"):
        files = unit.get(key, [])
        if not isinstance(files, list) or not all(isinstance(f, str) for f in files):
            raise ManifestError(f"{where}: {key!r} must be a list of image paths")
        lists[key] = tuple(files)
    percentiles = {}
    for key in ("queries_max", "queries_min"):
        name = f"{key}_percentile"
        if name not in unit:
            percentiles[key] = None
            continue
        values = _numbers(unit[name], name, where)
        if len(values) != len(lists[key]):
            raise ManifestError(f"{where}: {name!r} has {len(values)} values for {len(lists[key])} {key}")
        percentiles[key] = values
    if (percentiles["queries_max"] is None) != (percentiles["queries_min"] is None):
        raise ManifestError(f"{where}: query percentiles are given for one side only")
    return QueryCandidates(queries_max=lists["queries_max"], queries_min=lists["queries_min"],
                           max_percentiles=percentiles["queries_max"], min_percentiles=percentiles["queries_min"])


def query_bands(manifest: dict[str, Any]) -> list[tuple[float, float]]:
    """The query bands the artifact rendered candidates for, as ``(low, high)`` percentiles of the maximal
    query, the job's own band first: its ``query_bands`` parameter, or the one top band of its
    ``query_percentile``. Reads a manifest or the web app's copy of it without its units."""
    from .exemplars import check_query_bands

    parameters = _required(manifest, "parameters", dict, "the manifest")
    if parameters.get("query_bands") is not None:
        try:
            return check_query_bands(parameters["query_bands"])
        except ValueError as exc:
            raise ManifestError(f"the manifest's parameters: {exc}") from None
    percentile = _required(parameters, "query_percentile", (int, float), "the manifest's parameters")
    return [(100.0 - float(percentile), 100.0)]


@dataclass(frozen=True)
class OcclusionTrial:
    """One occlusion pair of a unit (Zimmermann et al. 2021; :mod:`stimuli.measures.occlusion`): the query's
    file, the two occluded copies ``a`` and ``b`` (paths inside the artifact folder), the side whose
    occlusion changes the unit's score more, and each side's change."""

    query: str
    a: str
    b: str
    correct: str
    delta_a: float
    delta_b: float

    @property
    def margin(self) -> float:
        """How much larger the correct side's change is: practice takes the largest."""
        return abs(abs(self.delta_a) - abs(self.delta_b))


def occlusion_trials(unit: dict[str, Any], key: str = "occlusion_trials") -> list[OcclusionTrial]:
    """A manifest unit's ``occlusion_trials`` (or, with ``key="occlusion_catch_trials"``, its catch pairs);
    empty for a job run without occlusion pairs. A malformed entry raises :class:`ManifestError`."""
    entries = unit.get(key, [])
    where = f"unit {unit.get('index')}'s {key}"
    if not isinstance(entries, list):
        raise ManifestError(f"{where} must be a list")
    out = []
    for i, entry in enumerate(entries):
        at = f"{where}[{i}]"
        if not isinstance(entry, dict):
            raise ManifestError(f"{at} is not a mapping")
        correct = _required(entry, "correct", str, at)
        if correct not in ("a", "b"):
            raise ManifestError(f"{at}: 'correct' must be 'a' or 'b', not {correct!r}")
        delta_a, delta_b = (float(_required(entry, k, (int, float), at)) for k in ("delta_a", "delta_b"))
        if (abs(delta_a) > abs(delta_b)) != (correct == "a"):
            raise ManifestError(f"{at}: 'correct' is not the side of the larger absolute change")
        out.append(OcclusionTrial(query=_required(entry, "query", str, at), a=_required(entry, "a", str, at),
                                  b=_required(entry, "b", str, at), correct=correct, delta_a=delta_a,
                                  delta_b=delta_b))
    return out
