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
    a mapping ``basis -> int``, or None: as many as the layer has channels), and ``params``: each basis's
    own parameters by the key its ``tags.config_section`` names (``nmf``, ``dictionary``, ``sae``; keys
    among its ``tags.config_defaults``). That key is also its flat key, so a registered basis brings its
    own key with it and no other file names it.

    The names are checked against the registry by :meth:`check_registered`, which imports the bases (and
    with them scikit-learn); :meth:`validate` checks only the shapes, so that this module stays light."""

    FLAT = {"names": "bases"}

    names: list[str] = field(
        default_factory=_default_bases,
        metadata=cli(comma_list, "--bases", help=lambda: f"comma separated, among: {', '.join(_registered())}"),
    )
    n_components: int | dict[str, int] | None = field(
        default=None, metadata=cli(int, "--components", help="components per basis (default: all)")
    )
    # config_section -> the parameters given (a section left empty is not kept: {} and absent are one)
    params: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def keys(cls) -> dict[str, str]:
        """The flat keys: ``bases``, ``n_components``, and each registered basis's parameter section under
        its own name (the keys ``params`` holds)."""
        return {"names": "bases", "n_components": "n_components", **{key: key for key in _sections()}}

    @classmethod
    def from_flat(cls, source: Any) -> BasisSettings:
        values: dict[str, Any] = {"names": source["bases"]} if "bases" in source else {}
        if "n_components" in source:
            values["n_components"] = source["n_components"]
        params = {key: source[key] for key in _sections() if key in source and source[key] != {}}
        return cls(**values, params=params)

    def flat(self) -> dict[str, Any]:
        return {
            "bases": self.names,
            "n_components": self.n_components,
            **{key: self.params.get(key, {}) for key in _sections()},
        }

    def validate(self) -> None:
        need(
            isinstance(self.names, list) and len(self.names) > 0 and all(isinstance(b, str) for b in self.names),
            "bases must be a non-empty list of basis names",
        )
        need(len(set(self.names)) == len(self.names), f"bases are repeated: {self.names}")
        check_per_basis("n_components", self.n_components, self.names, allow_none=True)
        need(isinstance(self.params, dict), "params must be a mapping of each basis's own parameters")

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
        unknown = sorted(set(self.params) - set(_sections()))
        need(not unknown, f"no registered basis takes the parameter section(s) {', '.join(unknown)}")
        for name in known:
            cls = basis_class(name)
            key = cls.tags.config_section
            if key is None:
                continue
            section = self.params.get(key, {})
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
        return {} if section is None else dict(self.params.get(section, {}))


def _sections() -> list[str]:
    """The parameter sections of the registered bases, in registration order."""
    from ..bases import basis_class

    return [key for key in (basis_class(name).tags.config_section for name in _registered()) if key is not None]


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
            need(
                (v is None and allow_none) or (is_int(v) and v >= 1),
                f"{name}[{b!r}] must be a positive integer, not {v!r}",
            )
        return
    need(
        is_int(value) and value >= 1, f"{name} must be a positive integer or a mapping basis -> integer, not {value!r}"
    )
