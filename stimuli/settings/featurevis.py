"""The feature visualization section (:mod:`stimuli.featurevis`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..sections import Section, cli, is_int, is_number, need

FEATURE_VIS_METHODS = ("maco", "fourier")
FEATURE_VIS_DEFAULTS = {"method": "fourier", "steps": 256, "lr": 0.1, "image_size": None, "seed": 0}


@dataclass(frozen=True)
class FeatureVisSettings(Section):
    """Synthetic references (``enabled``): images optimised by ``method`` for ``steps`` steps at learning
    rate ``lr``, of ``image_size`` pixels (None: the display size), from ``seed``.

    Its flat form is one key, ``feature_vis``: false (off), true (on with the defaults), or a mapping
    with keys among :data:`FEATURE_VIS_DEFAULTS` (on); written back as false or the full mapping."""

    enabled: bool = False
    method: str = field(
        default="fourier",
        metadata=cli(
            str,
            "--feature-vis",
            choices=tuple(sorted(FEATURE_VIS_METHODS)),
            implies={"enabled": True},
            help="add synthetic references (feature visualizations) with this parameterisation",
        ),
    )
    steps: int = field(
        default=256,
        metadata=cli(
            int,
            "--feature-vis-steps",
            implies={"enabled": True},
            help="optimisation steps per feature visualization (default 256)",
        ),
    )
    lr: float = 0.1
    image_size: int | None = None
    seed: int = 0

    @classmethod
    def keys(cls) -> dict[str, str]:
        return {name: "feature_vis" for name in ("enabled", *FEATURE_VIS_DEFAULTS)}

    @classmethod
    def from_flat(cls, source: Any) -> FeatureVisSettings:
        value = source.get("feature_vis", False) if isinstance(source, dict) else source
        if isinstance(value, bool):
            return cls(enabled=value)
        if not isinstance(value, dict):
            raise ValueError(
                f"feature_vis must be false, true or a mapping with keys among {', '.join(FEATURE_VIS_DEFAULTS)}"
            )
        bad = sorted(set(value) - set(FEATURE_VIS_DEFAULTS))
        if bad:
            raise ValueError(f"unknown feature_vis key(s): {', '.join(bad)}; known: {', '.join(FEATURE_VIS_DEFAULTS)}")
        return cls(enabled=True, **value)

    def flat(self) -> dict[str, Any]:
        return {"feature_vis": self.params() if self.enabled else False}

    def params(self) -> dict[str, Any]:
        """The mapping :func:`stimuli.featurevis.visualize_units` reads (and the manifest stores)."""
        return {name: getattr(self, name) for name in FEATURE_VIS_DEFAULTS}

    def validate(self) -> None:
        need(isinstance(self.enabled, bool), "feature_vis must be false, true or a mapping")
        need(
            self.method in FEATURE_VIS_METHODS,
            f"feature_vis.method must be one of {', '.join(FEATURE_VIS_METHODS)}, not {self.method!r}",
        )
        need(
            is_int(self.steps) and self.steps >= 1, f"feature_vis.steps must be a positive integer, not {self.steps!r}"
        )
        need(
            is_int(self.seed) and self.seed >= 0, f"feature_vis.seed must be a non-negative integer, not {self.seed!r}"
        )
        need(is_number(self.lr) and self.lr > 0, f"feature_vis.lr must be a positive number, not {self.lr!r}")
        need(
            self.image_size is None
            or (is_int(self.image_size) and 8 <= self.image_size <= 1024 and self.image_size % 2 == 0),
            "feature_vis.image_size must be null (the display size) or an even integer in "
            f"[8, 1024], not {self.image_size!r}",
        )
