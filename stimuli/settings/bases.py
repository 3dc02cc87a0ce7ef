"""The bases section: which bases are fitted to each layer, with how many components and their own
parameters (:mod:`stimuli.bases`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..sections import Section, cli, comma_list, is_int, need


def _default_bases() -> list[str]:
    return ["neuron", "pca", "nmf"]


@dataclass(frozen=True)
class BasisSettings(Section):
    """The bases ``names`` (registered in :mod:`stimuli.bases`), ``n_components`` (an int for every basis,
    a mapping ``basis -> int``, or None: as many as the layer has channels), and each basis's own
    parameters under the key its ``tags.config_section`` names (``nmf``, ``dictionary``, ``sae``; keys
    among its ``tags.config_defaults``).

    The names are checked against the registry by :meth:`check_registered`, which imports the bases (and
    with them scikit-learn); :meth:`validate` checks only the shapes, so that this module stays light."""

    FLAT = {"names": "bases"}

    names: list[str] = field(default_factory=_default_bases, metadata=cli(
        comma_list, "--bases", help=lambda: f"comma separated: {','.join(_registered())}"))
    n_components: int | dict[str, int] | None = field(default=None, metadata=cli(
        int, "--components", help="components per basis (default: all)"))
    nmf: dict[str, Any] = field(default_factory=dict)
    dictionary: dict[str, Any] = field(default_factory=dict)
    sae: dict[str, Any] = field(default_factory=dict)

    def validate(self) -> None:
        need(isinstance(self.names, list) and len(self.names) > 0 and all(isinstance(b, str) for b in self.names),
             "bases must be a non-empty list of basis names")
        need(len(set(self.names)) == len(self.names), f"bases are repeated: {self.names}")
        check_per_basis("n_components", self.n_components, self.names, allow_none=True)

    def check_registered(self) -> None:
        """ValueError for a basis name not registered, or a basis's parameters it does not take; each
        basis's own section is checked whether or not the basis is used, so a job's stored parameters
        never hold a bad section."""
        from ..bases import basis_class

        known = _registered()
        for b in self.names:
            need(b in known, f"unknown basis {b!r}; choose from {', '.join(known)}")
        if isinstance(self.n_components, dict):
            for b in self.n_components:
                need(b in known, f"n_components names unknown basis {b!r}")
        for name in known:
            cls = basis_class(name)
            key = cls.tags.config_section
            if key is None or not hasattr(self, key):
                continue
            section = getattr(self, key)
            need(isinstance(section, dict), f"{key} must be a mapping of {name} parameters")
            defaults = cls.tags.config_defaults
            bad = sorted(set(section) - set(defaults))
            need(not bad, f"unknown {key} parameter(s): {', '.join(bad)}; known: {', '.join(defaults)}")
            cls.check_params({**defaults, **section})

    def components_for(self, basis: str) -> int | None:
        if self.n_components is None:
            return None
        if isinstance(self.n_components, dict):
            value = self.n_components.get(basis)
            return None if value is None else int(value)
        return int(self.n_components)

    def own_params(self, section: str | None) -> dict[str, Any]:
        """A basis's own parameters as given (its ``tags.config_section``; {} for None)."""
        return {} if section is None else dict(getattr(self, section, {}))


def _registered() -> list[str]:
    from ..bases import basis_names

    return basis_names()


def check_per_basis(name: str, value: Any, bases: list[str], allow_none: bool) -> None:
    """ValueError unless ``value`` is a positive integer or a mapping ``basis -> positive integer`` (with
    a value for every basis of ``bases`` unless ``allow_none``)."""
    if value is None and allow_none:
        return
    if isinstance(value, dict):
        missing = [b for b in bases if b not in value] if not allow_none else []
        need(not missing, f"{name} gives no value for basis(es) {', '.join(missing)}")
        for b, v in value.items():
            need((v is None and allow_none) or (is_int(v) and v >= 1),
                 f"{name}[{b!r}] must be a positive integer, not {v!r}")
        return
    need(is_int(value) and value >= 1,
         f"{name} must be a positive integer or a mapping basis -> integer, not {value!r}")
