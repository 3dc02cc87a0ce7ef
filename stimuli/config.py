"""The stimulus job's configuration: the sections of the algorithms it runs, round-tripped through JSON.

Each algorithm owns its options as a section (:class:`stimuli.sections.Section`, a small dataclass that
validates itself); :class:`StimulusConfig` only gathers them and checks what spans two sections.

**The JSON form is flat**, as stored job parameters, study files and manifests have always held it
(``{"network": "demo", "layers": ["conv2"], "sobol_grid": 4, "mis_layer": "relu3", …}``). The one
conversion between the two is :meth:`StimulusConfig.from_dict` / :meth:`StimulusConfig.to_dict`: every
field of every section has one flat key (:meth:`Section.key`: the field's name, the section's prefix and
the field's name, or a name of its own), so ``to_dict`` gives the same keys and values as the flat
configuration did and any stored job reads back unchanged.

Importing this module loads neither torch nor scikit-learn (the web app's job form imports it); the basis
registry is imported when a configuration is read from its flat form or validated.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .datasets import DatasetSettings
from .exemplars import ExemplarSettings
from .measures.decisions import DecisionMeasuresSettings
from .measures.mis import MISSettings
from .measures.occlusion import OcclusionSettings
from .measures.sobol import SobolSettings
from .render import RenderSettings
from .sections import Section, cli, is_int, need
from .selection import MIS_SELECTIONS, SelectionSettings
from .settings.activations import ActivationSettings
from .settings.attribution import AttributionSettings
from .settings.bases import BasisSettings, check_per_basis
from .settings.completeness import CompletenessSettings
from .settings.featurevis import FeatureVisSettings
from .settings.influence import InfluenceSettings
from .settings.network import NetworkSettings

__all__ = ["MIS_SELECTIONS", "SECTIONS", "StimulusConfig"]

# attribute of StimulusConfig -> its section, in the order the flat form lists their keys
SECTIONS: dict[str, type[Section]] = {
    "network": NetworkSettings,
    "dataset": DatasetSettings,
    "activations": ActivationSettings,
    "bases": BasisSettings,
    "selection": SelectionSettings,
    "exemplars": ExemplarSettings,
    "render": RenderSettings,
    "completeness": CompletenessSettings,
    "influence": InfluenceSettings,
    "mis": MISSettings,
    "attribution": AttributionSettings,
    "sobol": SobolSettings,
    "decisions": DecisionMeasuresSettings,
    "feature_vis": FeatureVisSettings,
    "occlusion": OcclusionSettings,
}
# the keys of the flat form that split a comma separated string into a list
LIST_KEYS = ("layers", "bases")


@dataclass
class StimulusConfig:
    """Everything a stimulus job needs, with defaults that run the built-in demo: the seed every random
    choice derives from, and one section per algorithm (see each section for its options)."""

    seed: int = field(default=0, metadata=cli(int))
    network: NetworkSettings = field(default_factory=NetworkSettings)
    dataset: DatasetSettings = field(default_factory=DatasetSettings)
    activations: ActivationSettings = field(default_factory=ActivationSettings)
    bases: BasisSettings = field(default_factory=BasisSettings)
    selection: SelectionSettings = field(default_factory=SelectionSettings)
    exemplars: ExemplarSettings = field(default_factory=ExemplarSettings)
    render: RenderSettings = field(default_factory=RenderSettings)
    completeness: CompletenessSettings = field(default_factory=CompletenessSettings)
    influence: InfluenceSettings = field(default_factory=InfluenceSettings)
    mis: MISSettings = field(default_factory=MISSettings)
    attribution: AttributionSettings = field(default_factory=AttributionSettings)
    sobol: SobolSettings = field(default_factory=SobolSettings)
    decisions: DecisionMeasuresSettings = field(default_factory=DecisionMeasuresSettings)
    feature_vis: FeatureVisSettings = field(default_factory=FeatureVisSettings)
    occlusion: OcclusionSettings = field(default_factory=OcclusionSettings)

    def __post_init__(self) -> None:
        self.validate()

    # -- the flat form ----------------------------------------------------------------------------
    @staticmethod
    def flat_keys() -> list[str]:
        """Every key of the flat form."""
        return ["seed", *(key for section in SECTIONS.values() for key in dict.fromkeys(section.keys().values()))]

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> StimulusConfig:
        """The configuration from its flat form (a stored job's parameters, a manifest's, a JSON file); a
        key it lacks keeps its default, an unknown key is refused."""
        if not isinstance(data, dict):
            raise ValueError(f"a stimulus configuration must be a JSON object, not {type(data).__name__}")
        known = cls.flat_keys()
        unknown = sorted(set(data) - set(known))
        if unknown:
            raise ValueError(f"unknown configuration key(s): {', '.join(unknown)}; "
                             f"known keys are {', '.join(sorted(known))}")
        data = dict(data)
        # a single layer or basis given as a string, or comma separated, is accepted
        for key in LIST_KEYS:
            if isinstance(data.get(key), str):
                data[key] = [s.strip() for s in data[key].split(",") if s.strip()]
        sections = {name: section.from_flat(data) for name, section in SECTIONS.items()}
        return cls(**({"seed": data["seed"]} if "seed" in data else {}), **sections)  # type: ignore[arg-type]

    @classmethod
    def of(cls, **flat: Any) -> StimulusConfig:
        """``from_dict`` with keyword arguments: ``StimulusConfig.of(bases=["pca"], sobol_images=2)``."""
        return cls.from_dict(flat)

    def to_dict(self) -> dict[str, Any]:
        """The flat form (JSON types only)."""
        out: dict[str, Any] = {"seed": self.seed}
        for name in SECTIONS:
            out.update(getattr(self, name).flat())
        return _json_copy(out)

    def replace(self, **changes: Any) -> StimulusConfig:
        """A copy with flat keys changed (``config.replace(n_units=3, sobol_images=2)``)."""
        return self.from_dict({**self.to_dict(), **changes})

    # -- validation ---------------------------------------------------------------------------------
    def validate(self) -> None:
        """Each section's own checks, then what spans sections. ValueError naming the flat key at fault."""
        need(is_int(self.seed) and self.seed >= 0, f"seed must be a non-negative integer, not {self.seed!r}")
        for name, section in SECTIONS.items():
            value = getattr(self, name)
            need(isinstance(value, section), f"{name} must be a {section.__name__}, not {type(value).__name__}")
            value.validate()
        self.bases.check_registered()
        check_per_basis("n_units", self.selection.n_units, self.bases.names, allow_none=False)
        if isinstance(self.selection.n_units, dict):
            unknown = [b for b in self.selection.n_units if b not in _registered()]
            need(not unknown, f"n_units names unknown basis {', '.join(map(repr, unknown))}")
        method = self.selection.method
        need(method != "influence" or self.influence.class_index is not None,
             "unit_selection 'influence' needs influence_class (the class of interest)")
        if method in MIS_SELECTIONS:
            how = f"unit_selection {method!r}"
            need(self.mis.layer is not None,
                 f"{how} needs mis_layer (the layer whose activations embed the images for the machine observer)")
            need(self.exemplars.n_queries >= 1,
                 f"{how} needs n_queries >= 1: the machine score is a mean over query pairs")
            most = max(self.selection.units_for(b) for b in self.bases.names)
            need(self.mis.candidates >= most,
                 f"{how} chooses among mis_candidates units: mis_candidates ({self.mis.candidates}) must be at "
                 f"least n_units ({most})")
        from .bases import basis_class

        for b in self.bases.names:
            if basis_class(b).tags.non_negative_input and self.activations.activation != "post_relu":
                raise ValueError(f"the {b} basis needs non-negative activations: use activation='post_relu'")


def _registered() -> list[str]:
    from .bases import basis_names

    return basis_names()


def _json_copy(value: Any) -> Any:
    """A deep copy with tuples as lists (what a JSON round trip gives), so to_dict shares no list with
    the configuration."""
    if isinstance(value, dict):
        return {k: _json_copy(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_copy(v) for v in value]
    return value
