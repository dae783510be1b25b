"""Strategy families: kinds registered by name, each a typed config section.

A *family* (shaping, weighting, rollout schedule, objective, ...) is a base class holding a
:class:`Registry`. Each *kind* is a frozen dataclass subclass registered under a name; its
fields are its constants, so the dataclass instance is both the strategy object and its
config section. In YAML a family-typed field is a mapping with a ``kind``::

    method:
      shaping: {kind: sars, gamma: 0.4}

and on the command line ``method.shaping.kind=linear`` / ``method.shaping.gamma=0.2``.
A new kind registers itself, without editing the trainer or the config machinery::

    @SHAPINGS.register("mine")
    @dataclass(frozen=True)
    class MyShaping(Shaping):
        strength: float = option(1.0, "how much")

:mod:`cgrpo.config.core` recognises a family by the ``registry`` class attribute of a field's
annotation (see :func:`family_of`); to validate such a field with pydantic it gives the
base class a ``__get_pydantic_core_schema__`` (a union of the kinds, tagged by ``kind``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar, TypeVar

__all__ = ["Registry", "family_of"]

C = TypeVar("C", bound=type)


class Registry:
    """Name -> kind class of one strategy family (``family`` names it in messages)."""

    generation: ClassVar[int] = 0
    """Counts registrations in all registries (lets :mod:`cgrpo.config.core` cache validators)."""

    def __init__(self, family: str) -> None:
        self.family = family
        self.kinds: dict[str, type] = {}

    def register(self, kind: str) -> Callable[[C], C]:
        """Class decorator: make ``cls`` the kind called ``kind`` (sets ``cls.kind``)."""

        def deco(cls: C) -> C:
            if kind in self.kinds and self.kinds[kind] is not cls:
                raise ValueError(f"{self.family} kind {kind!r} is registered twice")
            cls.kind = kind  # type: ignore[attr-defined]
            self.kinds[kind] = cls
            Registry.generation += 1
            return cls

        return deco

    def get(self, kind: Any) -> type:
        """The class registered as ``kind``; ValueError naming the valid kinds otherwise."""
        try:
            return self.kinds[kind]
        except (KeyError, TypeError):
            raise ValueError(
                f"unknown {self.family} kind {kind!r}; valid kinds: {', '.join(sorted(self.kinds))}"
            ) from None

    def make(self, kind: str, **params: Any) -> Any:
        """An instance of kind ``kind`` with ``params``."""
        return self.get(kind)(**params)

    def __contains__(self, kind: object) -> bool:
        return kind in self.kinds


def family_of(tp: Any) -> Registry | None:
    """The registry of a family base class (its ``registry`` attribute), else None."""
    reg = getattr(tp, "registry", None) if isinstance(tp, type) else None
    return reg if isinstance(reg, Registry) else None
