"""The distributional influence section (:mod:`stimuli.measures.influence`)."""

from __future__ import annotations

from dataclasses import dataclass

from ..sections import Section, is_int, need

DISTRIBUTIONS = ("all", "class")


@dataclass(frozen=True)
class InfluenceSettings(Section):
    """A job's distributional influence: on the logit of ``class_index`` (minus that of ``versus``),
    averaged over the images of the class (``distribution="class"``) or all images, at most
    ``max_images`` of them."""

    PREFIX = "influence_"
    FLAT = {"class_index": "influence_class"}

    class_index: int | None = None
    versus: int | None = None
    distribution: str = "class"
    max_images: int | None = 2000

    def validate(self) -> None:
        for name in ("class_index", "versus"):
            value = getattr(self, name)
            need(
                value is None or (is_int(value) and value >= 0), f"{self.key(name)} must be null or a class index >= 0"
            )
        need(self.versus is None or self.class_index is not None, "influence_versus needs influence_class")
        need(
            self.versus is None or self.versus != self.class_index, "influence_versus must differ from influence_class"
        )
        need(
            self.distribution in DISTRIBUTIONS,
            f"influence_distribution must be one of {', '.join(sorted(DISTRIBUTIONS, reverse=True))}",
        )
        need(
            self.max_images is None or (is_int(self.max_images) and self.max_images >= 1),
            "influence_max_images must be null or a positive integer",
        )
