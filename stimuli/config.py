"""The stimulus job's configuration: one dataclass, round-tripped through JSON."""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from typing import Any

# each algorithm module owns its options; the configuration only gathers them
from .activations import ACTIVATIONS, POOLINGS
from .bases import DICTIONARY_DEFAULTS, NMF_DEFAULTS, SAE_DEFAULTS, basis_class, basis_names
from .exemplars import check_query_bands
from .featurevis import FEATURE_VIS_DEFAULTS, FEATURE_VIS_METHODS
from .measures.attribution import METHODS as ATTRIBUTION_METHODS
from .measures.decisions import DecisionMeasuresSettings
from .measures.influence import InfluenceSettings
from .measures.mis import MISSettings
from .measures.occlusion import OcclusionSettings
from .measures.sobol import SobolSettings
from .sections import Section
from .selection import MIS_SELECTIONS, UNIT_SELECTIONS

# the sections whose options are flat keys of the configuration; each validates itself
SECTIONS: tuple[type[Section], ...] = (InfluenceSettings, MISSettings, SobolSettings, DecisionMeasuresSettings)


def _default_layers() -> list[str]:
    return ["conv2"]


def _default_bases() -> list[str]:
    return ["neuron", "pca", "nmf"]


@dataclass
class StimulusConfig:
    """Everything a stimulus job needs, with defaults that run the built-in demo.

    ``network`` is ``"demo"`` (the built-in digits CNN), a torchvision architecture name
    (``"resnet18"``, with ``weights`` such as ``"DEFAULT"`` or ``"IMAGENET1K_V1"``), or a path to a
    local checkpoint (a state dict for ``architecture``, or a TorchScript file). ``num_classes`` is a
    state dict's class count; None reads it from the checkpoint (its classifier's weight).
    ``dataset`` is ``"digits"`` (scikit-learn's handwritten digits) or a folder path
    (ImageFolder layout). ``n_units`` and ``n_components`` are an int for every basis or a mapping
    ``basis -> int``; ``n_components=None`` keeps as many components as the layer has channels.
    """

    network: str = "demo"
    weights: str | None = None
    architecture: str | None = None
    num_classes: int | None = None
    allow_download: bool = True
    layers: list[str] = field(default_factory=_default_layers)
    bases: list[str] = field(default_factory=_default_bases)
    n_units: int | dict[str, int] = 6
    n_components: int | dict[str, int] | None = None
    seed: int = 0
    dataset: str = "digits"
    max_images: int | None = None
    pooling: str = "mean"
    activation: str = "post_relu"
    unit_selection: str = "top_variance"
    n_references: int = 9
    query_percentile: float = 10.0
    # the bands query candidates are rendered for, each [low, high] percentiles of the maximal query (the
    # minimal query's is the mirror), n_queries candidates per side each; null: the one top band of
    # query_percentile. The first is the job's own band (stimuli.exemplars.query_bands)
    query_bands: list[list[float]] | None = None
    n_queries: int = 20
    strip_length: int = 9
    # disjoint ordered strips per unit, so that no trial of a unit repeats another's ordered row
    n_strips: int = 4
    render_size: int | None = None
    batch_size: int = 256
    # DataLoader worker processes decoding images; None: the usable cores, capped, for a folder, and
    # none for the in-memory digits or inside a daemonic process (stimuli.activations.auto_num_workers)
    num_workers: int | None = None
    # JPEG decoding: "auto" with nvJPEG on a CUDA device (torchvision's decode_jpeg, stimuli.decoding)
    # and with PIL elsewhere; "pil" or "torchvision" to choose
    decode: str = "auto"
    device: str = "auto"
    nmf: dict[str, Any] = field(default_factory=dict)
    dictionary: dict[str, Any] = field(default_factory=dict)
    sae: dict[str, Any] = field(default_factory=dict)
    completeness: bool = True
    completeness_k: list[int] | None = None
    completeness_max_images: int | None = 2000
    # distributional influence (stimuli.measures.influence): on the logit of influence_class (minus that of
    # influence_versus), averaged over the images of the class ("class") or all images ("all")
    influence_class: int | None = None
    influence_versus: int | None = None
    influence_distribution: str = "class"
    influence_max_images: int | None = 2000
    # machine observer (stimuli.measures.mis): each unit's Machine Interpretability Score, with images embedded
    # by the pooled activations of mis_layer (None: no score) and the logistic slope mis_alpha
    mis_layer: str | None = None
    mis_alpha: float = 1.0
    # unit_selection mis_*: the candidates scored are the mis_candidates usable units of highest explained
    # variance (all of them when the basis has fewer). The cap is about which units, more than cost: the
    # low-variance tail of a full basis (PCA's last components, unused atoms) is noise, and mis_bottom over
    # all of it would choose exactly that tail. The cost is bounded too: a candidate's exemplars sort the
    # image set's responses (measured: about 18 ms for 50,000 images on one CPU core); its Δ costs little
    mis_candidates: int = 64
    # per-unit heatmaps on the most activating references (stimuli.measures.attribution)
    attribution_overlays: bool = False
    attribution_method: str = "gradcam"
    # Sobol-SBSA region indices (stimuli.measures.sobol.region_sobol) of the network's decision for this many
    # images (0: none), spread over classes; a sobol_grid x sobol_grid grid, sobol_n_samples base samples
    # (rounded up to a power of 2; cost sobol_n_samples·(grid² + 2) forward passes per image). On the
    # demo network one image's interaction share varies by about 0.2 (sd over design seeds) at 64
    # samples and 0.03 at 256, the region code's default
    sobol_images: int = 0
    sobol_grid: int = 4
    sobol_n_samples: int = 256
    sobol_perturbation: str = "inpaint-blur"
    # second-order indices S2 (upper triangle, with bootstrap half-widths) per image; doubles the forward
    # passes (sobol_n_samples·(2·regions + 2) per image)
    sobol_second_order: bool = False
    # regions: the grid, or SLIC superpixels (scikit-image) of about sobol_superpixels segments that
    # follow the image's content, as the "semantic" regions of SBSA
    sobol_regions: str = "grid"
    sobol_superpixels: int = 16
    # from units to decisions (stimuli.measures.decisions), on a seeded subset of decision_max_images images:
    # the essence curves of influence_class (stimuli.measures.essence; needs influence_class), over essence_k
    # (default: 1, 2, 4, … K) with essence_random_seeds random orders; per-unit ablation
    # (stimuli.measures.ablation) of the chosen units and, for the layer's mean, up to ablation_max_units units;
    # label purity of the top label_entropy_top_n images (0: none); surrogate decision trees over
    # surrogate_k units x surrogate_depth depths. Each intervention re-runs only the network after the
    # layer (stimuli.measures.tail), so on the demo these add a few seconds
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
    # SVG figures of the curves (explained variance, completeness, essence, surrogate fidelity)
    figures: bool = True
    # synthetic references: false, or a mapping with keys among FEATURE_VIS_DEFAULTS
    feature_vis: bool | dict[str, Any] = False
    # occlusion pairs (Zimmermann et al. 2021; stimuli.measures.occlusion): a mapping with keys among
    # pairs_per_unit (0 or absent: none), patch, stride, fill, margin
    occlusion: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.validate()

    # -- construction -------------------------------------------------------------------------
    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> StimulusConfig:
        if not isinstance(data, dict):
            raise ValueError(f"a stimulus configuration must be a JSON object, not {type(data).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown configuration key(s): {', '.join(unknown)}; "
                             f"known keys are {', '.join(sorted(known))}")
        data = dict(data)
        # a single layer or basis given as a string, or comma separated, is accepted
        for key in ("layers", "bases"):
            if isinstance(data.get(key), str):
                data[key] = [s.strip() for s in data[key].split(",") if s.strip()]
        return cls(**data)

    def to_dict(self) -> dict[str, Any]:
        return json.loads(json.dumps(dataclasses.asdict(self)))

    def replace(self, **changes: Any) -> StimulusConfig:
        return dataclasses.replace(self, **changes)

    # -- sections -------------------------------------------------------------------------------
    def section(self, cls: type[Section]) -> Section:
        """The options of one algorithm as its own section (read from this configuration's flat keys)."""
        return cls.from_flat(self)

    @property
    def influence(self) -> InfluenceSettings:
        return self.section(InfluenceSettings)

    @property
    def mis(self) -> MISSettings:
        return self.section(MISSettings)

    @property
    def sobol(self) -> SobolSettings:
        return self.section(SobolSettings)

    @property
    def decisions(self) -> DecisionMeasuresSettings:
        return self.section(DecisionMeasuresSettings)

    # -- derived values -----------------------------------------------------------------------
    def units_for(self, basis: str) -> int:
        if isinstance(self.n_units, dict):
            return int(self.n_units[basis])
        return int(self.n_units)

    def components_for(self, basis: str) -> int | None:
        if self.n_components is None:
            return None
        if isinstance(self.n_components, dict):
            value = self.n_components.get(basis)
            return None if value is None else int(value)
        return int(self.n_components)

    def nmf_params(self) -> dict[str, Any]:
        return {**NMF_DEFAULTS, **self.nmf}

    def dictionary_params(self) -> dict[str, Any]:
        return {**DICTIONARY_DEFAULTS, **self.dictionary}

    def sae_params(self) -> dict[str, Any]:
        return {**SAE_DEFAULTS, **self.sae}

    def occlusion_settings(self) -> OcclusionSettings:
        """The occlusion section with its defaults filled in (``pairs_per_unit`` 0: off)."""
        return OcclusionSettings.from_mapping(self.occlusion)

    def feature_vis_params(self) -> dict[str, Any] | None:
        """The feature_vis settings with defaults filled in, or None when off."""
        if self.feature_vis is False:
            return None
        return {**FEATURE_VIS_DEFAULTS, **({} if self.feature_vis is True else self.feature_vis)}

    # -- validation ---------------------------------------------------------------------------
    def validate(self) -> None:
        def need(cond: bool, message: str) -> None:
            if not cond:
                raise ValueError(message)

        need(isinstance(self.network, str) and self.network.strip() != "",
             "network must be 'demo', a torchvision architecture name or a checkpoint path")
        need(isinstance(self.layers, list) and len(self.layers) > 0
             and all(isinstance(s, str) and s for s in self.layers),
             "layers must be a non-empty list of layer names (see `python -m stimuli layers`)")
        need(len(set(self.layers)) == len(self.layers), f"layers are repeated: {self.layers}")
        need(isinstance(self.bases, list) and len(self.bases) > 0,
             f"bases must be a non-empty list drawn from {', '.join(basis_names())}")
        for b in self.bases:
            need(b in basis_names(), f"unknown basis {b!r}; choose from {', '.join(basis_names())}")
        need(len(set(self.bases)) == len(self.bases), f"bases are repeated: {self.bases}")
        self._check_per_basis("n_units", self.n_units, allow_none=False)
        self._check_per_basis("n_components", self.n_components, allow_none=True)
        need(_is_int(self.seed) and self.seed >= 0, f"seed must be a non-negative integer, not {self.seed!r}")
        need(isinstance(self.dataset, str) and self.dataset != "",
             "dataset must be 'digits' or the path of an image folder")
        need(self.max_images is None or (_is_int(self.max_images) and self.max_images > 0),
             f"max_images must be a positive integer or null, not {self.max_images!r}")
        need(self.pooling in POOLINGS, f"pooling must be one of {', '.join(POOLINGS)}, not {self.pooling!r}")
        need(self.activation in ACTIVATIONS,
             f"activation must be one of {', '.join(ACTIVATIONS)}, not {self.activation!r}")
        need(self.unit_selection in UNIT_SELECTIONS,
             f"unit_selection must be one of {', '.join(UNIT_SELECTIONS)}, not {self.unit_selection!r}")
        need(_is_int(self.n_references) and self.n_references >= 1,
             f"n_references must be a positive integer, not {self.n_references!r}")
        need(isinstance(self.query_percentile, (int, float)) and not isinstance(self.query_percentile, bool)
             and math.isfinite(self.query_percentile) and 0 < self.query_percentile <= 50,
             f"query_percentile must be in (0, 50], not {self.query_percentile!r}")
        if self.query_bands is not None:
            check_query_bands(self.query_bands)
        need(_is_int(self.n_queries) and self.n_queries >= 0,
             f"n_queries must be a non-negative integer, not {self.n_queries!r}")
        need(_is_int(self.strip_length) and self.strip_length >= 2,
             f"strip_length must be an integer >= 2, not {self.strip_length!r}")
        need(_is_int(self.n_strips) and self.n_strips >= 1,
             f"n_strips must be a positive integer, not {self.n_strips!r}")
        need(self.render_size is None or (_is_int(self.render_size) and 8 <= self.render_size <= 1024),
             f"render_size must be null or an integer in [8, 1024], not {self.render_size!r}")
        need(_is_int(self.batch_size) and self.batch_size >= 1,
             f"batch_size must be a positive integer, not {self.batch_size!r}")
        need(self.num_workers is None or (_is_int(self.num_workers) and self.num_workers >= 0),
             f"num_workers must be a non-negative integer or null (automatic), not {self.num_workers!r}")
        need(self.decode in ("auto", "pil", "torchvision"),
             f"decode must be 'auto', 'pil' or 'torchvision', not {self.decode!r}")
        need(isinstance(self.device, str) and (self.device in ("auto", "cpu", "cuda", "mps")
                                               or self.device.startswith("cuda:")),
             f"device must be 'auto', 'cpu', 'cuda' or 'cuda:N', not {self.device!r}")
        self._check_basis_sections()
        need(self.weights is None or isinstance(self.weights, str), "weights must be null or an enum name")
        need(self.architecture is None or isinstance(self.architecture, str),
             "architecture must be null or a torchvision architecture name")
        need(self.num_classes is None or (_is_int(self.num_classes) and self.num_classes >= 1),
             "num_classes must be null or a positive integer")
        need(isinstance(self.completeness, bool), "completeness must be true or false")
        need(self.completeness_k is None or (isinstance(self.completeness_k, list) and self.completeness_k
                                             and all(_is_int(k) and k >= 1 for k in self.completeness_k)),
             "completeness_k must be null or a non-empty list of positive integers")
        need(self.completeness_max_images is None
             or (_is_int(self.completeness_max_images) and self.completeness_max_images >= 1),
             "completeness_max_images must be null or a positive integer")
        for section in SECTIONS:
            self.section(section).validate()
        need(self.unit_selection != "influence" or self.influence_class is not None,
             "unit_selection 'influence' needs influence_class (the class of interest)")
        if self.unit_selection in MIS_SELECTIONS:
            how = f"unit_selection {self.unit_selection!r}"
            need(self.mis_layer is not None,
                 f"{how} needs mis_layer (the layer whose activations embed the images for the machine observer)")
            need(self.n_queries >= 1, f"{how} needs n_queries >= 1: the machine score is a mean over query pairs")
            most = max(self.units_for(b) for b in self.bases)
            need(self.mis_candidates >= most,
                 f"{how} chooses among mis_candidates units: mis_candidates ({self.mis_candidates}) must be at "
                 f"least n_units ({most})")
        need(isinstance(self.attribution_overlays, bool), "attribution_overlays must be true or false")
        need(self.attribution_method in ATTRIBUTION_METHODS,
             f"attribution_method must be one of {', '.join(ATTRIBUTION_METHODS)}, not {self.attribution_method!r}")
        need(isinstance(self.figures, bool), "figures must be true or false")
        self._check_feature_vis()
        self.occlusion_settings().validate()
        for b in self.bases:
            if basis_class(b).tags.non_negative_input and self.activation != "post_relu":
                raise ValueError(f"the {b} basis needs non-negative activations: use activation='post_relu'")

    def _check_basis_sections(self) -> None:
        """Each basis's own section (``nmf``, ``dictionary``, ``sae``): its keys are the ones the basis
        takes, and the basis checks their values (checked whether or not the basis is used, so a job's
        stored parameters never hold a bad section)."""
        for name in basis_names():
            cls = basis_class(name)
            key = cls.tags.config_section
            if key is None or not hasattr(self, key):
                continue
            section = getattr(self, key)
            if not isinstance(section, dict):
                raise ValueError(f"{key} must be a mapping of {name} parameters")
            known = cls.tags.config_defaults
            bad = sorted(set(section) - set(known))
            if bad:
                raise ValueError(f"unknown {key} parameter(s): {', '.join(bad)}; known: {', '.join(known)}")
            cls.check_params({**known, **section})

    def _check_feature_vis(self) -> None:
        fv = self.feature_vis
        if isinstance(fv, bool):
            return
        if not isinstance(fv, dict):
            raise ValueError("feature_vis must be false, true or a mapping with keys among "
                             f"{', '.join(FEATURE_VIS_DEFAULTS)}")
        bad = sorted(set(fv) - set(FEATURE_VIS_DEFAULTS))
        if bad:
            raise ValueError(f"unknown feature_vis key(s): {', '.join(bad)}; known: {', '.join(FEATURE_VIS_DEFAULTS)}")
        p = self.feature_vis_params()
        if p["method"] not in FEATURE_VIS_METHODS:
            raise ValueError(f"feature_vis.method must be one of {', '.join(FEATURE_VIS_METHODS)}, not {p['method']!r}")
        if not (_is_int(p["steps"]) and p["steps"] >= 1):
            raise ValueError(f"feature_vis.steps must be a positive integer, not {p['steps']!r}")
        if not (_is_int(p["seed"]) and p["seed"] >= 0):
            raise ValueError(f"feature_vis.seed must be a non-negative integer, not {p['seed']!r}")
        lr = p["lr"]
        if not (isinstance(lr, (int, float)) and not isinstance(lr, bool) and math.isfinite(lr) and lr > 0):
            raise ValueError(f"feature_vis.lr must be a positive number, not {lr!r}")
        size = p["image_size"]
        if size is not None and not (_is_int(size) and 8 <= size <= 1024 and size % 2 == 0):
            raise ValueError(f"feature_vis.image_size must be null (the display size) or an even integer in "
                             f"[8, 1024], not {size!r}")

    def _check_per_basis(self, name: str, value: Any, allow_none: bool) -> None:
        if value is None and allow_none:
            return
        if isinstance(value, dict):
            missing = [b for b in self.bases if b not in value] if not allow_none else []
            if missing:
                raise ValueError(f"{name} gives no value for basis(es) {', '.join(missing)}")
            for b, v in value.items():
                if b not in basis_names():
                    raise ValueError(f"{name} names unknown basis {b!r}")
                if not ((v is None and allow_none) or (_is_int(v) and v >= 1)):
                    raise ValueError(f"{name}[{b!r}] must be a positive integer, not {v!r}")
            return
        if not (_is_int(value) and value >= 1):
            raise ValueError(f"{name} must be a positive integer or a mapping basis -> integer, not {value!r}")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
