"""Validation with pydantic: a config value checked against its annotation in strict mode,
with pydantic's rules for JSON input; a strategy family becomes a union of its kinds,
tagged by ``kind``."""

from __future__ import annotations

import dataclasses
import functools
import json
from typing import Any, get_args

import pydantic
from pydantic_core import core_schema

from cgrpo.config.docs import describe_got, family, type_hints
from cgrpo.config.errors import ConfigError
from cgrpo.config.registry import Registry

__all__ = ["accepts", "validate"]


_PYDANTIC_CONFIG = pydantic.ConfigDict(strict=True, extra="forbid")


def _family_schema(cls: type, source: Any, handler: Any) -> Any:
    """pydantic schema of a family base: its kinds, tagged by the ``kind`` key."""
    reg = family(source)
    if reg is None:  # a kind class itself (this hook is inherited): a plain dataclass
        return handler(source)
    choices = {
        name: core_schema.no_info_before_validator_function(_drop_kind, handler.generate_schema(k))
        for name, k in sorted(reg.kinds.items())
    }
    return core_schema.tagged_union_schema(choices, discriminator="kind")


def _drop_kind(value: Any) -> Any:
    return {k: v for k, v in value.items() if k != "kind"} if isinstance(value, dict) else value


def _hook_families(tp: Any, seen: set[Any]) -> None:
    """Give every family base reachable from annotation ``tp`` the pydantic schema hook."""
    if tp in seen:
        return
    seen.add(tp)
    for arg in get_args(tp):
        _hook_families(arg, seen)
    if isinstance(tp, type) and (reg := family(tp)) is not None:  # X | None: via get_args
        if "__get_pydantic_core_schema__" not in vars(tp):
            tp.__get_pydantic_core_schema__ = classmethod(_family_schema)
        for kind in reg.kinds.values():
            _hook_families(kind, seen)
    elif isinstance(tp, type) and dataclasses.is_dataclass(tp):
        for hint in type_hints(tp).values():
            _hook_families(hint, seen)


@functools.cache
def _validator(tp: Any, generation: int) -> type[pydantic.BaseModel]:
    """A strict model of one field ``value: tp`` (``generation``: Registry.generation)."""
    _hook_families(tp, set())
    return pydantic.create_model("cgrpo_config", __config__=_PYDANTIC_CONFIG, value=(tp, ...))


def validate(tp: Any, data: Any) -> Any:
    text = json.dumps({"value": data}, default=_unsupported)
    return _validator(tp, Registry.generation).model_validate_json(text).value


def _unsupported(value: Any) -> Any:
    raise ConfigError(
        f"config value {describe_got(value)} is not text, a number, a boolean, a list or a mapping"
    )


def accepts(tp: Any, value: Any) -> bool:
    try:
        validate(tp, value)
    except (pydantic.ValidationError, ConfigError):
        return False
    return True
