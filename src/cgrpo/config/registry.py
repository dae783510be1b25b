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

The same :class:`Registry` holds the kinds that are not config classes: the rewards
(:data:`cgrpo.rewards.REWARDS`, factories called with a reward's options) and the segmenters
(:data:`cgrpo.rewards.segment.SEGMENTERS`). Such a registry is made with ``tag=False`` (its
entries get no ``kind`` attribute) and may name entries *lazily*, by a ``"module:attribute"``
path imported on the entry's first lookup, so that knowing a kind's name loads nothing::

    REWARDS = Registry("reward", tag=False, lazy={"dino": "cgrpo.rewards.hf:DinoIdentityReward"})
    "dino" in REWARDS        # True, nothing imported
    REWARDS.names()          # sorted names, nothing imported
    REWARDS.get("dino")      # imports cgrpo.rewards.hf, returns the class
    REWARDS.make("dino", path=...)

An unknown name raises ``ValueError`` naming the valid kinds. This module imports no torch.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator, Mapping, MutableMapping
from typing import Any, ClassVar, Generic, TypeVar

from cgrpo.config.errors import quoted

__all__ = ["Kinds", "Registry", "family_of", "import_path"]

T = TypeVar("T")
C = TypeVar("C")


def import_path(path: str) -> Any:
    """The object at ``"package.module:attribute"`` (``attribute`` may be dotted).

    ``ImportError`` if the module cannot be imported or has no such attribute; ``ValueError``
    if ``path`` is not of that form."""
    module, sep, attr = path.partition(":")
    if not sep or not module or not attr:
        raise ValueError(f"expected 'package.module:attribute', got {path!r}")
    obj: Any = importlib.import_module(module)
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise ImportError(f"module {module!r} has no attribute {attr!r}") from None
    return obj


class _Lazy:
    """A registry entry not imported yet: its ``"module:attribute"`` path."""

    __slots__ = ("path",)

    def __init__(self, path: str) -> None:
        self.path = path

    def __repr__(self) -> str:
        return f"<lazy {self.path}>"


class Kinds(MutableMapping[str, T]):
    """Name -> entry of a :class:`Registry` (its ``kinds``), in registration order.

    A lazy entry is imported on its first lookup (``kinds[name]``, ``get``, ``values``,
    ``items``); membership, iteration and ``len`` import nothing. ``del kinds[name]``
    removes an entry (tests that register a kind for a while)."""

    def __init__(self, registry: Registry[T]) -> None:
        self._registry = registry
        self._entries: dict[str, T | _Lazy] = {}

    def __getitem__(self, name: str) -> T:
        entry = self._entries[name]  # KeyError for an unknown name, as a dict
        if isinstance(entry, _Lazy):
            obj = import_path(entry.path)
            self._registry._tag(obj, name)
            self._entries[name] = entry = obj
        return entry

    def __setitem__(self, name: str, entry: T) -> None:
        self._entries[name] = entry

    def __delitem__(self, name: str) -> None:
        del self._entries[name]

    def __contains__(self, name: object) -> bool:
        try:
            return name in self._entries
        except TypeError:  # an unhashable name is no kind
            return False

    def __iter__(self) -> Iterator[str]:
        return iter(list(self._entries))

    def __len__(self) -> int:
        return len(self._entries)

    def lazy_path(self, name: str) -> str | None:
        """The ``"module:attribute"`` of ``name`` while it is not imported, else None."""
        entry = self._entries.get(name)
        return entry.path if isinstance(entry, _Lazy) else None

    def add_lazy(self, name: str, path: str) -> None:
        self._entries[name] = _Lazy(path)

    def __repr__(self) -> str:
        return f"Kinds({self._entries!r})"


class Registry(Generic[T]):
    """Name -> kind of one family (``family`` names it in messages).

    ``tag``: registering sets the entry's ``kind`` attribute to its name (the strategy
    families, whose kinds are config classes); ``lazy``: entries given by their
    ``"module:attribute"`` path, imported on first lookup (see :class:`Kinds`)."""

    generation: ClassVar[int] = 0
    """Counts registrations in all registries (lets :mod:`cgrpo.config.core` cache validators)."""

    def __init__(
        self, family: str, *, tag: bool = True, lazy: Mapping[str, str] | None = None
    ) -> None:
        self.family = family
        self.tag = tag
        self.kinds: Kinds[T] = Kinds(self)
        for kind, path in (lazy or {}).items():
            self.register_lazy(kind, path)

    def _tag(self, obj: Any, kind: str) -> None:
        if self.tag:
            obj.kind = kind

    def _taken(self, kind: str) -> ValueError:
        return ValueError(f"{self.family} kind {kind!r} is registered twice")

    def register(self, kind: str) -> Callable[[C], C]:
        """Decorator (or ``register(kind)(obj)``): make ``obj`` the kind called ``kind``.

        A name taken by another entry raises ``ValueError`` (registering the same object
        again, or the object a lazy entry names, is allowed)."""

        def deco(obj: C) -> C:
            if kind in self.kinds:
                path = self.kinds.lazy_path(kind)
                mine = f"{getattr(obj, '__module__', '')}:{getattr(obj, '__qualname__', '')}"
                if path != mine and (path is not None or self.kinds[kind] is not obj):
                    raise self._taken(kind)
            self._tag(obj, kind)
            self.kinds[kind] = obj  # type: ignore[assignment]
            Registry.generation += 1
            return obj

        return deco

    def register_lazy(self, kind: str, path: str) -> None:
        """Make the object at ``path`` (``"module:attribute"``) the kind called ``kind``,
        imported on its first lookup. A name taken by another entry raises ``ValueError``."""
        if kind in self.kinds and self.kinds.lazy_path(kind) != path:
            raise self._taken(kind)
        self.kinds.add_lazy(kind, path)
        Registry.generation += 1

    def names(self) -> list[str]:
        """The registered kinds, sorted (lazy ones included, none imported)."""
        return sorted(self.kinds)

    def unknown(self, kind: Any) -> ValueError:
        """The error for a name that is not a kind: it names the valid ones."""
        return ValueError(
            f"unknown {self.family} kind {quoted(kind)}; valid kinds: {', '.join(self.names())}"
        )

    def get(self, kind: Any) -> T:
        """The entry registered as ``kind`` (imported if lazy); ValueError naming the valid
        kinds otherwise."""
        if kind not in self.kinds:
            raise self.unknown(kind)
        return self.kinds[kind]

    def make(self, kind: str, **params: Any) -> Any:
        """An instance of kind ``kind`` with ``params`` (the entry called with them)."""
        return self.get(kind)(**params)  # type: ignore[operator]

    def __contains__(self, kind: object) -> bool:
        return kind in self.kinds

    def __repr__(self) -> str:
        return f"Registry({self.family!r}, {self.names()})"


def family_of(tp: Any) -> Registry | None:
    """The registry of a family base class (its ``registry`` attribute), else None."""
    reg = getattr(tp, "registry", None) if isinstance(tp, type) else None
    return reg if isinstance(reg, Registry) else None
