"""A section of the job's configuration: the options of one algorithm, as a small dataclass the
algorithm's module owns and that validates itself (:class:`stimuli.config.StimulusConfig` composes them).

Stored job parameters and manifests hold the options as flat keys (``sobol_grid``, ``mis_layer``); a
section names its flat key per field (``FLAT``, by default ``PREFIX + field``), reads itself from an
object or mapping with those keys (:meth:`Section.from_flat`) and writes them back (:meth:`Section.flat`),
so the stored form does not change.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, ClassVar


class Section:
    """Base of the configuration sections (each a frozen dataclass)."""

    PREFIX: ClassVar[str] = ""
    # field -> flat key where it is not PREFIX + field
    FLAT: ClassVar[dict[str, str]] = {}

    @classmethod
    def key(cls, name: str) -> str:
        """The flat key of the field ``name``."""
        return cls.FLAT.get(name, cls.PREFIX + name)

    @classmethod
    def keys(cls) -> dict[str, str]:
        """``{field: flat key}`` of every field."""
        return {f.name: cls.key(f.name) for f in dataclasses.fields(cls)}  # type: ignore[arg-type]

    @classmethod
    def from_flat(cls, source: Any):
        """The section from an object (a configuration) or a mapping holding the flat keys; a key it
        lacks keeps the section's default."""
        get = source.get if isinstance(source, dict) else (lambda k, d: getattr(source, k, d))
        missing = object()
        values = {name: get(flat, missing) for name, flat in cls.keys().items()}
        return cls(**{name: v for name, v in values.items() if v is not missing})

    def flat(self) -> dict[str, Any]:
        return {flat: getattr(self, name) for name, flat in self.keys().items()}

    def validate(self) -> None:
        """ValueError naming the flat key of the first option that is wrong."""


def cli(kind: type, flag: str | None = None, help: str | None = None,  # noqa: A002 - argparse's name
        choices: tuple[str, ...] | None = None) -> dict[str, Any]:
    """A field's command-line flag (``python -m stimuli generate``), as dataclass field metadata: its
    type, its flag (default ``--`` + the flat key with dashes), help and choices."""
    return {"cli": {"kind": kind, "flag": flag, "help": help, "choices": choices}}


def flag_fields(section: type[Section]) -> dict[str, dict[str, Any]]:
    """``{flat key: cli metadata}`` of the fields of ``section`` that have a command-line flag."""
    return {section.key(f.name): f.metadata["cli"] for f in dataclasses.fields(section)  # type: ignore[arg-type]
            if "cli" in f.metadata}


def add_flags(parser: Any, section: type[Section]) -> None:
    """The command-line flags of ``section``'s fields that have :func:`cli` metadata, added to an argparse
    parser with the flat keys as destinations; a flag left out stays None."""
    for dest, spec in flag_fields(section).items():
        flag = spec["flag"] or "--" + dest.replace("_", "-")
        if spec["kind"] is bool:
            parser.add_argument(flag, dest=dest, action="store_true", default=None, help=spec["help"])
        else:
            parser.add_argument(flag, dest=dest, type=spec["kind"], choices=spec["choices"], help=spec["help"])


def need(condition: bool, message: str) -> None:
    if not condition:
        raise ValueError(message)


def is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def is_int_list(value: Any, low: int = 1) -> bool:
    """A non-empty list of integers >= ``low``."""
    return isinstance(value, list) and bool(value) and all(is_int(v) and v >= low for v in value)
