"""The bases a job can name: each registered once, by its ``name``."""

from __future__ import annotations

from typing import Any, TypeVar

from .base import Basis

BASIS_CLASSES: dict[str, type[Basis]] = {}

B = TypeVar("B", bound=type[Basis])


def register(cls: B) -> B:
    """Make ``cls`` a basis jobs can name (``cls.name``); returns ``cls``, so it also decorates. A name
    registered twice is an error: two modules would otherwise claim one basis."""
    if not (isinstance(cls, type) and issubclass(cls, Basis)):
        raise TypeError(f"a basis must be a subclass of stimuli.bases.Basis, not {cls!r}")
    name = cls.name
    if not isinstance(name, str) or not name or name == Basis.name:
        raise ValueError(f"{cls.__name__} needs its own `name`")
    if name in BASIS_CLASSES and BASIS_CLASSES[name] is not cls:
        raise ValueError(f"a basis named {name!r} is already registered ({BASIS_CLASSES[name].__name__})")
    BASIS_CLASSES[name] = cls
    return cls


def unregister(name: str) -> None:
    """Forget the basis ``name`` (a test's toy basis, once the test is done)."""
    BASIS_CLASSES.pop(name, None)


def basis_names() -> tuple[str, ...]:
    """The registered bases' names, in registration order."""
    return tuple(BASIS_CLASSES)


def basis_class(name: str) -> type[Basis]:
    try:
        return BASIS_CLASSES[name]
    except KeyError:
        raise ValueError(f"unknown basis {name!r}; choose from {', '.join(BASIS_CLASSES)}") from None


def make_basis(name: str, **params: Any) -> Basis:
    """A basis by name (any registered one: ``neuron``, ``pca``, ``nmf``, ``dictionary``, ``sae``) with its
    parameters."""
    cls = basis_class(name)
    try:
        return cls(**params)
    except TypeError as exc:
        raise ValueError(f"bad parameters for basis {name!r}: {exc}") from None


def basis_from_settings(name: str, settings: Any, *, seed: int = 0, device: str = "auto") -> Basis:
    """The basis ``name`` with its parameters read from a job's bases section
    (:class:`stimuli.settings.bases.BasisSettings`)."""
    return make_basis(name, **basis_class(name).params_from_settings(settings, seed=seed, device=device))
