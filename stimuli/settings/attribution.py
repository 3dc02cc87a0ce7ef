"""The attribution section (:mod:`stimuli.measures.attribution`)."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..sections import Section, cli, need

METHODS = ("gradcam", "saliency", "occlusion", "lrp", "integrated_gradients")


@dataclass(frozen=True)
class AttributionSettings(Section):
    """Per-unit heatmaps on the most activating references (``overlays``), by ``method``."""

    PREFIX = "attribution_"

    overlays: bool = False
    method: str = field(
        default="gradcam",
        metadata=cli(
            str,
            "--attribution",
            choices=METHODS,
            implies={"overlays": True},
            help="add attribution overlays of the most activating references, by this method",
        ),
    )

    def validate(self) -> None:
        need(isinstance(self.overlays, bool), "attribution_overlays must be true or false")
        need(self.method in METHODS, f"attribution_method must be one of {', '.join(METHODS)}, not {self.method!r}")
