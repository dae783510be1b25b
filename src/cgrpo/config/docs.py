"""Config keys described for people: ``--help`` lines, the docs table and error messages.

Walks config dataclasses (see :mod:`cgrpo.config.core`) through their resolved annotations:
nested dataclasses are *sections* (their keys are dotted, ``trainer.lr``); a field typed
with a strategy-family base class (see :mod:`cgrpo.config.registry`) is a *family section*,
documented as ``section.field.kind`` plus every parameter of every kind, each marked with
the kinds that have it (``method.shaping.gamma (sars)``).
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin

from cgrpo.config.errors import shorten
from cgrpo.config.registry import Registry, family_of

__all__ = [
    "OptionInfo",
    "config_keys",
    "config_markdown_table",
    "config_options",
    "describe_config",
    "undocumented_keys",
]

_NONE_TYPE = type(None)


# --------------------------------------------------------------------------------------------
# Introspection (shared with cgrpo.config.core)
# --------------------------------------------------------------------------------------------


def type_hints(cls: type) -> dict[str, Any]:
    """Resolved annotations of a dataclass (strings from postponed evaluation included)."""
    try:
        return typing.get_type_hints(cls)
    except Exception as exc:  # NameError for names that only exist in a local scope, etc.
        raise TypeError(
            f"cannot resolve the type annotations of config class {cls.__qualname__}: {exc}. "
            "Config dataclasses must be defined at module level."
        ) from exc


def init_fields(cls: type) -> dict[str, dataclasses.Field[Any]]:
    """The fields of ``cls`` that are settable through ``__init__`` (the config keys)."""
    return {f.name: f for f in dataclasses.fields(cls) if f.init}


def field_default(f: dataclasses.Field[Any]) -> Any:
    """A field's default (a fresh one for ``default_factory``), or ``MISSING``."""
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return dataclasses.MISSING


def is_union(tp: Any) -> bool:
    return get_origin(tp) is Union or isinstance(tp, types.UnionType)


def optional_member(tp: Any) -> Any:
    """``X`` for ``X | None``, else ``tp`` itself."""
    if is_union(tp):
        members = [a for a in get_args(tp) if a is not _NONE_TYPE]
        if len(members) == 1:
            return members[0]
    return tp


def kind_name(obj: Any) -> str | None:
    """The registered kind name of a kind class or instance, else None."""
    cls = obj if isinstance(obj, type) else type(obj)
    reg, name = family_of(cls), getattr(cls, "kind", None)
    return name if reg is not None and reg.kinds.get(name) is cls else None


def family(tp: Any) -> Registry | None:
    """The registry if ``tp`` (or ``X`` of ``X | None``) is a family base class, else None.

    A registered kind class used as an annotation itself is a plain section instead.
    """
    base = optional_member(tp)
    reg = family_of(base)
    return reg if reg is not None and kind_name(base) is None else None


def section_class(tp: Any) -> type | None:
    """The dataclass behind ``tp`` (a dataclass or ``Dataclass | None``), else None."""
    base = optional_member(tp)
    if isinstance(base, type) and dataclasses.is_dataclass(base) and family(base) is None:
        return base
    return None


