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


def cli(kind: Any, *flags: str, help: str | None = None,  # noqa: A002 - argparse's name
        choices: tuple[str, ...] | None = None, action: str | None = None,
        implies: dict[str, Any] | None = None, metavar: str | None = None) -> dict[str, Any]:
    """A field's command-line flag(s) (``python -m stimuli generate``), as dataclass field metadata: the
    type argparse converts with (``bool``: a switch that sets True), the flags (default ``--`` + the flat
    key with dashes), help (or a function giving it when the parser is built, for a list read from a
    registry), choices, ``action="store_false"`` for a switch that sets False, and
    ``implies``: other fields of the section set when the flag is given (``--attribution lrp`` turns the
    overlays on); ``metavar`` names the value in the help (default: the flat key)."""
    return {"cli": {"kind": kind, "flags": flags, "help": help, "choices": choices, "action": action,
                    "implies": implies or {}, "metavar": metavar}}


def comma_list(text: str) -> list[str]:
    """A comma separated command-line value as a list (``--layers conv1,conv2``)."""
    return [s.strip() for s in text.split(",") if s.strip()]


def flag_fields(section: type) -> dict[str, dict[str, Any]]:
    """``{field: cli metadata}`` of the fields of the dataclass ``section`` that have a command-line flag."""
    return {f.name: f.metadata["cli"] for f in dataclasses.fields(section) if "cli" in f.metadata}


def _flat_key(section: type, name: str) -> str:
    return section.key(name) if isinstance(section, type) and issubclass(section, Section) else name


def add_flags(parser: Any, section: type, prefix: str = "") -> None:
    """The command-line flags of ``section``'s fields that have :func:`cli` metadata, added to an argparse
    parser with ``prefix + field`` as destinations; a flag left out stays None."""
    for name, spec in flag_fields(section).items():
        flags = spec["flags"] or ("--" + _flat_key(section, name).replace("_", "-"),)
        dest = prefix + name
        text = spec["help"]() if callable(spec["help"]) else spec["help"]
        if spec["kind"] is bool:
            action = spec["action"] or "store_true"
            parser.add_argument(*flags, dest=dest, action=action, default=None, help=text)
        else:
            parser.add_argument(*flags, dest=dest, type=spec["kind"], choices=spec["choices"], help=text,
                                metavar=None if spec["choices"]
                                else spec["metavar"] or _flat_key(section, name).upper())


def flags_given(args: Any, section: type, prefix: str = "") -> dict[str, Any]:
    """``{field: value}`` of the flags of ``section`` given on the command line (as :func:`add_flags` added
    them), with the fields each given flag implies."""
    given: dict[str, Any] = {}
    for name, spec in flag_fields(section).items():
        value = getattr(args, prefix + name, None)
        if value is not None:
            given.update(spec["implies"])
            given[name] = value
    return given


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
