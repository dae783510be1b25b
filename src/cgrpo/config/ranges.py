"""Value ranges of config keys, checked once a config is built.

A key declares its range in :func:`cgrpo.config.core.option` as ``check=`` a comma-separated
list of bounds, each ``>= a``, ``> a``, ``<= b`` or ``< b``, and ``finite``; e.g.
``check="> 0, finite"``. A number outside it (NaN fails every bound) is one
:class:`~cgrpo.config.errors.ConfigError` naming the key, the range, the value and the key's
meaning, before anything is built. The docs and ``--help`` show the range after the
meaning (:mod:`cgrpo.config.docs`).
"""

from __future__ import annotations

import dataclasses
import math
import operator
from typing import Any

from cgrpo.config.errors import ConfigError, quoted

__all__ = ["check_ranges", "parse_check", "violates"]

_OPS = {">=": operator.ge, ">": operator.gt, "<=": operator.le, "<": operator.lt}


def _number(text: str) -> int | float:
    text = text.strip()
    try:
        return int(text)
    except ValueError:
        return float(text)


def parse_check(spec: str) -> list[tuple[str, int | float]]:
    """``"> 0, finite"`` -> ``[(">", 0), ("finite", 0)]``; ValueError on anything else."""
    bounds: list[tuple[str, int | float]] = []
    for part in (p.strip() for p in spec.split(",")):
        if part == "finite":
            bounds.append(("finite", 0))
            continue
        op = next((o for o in (">=", "<=", ">", "<") if part.startswith(o)), None)
        if op is None:
            raise ValueError(f"bad range {spec!r}: use '>= a', '> a', '<= b', '< b', 'finite'")
        bounds.append((op, _number(part[len(op) :])))
    return bounds


def violates(value: Any, spec: str) -> bool:
    """Whether number ``value`` is outside ``spec`` (non-numbers and bools are not checked)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    for op, bound in parse_check(spec):
        if op == "finite":
            if not math.isfinite(value):
                return True
        elif not _OPS[op](value, bound):
            return True
    return False


def check_ranges(cfg: Any, prefix: str = "") -> None:
    """Every ``check``-declared key of dataclass ``cfg`` (and of its nested sections and
    strategies) inside its range, else one :class:`ConfigError` for the first that is not."""
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        key = f"{prefix}.{f.name}" if prefix else f.name
        spec = f.metadata.get("check")
        if spec and violates(value, spec):
            meaning = str(f.metadata.get("help", "")).split(";")[0]
            raise ConfigError(f"{key} must be {spec}, got {quoted(value)} ({meaning})")
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            check_ranges(value, key)