def join(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


def type_name(tp: Any) -> str:
    """Human-readable name of a type annotation (``float | None``, ``list[int]``, ...)."""
    if tp is _NONE_TYPE or tp is None:
        return "None"
    if tp is Any:
        return "any"
    if is_union(tp):
        return " | ".join(type_name(a) for a in get_args(tp))
    origin = get_origin(tp)
    if origin is Literal:
        return " | ".join(format_value(a) for a in get_args(tp))
    if origin is not None:
        args = get_args(tp)
        name = getattr(origin, "__name__", str(origin))
        if not args:
            return name
        if origin is tuple and len(args) == 2 and args[1] is Ellipsis:
            return f"tuple[{type_name(args[0])}, ...]"
        return f"{name}[{', '.join(type_name(a) for a in args)}]"
    if isinstance(tp, type):
        return tp.__name__
    return str(tp)


def format_value(value: Any) -> str:
    """Compact YAML-like rendering of a default value."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return repr(value)
    if isinstance(value, Path):
        return repr(str(value))
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(format_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {format_value(v)}" for k, v in value.items()) + "}"
    return repr(value)


# --------------------------------------------------------------------------------------------
# Options
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class OptionInfo:
    """Documentation of one config key, as yielded by :func:`config_options`."""

    key: str
    """Full dotted key, e.g. ``trainer.lr``."""
    type_name: str
    """Readable annotation, e.g. ``float | None``."""
    default: Any
    """Default value, or :data:`dataclasses.MISSING` for a required key."""
    help: str
    """The field's ``help`` metadata ('' when undocumented)."""
    unit: str | None
    """The field's ``unit`` metadata."""
    is_section: bool
    """True for a nested-dataclass key whose sub-keys are listed after it."""
    kinds: tuple[str, ...] = ()
    """For a parameter of a family section: the kinds that have it (empty otherwise)."""

    @property
    def default_text(self) -> str:
        """The default rendered for humans (``required`` when there is none)."""
        if self.default is dataclasses.MISSING:
            return "required"
        return format_value(self.default)


def config_options(cls: type, prefix: str = "") -> Iterator[OptionInfo]:
    """Yield an :class:`OptionInfo` for every key of ``cls``, depth first.

    Sections (nested dataclasses) are yielded themselves only when they can be ``null``;
    their sub-keys always follow. Defaults of sub-keys come from the parent's default
    instance when it has one, so a section defaulting to ``Sub(x=2)`` documents ``x: 2``.
    A family section yields ``<key>.kind`` and then each kind's parameters, once per key.
    """
    yield from _options(cls, prefix, instance=None)


def _options(cls: type, prefix: str, instance: Any) -> Iterator[OptionInfo]:
    hints = type_hints(cls)
    for name, f in init_fields(cls).items():
        key = join(prefix, name)
        tp = hints.get(name, Any)
        default = getattr(instance, name) if instance is not None else field_default(f)
        help_text = str(f.metadata.get("help", ""))
        if f.metadata.get("check"):
            help_text += f"; valid: {f.metadata['check']}"
        unit = f.metadata.get("unit")
        section, reg = section_class(tp), family(tp)
        if section is None and reg is None:
            yield OptionInfo(key, type_name(tp), default, help_text, unit, False)
            continue
        base = optional_member(tp)
        present = isinstance(default, base)
        if base is not tp:  # Optional section: document the key itself too
            yield OptionInfo(
                key, type_name(tp), None if present else default, help_text, unit, True
            )
        if section is not None:
            yield from _options(section, key, default if present else None)
        else:
            yield from _family_options(reg, key, default if present else None, help_text=help_text)


def _family_options(
    reg: Registry, key: str, default: Any, *, help_text: str
) -> Iterator[OptionInfo]:
    current = kind_name(default) if default is not None else None
    kinds = sorted(reg.kinds, key=lambda k: (k != current, k))  # the default kind first
    shown = current if current is not None else dataclasses.MISSING
    names = " | ".join(format_value(k) for k in sorted(reg.kinds))
    yield OptionInfo(f"{key}.kind", names, shown, help_text, None, False)
    params: dict[str, OptionInfo] = {}
    for kind in kinds:
        for info in _options(reg.kinds[kind], key, default if kind == current else None):
            seen = params.get(info.key)
            note = seen.kinds + (kind,) if seen else info.kinds or (kind,)
            params[info.key] = dataclasses.replace(seen or info, kinds=note)
    yield from params.values()


def config_keys(cls: type) -> list[str]:
    """All dotted leaf keys of config class ``cls`` (sections are descended into)."""
    return [info.key for info in config_options(cls) if not info.is_section]


def undocumented_keys(cls: type) -> list[str]:
    """Dotted keys of ``cls`` whose field has no (non-empty) ``help`` metadata."""
    return [info.key for info in config_options(cls) if not info.help.strip()]


def describe_config(cls: type, prefix: str = "") -> str:
    """One line per key, ``  key (type, default: X[, unit: U])  help``, for ``--help`` output.

    A family parameter names its kinds first: ``  method.shaping.gamma (sars; float, ...)``.
    """
    rows: list[tuple[str, str]] = []
    for info in config_options(cls, prefix):
        details = f"{info.type_name}, default: {info.default_text}"
        if info.unit:
            details += f", unit: {info.unit}"
        if info.kinds:
            details = f"{', '.join(info.kinds)}; {details}"
        rows.append((f"  {info.key} ({details})", info.help))
    if not rows:
        return ""
    width = max(len(left) for left, _ in rows)
    return "\n".join(f"{left:<{width}}  {text}".rstrip() for left, text in rows)


def _md_cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def config_markdown_table(cls: type) -> str:
    """A markdown table ``key | type | default | unit | meaning`` documenting every key."""
    lines = ["| key | type | default | unit | meaning |", "| --- | --- | --- | --- | --- |"]
    for info in config_options(cls):
        kinds = f" ({', '.join(info.kinds)})" if info.kinds else ""
        cells = [
            f"`{info.key}`{kinds}",
            f"`{info.type_name}`",
            f"`{info.default_text}`",
            info.unit or "",
            info.help,
        ]
        lines.append("| " + " | ".join(_md_cell(c) for c in cells) + " |")
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------------------------
# Error messages (cgrpo.config.core raises them as one-line ConfigErrors)
# --------------------------------------------------------------------------------------------


def describe_got(value: Any) -> str:
    text = repr(value)
    if len(text) > 80:
        text = text[:77] + "..."
    return f"{text} ({type(value).__name__})"


def unknown_key_message(
    root: type, cls: type, name: str, *, prefix: str, kind: str | None = None
) -> str:
    """``name`` is no key of ``cls`` (at ``prefix`` of ``root``; a family kind's if ``kind``)."""
    valid = sorted([*init_fields(cls), *(["kind"] if kind else [])])
    guess = len(name) <= 100  # (no key is near a longer name; difflib on 1 MB took 25 s)
    close = [join(prefix, k) for k in difflib.get_close_matches(name, valid, 1)] if guess else []
    if not close and kind is None and guess:  # the key may exist at another level
        keys = [info.key for info in config_options(root)]
        last = {k: k.rsplit(".", 1)[-1] for k in keys}
        close = [k for k in keys if last[k] == name] or [
            k for k in keys if difflib.get_close_matches(name, [last[k]], 1, 0.8)
        ]
    hint = f" Did you mean '{close[0]}'?" if close else ""
    if kind is not None and not close:
        others = [k for k, c in sorted(family_of(cls).kinds.items()) if name in init_fields(c)]
        hint = f" '{name}' is a key of kind '{others[0]}'." if others else ""
    where = f"under '{prefix}'" if prefix else "at the top level"
    where += f" (kind '{kind}')" if kind else ""
    return (
        f"unknown config key '{shorten(join(prefix, name))}'.{hint} Valid keys {where}: "
        f"{', '.join(valid)}"
    )


def _locate(root: type, data: Any, loc: Sequence[Any]) -> tuple[str, Any, Any]:
    """Dotted key, annotation and raw value at a pydantic error location."""
    key, tp, value = "", root, data
    for part in loc:
        base = optional_member(tp)
        origin, args = get_origin(base), get_args(base)
        if (reg := family(tp)) is not None and part in reg.kinds:
            tp = reg.kinds[part]  # the union tag, not a key
            continue
        if (section := section_class(tp)) is not None and part in init_fields(section):
            tp, key = type_hints(section).get(part, Any), join(key, part)
        elif origin in (list, tuple) and isinstance(part, int):
            fixed = origin is tuple and args and args[-1] is not Ellipsis
            tp = (args[part] if fixed and part < len(args) else args[0]) if args else Any
            key = f"{key}[{part}]"
        elif origin is dict and isinstance(part, str) and part != "[key]":
            tp, key = (args[1] if args else Any), join(key, part)
        else:
            break
        try:
            value = value[part]
        except (KeyError, IndexError, TypeError):
            value = dataclasses.MISSING
    return key, tp, value


def validation_message(root: type, data: Any, errors: Sequence[Any]) -> str:
    """The message of pydantic's first error (``errors()``) validating ``data`` as ``root``.

    Error locations start with the validator's one field name, which is skipped.
    """
    err = errors[0]
    key, tp, value = _locate(root, data, err["loc"][1:])
    if value is dataclasses.MISSING:
        value = err.get("input")
    kind = err["type"]
    if kind in ("missing", "missing_argument"):
        keys = [_locate(root, data, e["loc"][1:])[0] for e in errors if e["type"] == kind]
        return "missing required config key(s): " + ", ".join(f"'{k}'" for k in keys)
    if kind == "value_error" and (section_class(tp) or family(tp) or key == ""):
        where = f"section '{key}'" if key else "config"  # from a __post_init__
        return f"invalid {where}: {err['ctx']['error']}"
    if kind in ("unexpected_keyword_argument", "extra_forbidden", "value_error"):
        return f"config key '{key}': {err['msg']}"
    member = optional_member(tp) if value is not None else tp
    expected = type_name(member)
    if get_origin(member) is Literal:
        expected = "one of " + ", ".join(format_value(a) for a in get_args(member))
    hint = ""
    if member is int and isinstance(value, float):
        hint = "; integer keys do not accept floats"
    elif member is str:
        hint = "; quote the value to make it a string"
    elif section_class(member) is not None:
        hint = "; expected a mapping of its keys"
    elif kind in ("too_long", "too_short") and get_origin(member) is tuple:
        hint = f"; expected exactly {len(get_args(member))} items"
    return f"config key '{key}' expects {expected}, got {describe_got(value)}{hint}"
