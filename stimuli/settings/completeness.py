"""The completeness section (:mod:`stimuli.measures.completeness`)."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..sections import Section, cli, is_int, is_int_list, need


@dataclass(frozen=True)
class CompletenessSettings(Section):
    """The network's accuracy with the layer projected onto its top-k units (``enabled``), over ``k``
    (None: 1, 2, 4, … K), on a seeded subset of at most ``max_images`` images."""

    PREFIX = "completeness_"
    FLAT = {"enabled": "completeness"}

    enabled: bool = field(default=True, metadata=cli(bool, "--no-completeness", action="store_false"))
    k: list[int] | None = None
    max_images: int | None = 2000

    def validate(self) -> None:
        need(isinstance(self.enabled, bool), "completeness must be true or false")
        need(
            self.k is None or is_int_list(self.k),
            "completeness_k must be null or a non-empty list of positive integers",
        )
        need(
            self.max_images is None or (is_int(self.max_images) and self.max_images >= 1),
            "completeness_max_images must be null or a positive integer",
        )
