"""Typed configuration: dataclasses + YAML files + ``key=value`` CLI overrides, via pydantic.

Configs are (nested) :func:`dataclasses.dataclass` classes whose fields document themselves
through :func:`option` (``help`` and optional ``unit`` metadata)::

    @dataclass
    class TrainerConfig:
        lr: float = option(1e-4, "AdamW learning rate")
        steps: int = option(1000, "optimizer steps", unit="steps")

    cfg = load_config(Config, "run.yaml", ["trainer.lr=3e-4"])

Precedence is *defaults < YAML file < CLI overrides*. Each layer is merged onto the raw data
below it (a section given in part keeps the rest of its current value, the parent's default
instance included), then pydantic validates the result once, in strict mode and with its
rules for JSON input; that also runs each dataclass's ``__post_init__`` (a ValueError there
becomes a :class:`ConfigError` naming the section). Every problem is one
:class:`ConfigError` whose one-line message names the full dotted key. Type rules:

- ``int``: integers only; ``bool`` and every ``float`` (even ``3.0``) are rejected.
- ``float``: integers and floats, not bools. YAML is read with YAML 1.2 floats, so ``1e-4``
  is a float (PyYAML alone reads it as text); quoted text such as ``"1e-4"`` is rejected
  (pydantic's strict rule; the hand-written coercion used to accept it).
- ``bool``: YAML booleans only (``true``/``false``/``yes``/``no``/``on``/``off``, any case);
  quoted text such as ``"true"`` is rejected (likewise stricter than before).
- ``str``: strings only in YAML files (dates stay text: no YAML timestamps). On the command
  line a value that YAML parses to a non-string (``name=123``) falls back to the raw text
  when the field accepts that text.
- ``X | None``, ``list[X]``, ``tuple[X, ...]``, ``tuple[X, Y]``, ``dict[K, V]``,
  ``Literal[...]``, :class:`pathlib.Path` (from text) and nested dataclasses (from a
  mapping) are supported.

Strategy families (:mod:`cgrpo.config.registry`): a field typed with a family base class holds one
of its registered kinds, written ``{kind: name, ...its fields}`` or just ``name``. Without
``kind`` a layer's keys merge onto the current kind; a layer naming another kind starts from
that kind's defaults. A ``dict`` field is replaced by a YAML/dict value, but a dotted
override (``rewards.identity.weight=2``) sets inside its current value.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar, get_args, get_origin

import pydantic
import yaml

from cgrpo.config.docs import (
    describe_got,
    family,
    field_default,
    init_fields,
    join,
    kind_name,
    optional_member,
    section_class,
    type_hints,
    type_name,
    unknown_key_message,
    validation_message,
)
from cgrpo.config.errors import ConfigError, quoted, shorten
from cgrpo.config.ranges import check_ranges, parse_check
from cgrpo.config.registry import Registry
from cgrpo.config.validation import accepts, validate
from cgrpo.config.yaml_format import Dumper, read_yaml, yaml_scalar
from cgrpo.io.atomic import atomic_write

__all__ = ["config_from_dict", "config_to_dict", "load_config", "option", "save_config"]

T = TypeVar("T")

_MUTABLE_DEFAULT_TYPES = (list, dict, set, bytearray)
_MISSING = dataclasses.MISSING


def option(
    default: Any, help: str, unit: str | None = None, *, check: str | None = None, **kw: Any
) -> Any:
    """Declare a documented dataclass field.

    Args:
        default: Default value. Mutable defaults (lists, dicts, sets, dataclass instances) are
            deep-copied per instance through ``default_factory`` automatically. Pass
            :data:`dataclasses.MISSING` for a required key.
        help: One-line description shown by :func:`describe_config` and in the docs table.
        unit: Optional unit of measure (``"steps"``, ``"px"``, ...).
        check: Optional range of a number, e.g. ``">= 1"`` or ``"> 0, finite"``
            (:mod:`cgrpo.config.ranges`), checked when a config is built.
        **kw: Forwarded to :func:`dataclasses.field` (``metadata`` entries are merged).

    Returns:
        The :class:`dataclasses.Field` object (typed ``Any`` so it can be assigned to an
        annotated class attribute).
    """
    metadata: dict[str, Any] = dict(kw.pop("metadata", None) or {})
    metadata["help"] = help
    if unit is not None:
        metadata["unit"] = unit
    if check is not None:
        parse_check(check)  # a malformed range fails where it is declared
        metadata["check"] = check
    if "default_factory" in kw:
        if default is not _MISSING:
            raise TypeError("option(): pass either a default or default_factory, not both")
        return dataclasses.field(metadata=metadata, **kw)
    needs_factory = isinstance(default, _MUTABLE_DEFAULT_TYPES) or (
        dataclasses.is_dataclass(default) and not isinstance(default, type)
    )
    if needs_factory:
        template = copy.deepcopy(default)
        return dataclasses.field(
            default_factory=lambda: copy.deepcopy(template), metadata=metadata, **kw
        )
    return dataclasses.field(default=default, metadata=metadata, **kw)


# --------------------------------------------------------------------------------------------
# Layers: YAML files, dicts and overrides merged onto the raw data below them
# --------------------------------------------------------------------------------------------


class _Patch(dict):  # type: ignore[type-arg]
    """A mapping made by dotted overrides: merged into a ``dict`` value, not replacing it."""


class _UnknownKey(Exception):
    """An unknown key (class, name, prefix[, kind]); :func:`_build` words it for the root."""


def _merge(tp: Any, current: Any, layer: Any, *, key: str, kind: str | None = None) -> Any:
    """Raw data of ``layer`` on top of ``current`` (the value below it) for annotation ``tp``."""
    if (reg := family(tp)) is not None:
        return _merge_family(reg, current, layer, key=key)
    section = section_class(tp)
    if section is not None and isinstance(layer, Mapping):
        if current is not None and not isinstance(current, Mapping):  # (`run: 5` in a file)
            raise ConfigError(
                f"config key '{key}' expects {section.__name__}, got {describe_got(current)}; "
                "expected a mapping of its keys"
            )
        merged = dict(current) if isinstance(current, Mapping) else {}
        fields, hints = init_fields(section), type_hints(section)
        for name, value in layer.items():
            if name not in fields:
                raise _UnknownKey(section, str(name), key, kind)
            below = merged[name] if name in merged else _plain(field_default(fields[name]))
            merged[name] = _merge(hints.get(name, Any), below, value, key=join(key, name))
        return merged
    if isinstance(layer, _Patch) and isinstance(current, Mapping):
        value_tp = _child_type(tp, "", key)
        merged = dict(current)
        for name, value in layer.items():
            below = _entry_below(current.get(name), value)
            merged[name] = _merge(value_tp, below, value, key=f"{key}.{name}")
        return merged
    return layer


def _entry_below(below: Any, value: Any) -> Any:
    """What a dict entry's patch merges onto. Entries of named mappings (``rewards``,
    ``metrics``) follow the families' rule: a bare string is ``{kind: <string>}``, and a
    patch naming another ``kind`` starts afresh (no options of the old kind stay)."""
    if not isinstance(value, Mapping):
        return below
    if isinstance(below, str):
        below = {"kind": below}
    if isinstance(below, Mapping) and "kind" in value and below.get("kind") != value["kind"]:
        return {}
    return below


def _merge_family(reg: Registry, current: Any, layer: Any, *, key: str) -> Any:
    if isinstance(layer, str):
        layer = {"kind": layer}
    if not isinstance(layer, Mapping):
        if layer is None:
            return None
        raise ConfigError(
            f"config key '{key}' expects a {reg.family} kind name or a mapping with 'kind', "
            f"got {describe_got(layer)}"
        )
    below = dict(current) if isinstance(current, Mapping) else {}
    kind = layer.get("kind", below.get("kind"))
    if not isinstance(kind, str) or kind not in reg:
        raise ConfigError(
            f"unknown {reg.family} kind {quoted(kind)} for config key '{key}.kind'; "
            f"valid kinds: {', '.join(sorted(reg.kinds))}"
        )
    if kind != below.pop("kind", None):  # another kind: start from its defaults
        below = {}
    fields = {k: v for k, v in layer.items() if k != "kind"}
    return {"kind": kind, **_merge(reg.kinds[kind], below, fields, key=key, kind=kind)}


def _child_type(tp: Any, name: str, prefix: str) -> Any:
    """The annotation of key ``name`` below a value of annotation ``tp`` (for overrides)."""
    if (section := section_class(tp)) is not None:
        fields = init_fields(section)
        if name not in fields:
            raise _UnknownKey(section, name, prefix)
        return type_hints(section).get(name, Any)
    if (reg := family(tp)) is not None:  # checked against the final kind when merging
        hints = [type_hints(k).get(name) for k in reg.kinds.values()]
        return str if name == "kind" else next((h for h in hints if h is not None), Any)
    base = optional_member(tp)
    if base is Any or base is object:
        return Any
    if get_origin(base) is dict or base is dict:
        args = get_args(base)
        return args[1] if args else Any
    raise ConfigError(
        f"config key '{prefix}' is a {type_name(tp)} value, not a section; "
        f"cannot set '{shorten(join(prefix, name))}'"
    )


def _parse_override(text: str) -> tuple[str, str]:
    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or not key or "" in (part.strip() for part in key.split(".")):
        raise ConfigError(
            f"malformed override {quoted(text)}: expected the form key=value or "
            "section.key=value, "
            "e.g. 'optim.lr=1e-4'"
        )
    return key, raw.strip()


def _override_layer(cls: type, overrides: Sequence[str]) -> dict[str, Any]:
    """One layer made of all ``key=value`` overrides (the last of a key wins)."""
    layer: dict[str, Any] = {}
    for text in overrides:
        key, raw = _parse_override(text)
        *parents, last = key.split(".")
        node, tp = layer, cls
        for depth, name in enumerate(parents):
            tp = _child_type(tp, name, ".".join(parents[:depth]))
            child = node.get(name)
            if isinstance(child, str):  # a kind given earlier in this layer
                child = {"kind": child}
            if not isinstance(child, dict):
                child = _Patch(child if isinstance(child, Mapping) else {})
            node[name] = child
            node = child
        tp = _child_type(tp, last, ".".join(parents))
        value = yaml_scalar(raw, where=f"override '{shorten(key)}'")
        if isinstance(value, Mapping) and (family(tp) or section_class(tp)):
            below = node.get(last)
            node[last] = _deep_merge(below, value) if isinstance(below, Mapping) else value
        elif not isinstance(value, (str, Mapping)) and not accepts(tp, value):
            node[last] = raw if accepts(tp, raw) else value  # name=123 for a str key
        else:
            node[last] = value
    return layer


def _deep_merge(base: Mapping[str, Any], update: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for k, v in update.items():
        below = merged.get(k)
        merged[k] = (
            _deep_merge(below, v) if isinstance(v, Mapping) and isinstance(below, Mapping) else v
        )
    return merged


# --------------------------------------------------------------------------------------------
# Building: the layers merged, then validated once (cgrpo.config.validation)
# --------------------------------------------------------------------------------------------


def _build(cls: type[T], layers: Sequence[Any]) -> T:
    """Merge ``layers`` (raw data, or ``f(cls)`` making it) onto the defaults of ``cls``."""
    if not (isinstance(cls, type) and dataclasses.is_dataclass(cls)):
        raise TypeError(f"config class must be a dataclass, got {cls!r}")
    data: dict[str, Any] = {}
    try:
        for layer in layers:
            data = _merge(cls, data, layer(cls) if callable(layer) else layer, key="")
    except _UnknownKey as exc:
        section, name, prefix, *kind = exc.args
        raise ConfigError(
            unknown_key_message(cls, section, name, prefix=prefix, kind=kind[0] if kind else None)
        ) from None
    try:
        built = validate(cls, data)
    except pydantic.ValidationError as exc:
        errors = exc.errors(include_url=False)
        error = (errors[0].get("ctx") or {}).get("error")
        if isinstance(error, ConfigError):  # raised by a __post_init__
            raise error from None
        raise ConfigError(validation_message(cls, data, errors)) from None
    check_ranges(built)
    return built


def config_from_dict(cls: type[T], data: Mapping[str, Any]) -> T:
    """Build config ``cls`` from a (nested) mapping on top of its defaults, with validation."""
    return _build(cls, [_plain(dict(data))])


def load_config(
    cls: type[T],
    path: str | os.PathLike[str] | None = None,
    overrides: Sequence[str] = (),
) -> T:
    """Load config ``cls``: defaults, then the YAML file at ``path``, then ``overrides``.

    Args:
        cls: The (root) config dataclass.
        path: Optional YAML file holding a nested mapping that mirrors the dataclass fields.
        overrides: ``key=value`` / ``section.key=value`` strings; values are parsed as YAML.

    Raises:
        ConfigError: For a missing/invalid file, malformed override, unknown key or bad value.
    """
    if isinstance(overrides, str):
        raise TypeError("overrides must be a sequence of 'key=value' strings, not one string")
    file_layer = [lambda _: read_yaml(path)] if path is not None else []
    return _build(cls, [*file_layer, functools.partial(_override_layer, overrides=overrides)])


# --------------------------------------------------------------------------------------------
# Serialisation
# --------------------------------------------------------------------------------------------


def config_to_dict(cfg: Any) -> dict[str, Any]:
    """Convert a config dataclass instance to plain nested Python data (YAML-serialisable).

    Tuples become lists and paths become strings; only ``init`` fields are included; a
    family section becomes ``{kind: ..., **its fields}``.
    """
    if not (dataclasses.is_dataclass(cfg) and not isinstance(cfg, type)):
        raise TypeError(f"expected a config dataclass instance, got {type(cfg).__name__}")
    return {name: _plain(getattr(cfg, name)) for name in init_fields(type(cfg))}


def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        kind = kind_name(value)
        return {"kind": kind, **config_to_dict(value)} if kind else config_to_dict(value)
    if isinstance(value, Mapping):
        return {_plain(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    return value


def save_config(cfg: Any, path: str | os.PathLike[str]) -> Path:
    """Atomically write ``cfg`` as YAML to ``path`` (readable again by :func:`load_config`)."""

    text = yaml.dump(config_to_dict(cfg), Dumper=Dumper, sort_keys=False, allow_unicode=True)
    return atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))
