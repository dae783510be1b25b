"""Typed configuration machinery: dataclasses + YAML files + ``key=value`` CLI overrides.

Configs are (possibly nested) :func:`dataclasses.dataclass` classes whose fields document
themselves through field metadata (``help`` and optional ``unit``), most conveniently via
:func:`option`::

    @dataclass
    class TrainerConfig:
        lr: float = option(1e-4, "AdamW learning rate")
        steps: int = option(1000, "optimizer steps", unit="steps")

    @dataclass
    class Config:
        trainer: TrainerConfig = option(TrainerConfig(), "optimisation settings")

    cfg = load_config(Config, "run.yaml", ["trainer.lr=3e-4"])

Precedence is *defaults < YAML file < CLI overrides*. Every value is checked against the
field annotation (resolved with :func:`typing.get_type_hints`, so ``from __future__ import
annotations`` works) and every problem is reported as a single :class:`ConfigError` whose
message names the full dotted key.

Coercion rules (deliberately strict):

- ``int``: ints only; ``bool`` and every ``float`` (even ``3.0``) are rejected.
- ``float``: ints and floats (not bools); strings that :func:`float` accepts (PyYAML reads
  ``1e-4`` as a string because YAML 1.1 wants a dot in the mantissa).
- ``bool``: ``true``/``false`` booleans, or the strings ``"true"``/``"false"`` (any case).
  YAML itself also reads ``yes``/``no``/``on``/``off`` as booleans.
- ``str``: strings only in YAML files. On the command line a value that YAML parses to a
  non-string (``name=123``) falls back to the raw text when the field accepts a string.
- ``X | None``, ``list[X]``, ``tuple[X, ...]``, ``tuple[X, Y]``, ``dict[K, V]``,
  ``Literal[...]``, :class:`pathlib.Path` (from a string) and nested dataclasses (from a
  mapping, merged onto the field's default) are supported.

``__post_init__`` of each dataclass still runs; a :class:`ValueError` raised there is
re-raised as :class:`ConfigError` naming the section.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import os
import secrets
import types
import typing
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, TypeVar, Union, get_args, get_origin

import yaml

__all__ = [
    "ConfigError",
    "OptionInfo",
    "config_from_dict",
    "config_keys",
    "config_markdown_table",
    "config_options",
    "config_to_dict",
    "describe_config",
    "load_config",
    "option",
    "save_config",
    "undocumented_keys",
]

T = TypeVar("T")

_MUTABLE_DEFAULT_TYPES = (list, dict, set, bytearray)
_NONE_TYPE = type(None)


class ConfigError(ValueError):
    """A configuration problem: unknown key, ill-typed value, bad file or malformed override."""


# --------------------------------------------------------------------------------------------
# Declaring options
# --------------------------------------------------------------------------------------------


def option(default: Any, help: str, unit: str | None = None, **kw: Any) -> Any:
    """Declare a documented dataclass field.

    Args:
        default: Default value. Mutable defaults (lists, dicts, sets, dataclass instances) are
            deep-copied per instance through ``default_factory`` automatically. Pass
            :data:`dataclasses.MISSING` for a required key.
        help: One-line description shown by :func:`describe_config` and in the docs table.
        unit: Optional unit of measure (``"steps"``, ``"px"``, ...).
        **kw: Forwarded to :func:`dataclasses.field` (``metadata`` entries are merged).

    Returns:
        The :class:`dataclasses.Field` object (typed ``Any`` so it can be assigned to an
        annotated class attribute).
    """
    metadata: dict[str, Any] = dict(kw.pop("metadata", None) or {})
    metadata["help"] = help
    if unit is not None:
        metadata["unit"] = unit
    if "default_factory" in kw:
        if default is not dataclasses.MISSING:
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
# Type helpers
# --------------------------------------------------------------------------------------------


def _type_hints(cls: type) -> dict[str, Any]:
    """Resolved annotations of a dataclass (strings from postponed evaluation included)."""
    try:
        return typing.get_type_hints(cls)
    except Exception as exc:  # NameError for names that only exist in a local scope, etc.
        raise TypeError(
            f"cannot resolve the type annotations of config class {cls.__qualname__}: {exc}. "
            "Config dataclasses must be defined at module level."
        ) from exc


def _init_fields(cls: type) -> dict[str, dataclasses.Field[Any]]:
    """The fields of ``cls`` that are settable through ``__init__`` (the config keys)."""
    return {f.name: f for f in dataclasses.fields(cls) if f.init}


def _is_union(tp: Any) -> bool:
    return get_origin(tp) is Union or isinstance(tp, types.UnionType)


def _section_class(tp: Any) -> type | None:
    """The dataclass behind ``tp`` if it is a dataclass or ``Dataclass | None``, else None."""
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        return tp
    if _is_union(tp):
        members = [a for a in get_args(tp) if a is not _NONE_TYPE]
        if len(members) == 1 and isinstance(members[0], type):
            if dataclasses.is_dataclass(members[0]):
                return members[0]
    return None


def _type_name(tp: Any) -> str:
    """Human-readable name of a type annotation (``float | None``, ``list[int]``, ...)."""
    if tp is _NONE_TYPE or tp is None:
        return "None"
    if tp is Any:
        return "any"
    if _is_union(tp):
        return " | ".join(_type_name(a) for a in get_args(tp))
    origin = get_origin(tp)
    if origin is Literal:
        return " | ".join(_format_value(a) for a in get_args(tp))
    if origin is not None:
        args = get_args(tp)
        name = getattr(origin, "__name__", str(origin))
        if not args:
            return name
        if origin is tuple and len(args) == 2 and args[1] is Ellipsis:
            return f"tuple[{_type_name(args[0])}, ...]"
        return f"{name}[{', '.join(_type_name(a) for a in args)}]"
    if isinstance(tp, type):
        return tp.__name__
    return str(tp)


def _format_value(value: Any) -> str:
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
        return "[" + ", ".join(_format_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {_format_value(v)}" for k, v in value.items()) + "}"
    return repr(value)


def _describe_got(value: Any) -> str:
    text = repr(value)
    if len(text) > 80:
        text = text[:77] + "..."
    return f"{text} ({type(value).__name__})"


def _type_error(key: str, tp: Any, value: Any, hint: str = "") -> ConfigError:
    expected = _type_name(tp)
    if get_origin(tp) is Literal:
        expected = "one of " + ", ".join(_format_value(a) for a in get_args(tp))
    return ConfigError(f"config key '{key}' expects {expected}, got {_describe_got(value)}{hint}")


# --------------------------------------------------------------------------------------------
# Coercion
# --------------------------------------------------------------------------------------------


def _coerce(value: Any, tp: Any, key: str, root: type) -> Any:
    """Check ``value`` against annotation ``tp`` and convert it; raise ConfigError if invalid."""
    if tp is Any or tp is object:
        return value
    if _is_union(tp):
        args = get_args(tp)
        if value is None:
            if _NONE_TYPE in args:
                return None
            raise _type_error(key, tp, value)
        members = [a for a in args if a is not _NONE_TYPE]
        if len(members) == 1:  # Optional[X]: delegate for the precise error message
            return _coerce(value, members[0], key, root)
        for member in members:
            try:
                return _coerce(value, member, key, root)
            except ConfigError:
                continue
        raise _type_error(key, tp, value)

    origin = get_origin(tp)
    args = get_args(tp)
    if origin is Literal:
        for allowed in args:
            if type(value) is type(allowed) and value == allowed:
                return allowed
        raise _type_error(key, tp, value)
    if origin is list or tp is list:
        if not isinstance(value, (list, tuple)):
            raise _type_error(key, tp, value)
        item_tp = args[0] if args else Any
        return [_coerce(v, item_tp, f"{key}[{i}]", root) for i, v in enumerate(value)]
    if origin is tuple or tp is tuple:
        if not isinstance(value, (list, tuple)):
            raise _type_error(key, tp, value)
        if not args or (len(args) == 2 and args[1] is Ellipsis):
            item_tp = args[0] if args else Any
            return tuple(_coerce(v, item_tp, f"{key}[{i}]", root) for i, v in enumerate(value))
        if len(value) != len(args):
            raise _type_error(key, tp, value, f"; expected exactly {len(args)} items")
        pairs = enumerate(zip(value, args, strict=True))
        return tuple(_coerce(v, a, f"{key}[{i}]", root) for i, (v, a) in pairs)
    if origin is dict or tp is dict:
        if not isinstance(value, Mapping):
            raise _type_error(key, tp, value)
        key_tp, val_tp = args if args else (Any, Any)
        return {
            _coerce(k, key_tp, f"{key}[{k!r}]", root): _coerce(v, val_tp, f"{key}[{k!r}]", root)
            for k, v in value.items()
        }
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in ("true", "false"):
            return value.strip().lower() == "true"
        raise _type_error(key, tp, value)
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        hint = "; integer keys do not accept floats" if isinstance(value, float) else ""
        raise _type_error(key, tp, value, hint)
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
        raise _type_error(key, tp, value)
    if tp is str:
        if isinstance(value, str):
            return value
        raise _type_error(key, tp, value, "; quote the value to make it a string")
    if isinstance(tp, type) and issubclass(tp, Path):
        if isinstance(value, (str, os.PathLike)):
            return tp(value)
        raise _type_error(key, tp, value)
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if isinstance(value, Mapping):
            return _build(tp, value, key, root, base=None)
        raise _type_error(key, tp, value, "; expected a mapping of its keys")
    if isinstance(tp, type):
        if isinstance(value, tp):
            return value
        raise _type_error(key, tp, value)
    return value  # unsupported annotation: accept as is


# --------------------------------------------------------------------------------------------
# Keys, unknown-key errors and building
# --------------------------------------------------------------------------------------------


def _join(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


def config_keys(cls: type) -> list[str]:
    """All dotted leaf keys of config class ``cls`` (sections are descended into)."""
    return [info.key for info in config_options(cls) if not info.is_section]


def _unknown_key_error(cls: type, name: str, prefix: str, root: type) -> ConfigError:
    full = _join(prefix, name)
    valid = sorted(_init_fields(cls))
    suggestion = difflib.get_close_matches(name, valid, n=1, cutoff=0.6)
    did_you_mean = ""
    if suggestion:
        did_you_mean = f" Did you mean '{_join(prefix, suggestion[0])}'?"
    else:
        # The key may exist at another level (e.g. 'lr' instead of 'trainer.lr').
        all_keys = [info.key for info in config_options(root)]
        by_last = {k: k.rsplit(".", 1)[-1] for k in all_keys}
        exact = [k for k, last in by_last.items() if last == name]
        close = exact or [
            k for k, last in by_last.items() if difflib.get_close_matches(name, [last], 1, 0.8)
        ]
        if close:
            did_you_mean = f" Did you mean '{close[0]}'?"
    where = f"under '{prefix}'" if prefix else "at the top level"
    return ConfigError(
        f"unknown config key '{full}'.{did_you_mean} Valid keys {where}: {', '.join(valid)}"
    )


def _field_default(f: dataclasses.Field[Any]) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return dataclasses.MISSING


def _build(cls: type[T], data: Mapping[str, Any], prefix: str, root: type, base: Any) -> T:
    """Instantiate ``cls`` from ``data`` (validated), on top of ``base`` or the class defaults."""
    fields = _init_fields(cls)
    hints = _type_hints(cls)
    kwargs: dict[str, Any] = {}
    for raw_name, value in data.items():
        name = str(raw_name)
        if name not in fields:
            raise _unknown_key_error(cls, name, prefix, root)
        key = _join(prefix, name)
        tp = hints.get(name, Any)
        section = _section_class(tp)
        if section is not None and isinstance(value, Mapping):
            if base is not None:
                sub_base = getattr(base, name)
            else:
                sub_base = _field_default(fields[name])
            if not isinstance(sub_base, section):
                sub_base = None
            kwargs[name] = _build(section, value, key, root, sub_base)
        else:
            kwargs[name] = _coerce(value, tp, key, root)
    if base is None:
        missing = [
            _join(prefix, n)
            for n, f in fields.items()
            if n not in kwargs
            and f.default is dataclasses.MISSING
            and f.default_factory is dataclasses.MISSING
        ]
        if missing:
            raise ConfigError(
                "missing required config key(s): " + ", ".join(f"'{k}'" for k in missing)
            )
    try:
        if base is not None:
            return dataclasses.replace(base, **kwargs)
        return cls(**kwargs)
    except ConfigError:
        raise
    except ValueError as exc:
        where = f"section '{prefix}'" if prefix else "config"
        raise ConfigError(f"invalid {where}: {exc}") from exc


def _parse_override(text: str) -> tuple[str, str]:
    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or not key:
        raise ConfigError(
            f"malformed override {text!r}: expected the form key=value or section.key=value, "
            "e.g. 'trainer.lr=1e-4'"
        )
    return key, raw.strip()


def _yaml_scalar(raw: str) -> Any:
    try:
        return yaml.safe_load(raw)
    except yaml.YAMLError:
        return raw


def _apply_override(cls: type, data: dict[str, Any], key: str, raw: str) -> None:
    """Validate dotted ``key`` against ``cls`` and store the parsed ``raw`` value in ``data``."""
    parts = key.split(".")
    current_cls: type = cls
    node = data
    for depth, name in enumerate(parts):
        prefix = ".".join(parts[:depth])
        fields = _init_fields(current_cls)
        if name not in fields:
            raise _unknown_key_error(current_cls, name, prefix, cls)
        tp = _type_hints(current_cls).get(name, Any)
        section = _section_class(tp)
        if depth == len(parts) - 1:
            value = _yaml_scalar(raw)
            if section is not None and isinstance(value, Mapping):
                existing = node.get(name)
                node[name] = _deep_merge(existing if isinstance(existing, Mapping) else {}, value)
                return
            try:
                node[name] = _coerce(value, tp, key, cls)
                return
            except ConfigError as exc:
                if isinstance(value, str):
                    raise
                error = exc
            try:  # e.g. name=123 for a str key: keep the literal text typed on the CLI
                node[name] = _coerce(raw, tp, key, cls)
            except ConfigError:
                raise error from None
            return
        if section is None:
            raise ConfigError(
                f"config key '{_join(prefix, name)}' is a {_type_name(tp)} value, not a section; "
                f"cannot set '{key}'"
            )
        child = node.get(name)
        if not isinstance(child, dict):
            child = dict(child) if isinstance(child, Mapping) else {}
            node[name] = child
        node = child
        current_cls = section


def _deep_merge(base: Mapping[str, Any], update: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for k, v in update.items():
        if isinstance(v, Mapping) and isinstance(merged.get(k), Mapping):
            merged[k] = _deep_merge(merged[k], v)
        else:
            merged[k] = v
    return merged


def _read_yaml(path: str | os.PathLike[str]) -> dict[str, Any]:
    p = Path(path)
    if not p.is_file():
        what = "is a directory, not a file" if p.is_dir() else "not found"
        raise ConfigError(f"config file {what}: '{p}'")
    try:
        loaded = yaml.safe_load(p.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file '{p}' is not valid YAML: {exc}") from exc
    if loaded is None:
        return {}
    if not isinstance(loaded, Mapping):
        raise ConfigError(
            f"config file '{p}' must contain a mapping of keys at the top level, "
            f"got {type(loaded).__name__}"
        )
    return dict(loaded)


def config_from_dict(cls: type[T], data: Mapping[str, Any]) -> T:
    """Build config ``cls`` from a (nested) mapping on top of its defaults, with validation."""
    if not (isinstance(cls, type) and dataclasses.is_dataclass(cls)):
        raise TypeError(f"config class must be a dataclass, got {cls!r}")
    return _build(cls, data, "", cls, base=None)


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
    if not (isinstance(cls, type) and dataclasses.is_dataclass(cls)):
        raise TypeError(f"config class must be a dataclass, got {cls!r}")
    data: dict[str, Any] = _read_yaml(path) if path is not None else {}
    for text in overrides:
        key, raw = _parse_override(text)
        _apply_override(cls, data, key, raw)
    return _build(cls, data, "", cls, base=None)


# --------------------------------------------------------------------------------------------
# Serialisation
# --------------------------------------------------------------------------------------------


def config_to_dict(cfg: Any) -> dict[str, Any]:
    """Convert a config dataclass instance to plain nested Python data (YAML-serialisable).

    Tuples become lists and paths become strings; only ``init`` fields are included.
    """
    if not (dataclasses.is_dataclass(cfg) and not isinstance(cfg, type)):
        raise TypeError(f"expected a config dataclass instance, got {type(cfg).__name__}")
    return {name: _plain(getattr(cfg, name)) for name in _init_fields(type(cfg))}


def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return config_to_dict(value)
    if isinstance(value, Mapping):
        return {_plain(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    return value


def _atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` via a temp file in the same directory and ``os.replace``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}-{secrets.token_hex(4)}")
    try:
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def save_config(cfg: Any, path: str | os.PathLike[str]) -> Path:
    """Atomically write ``cfg`` as YAML to ``path`` (readable again by :func:`load_config`)."""
    text = yaml.safe_dump(config_to_dict(cfg), sort_keys=False, allow_unicode=True)
    target = Path(path)
    _atomic_write_text(target, text)
    return target


# --------------------------------------------------------------------------------------------
# Documentation
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

    @property
    def default_text(self) -> str:
        """The default rendered for humans (``required`` when there is none)."""
        if self.default is dataclasses.MISSING:
            return "required"
        return _format_value(self.default)


def config_options(cls: type, prefix: str = "") -> Iterator[OptionInfo]:
    """Yield an :class:`OptionInfo` for every key of ``cls``, depth first.

    Sections (nested dataclasses) are yielded themselves only when they can be ``null``;
    their sub-keys always follow. Defaults of sub-keys come from the parent's default
    instance when it has one, so a section defaulting to ``Sub(x=2)`` documents ``x: 2``.
    """
    yield from _options(cls, prefix, instance=None)


def _options(cls: type, prefix: str, instance: Any) -> Iterator[OptionInfo]:
    hints = _type_hints(cls)
    for name, f in _init_fields(cls).items():
        key = _join(prefix, name)
        tp = hints.get(name, Any)
        default = getattr(instance, name) if instance is not None else _field_default(f)
        help_text = str(f.metadata.get("help", ""))
        unit = f.metadata.get("unit")
        section = _section_class(tp)
        if section is None:
            yield OptionInfo(key, _type_name(tp), default, help_text, unit, False)
            continue
        if section is not tp:  # Optional section: document the key itself too
            shown = None if isinstance(default, section) else default
            yield OptionInfo(key, _type_name(tp), shown, help_text, unit, True)
        sub_instance = default if isinstance(default, section) else None
        yield from _options(section, key, sub_instance)


def undocumented_keys(cls: type) -> list[str]:
    """Dotted keys of ``cls`` whose field has no (non-empty) ``help`` metadata."""
    return [info.key for info in config_options(cls) if not info.help.strip()]


def describe_config(cls: type, prefix: str = "") -> str:
    """One line per key, ``  key (type, default: X[, unit: U])  help``, for ``--help`` output."""
    rows: list[tuple[str, str]] = []
    for info in config_options(cls, prefix):
        details = f"{info.type_name}, default: {info.default_text}"
        if info.unit:
            details += f", unit: {info.unit}"
        rows.append((f"  {info.key} ({details})", info.help))
    if not rows:
        return ""
    width = max(len(left) for left, _ in rows)
    lines = [f"{left:<{width}}  {text}".rstrip() for left, text in rows]
    return "\n".join(lines)


def _md_cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def config_markdown_table(cls: type) -> str:
    """A markdown table ``key | type | default | unit | meaning`` documenting every key."""
    lines = ["| key | type | default | unit | meaning |", "| --- | --- | --- | --- | --- |"]
    for info in config_options(cls):
        cells = [
            f"`{info.key}`",
            f"`{info.type_name}`",
            f"`{info.default_text}`",
            info.unit or "",
            info.help,
        ]
        lines.append("| " + " | ".join(_md_cell(c) for c in cells) + " |")
    return "\n".join(lines) + "\n"
