"""The ``rewards:`` section of a config: named, weighted rewards, read without torch.

A config names any number of rewards, each ``{kind, weight, ...options}``::

    rewards:
      identity: {kind: dinov2, weight: 1.0, path: /weights/dinov2-base, segmenter: u2netp}
      prompt:   {kind: hpsv3,  weight: 1.0, python: /venvs/hpsv3/bin/python}
      colour:   {kind: colour, weight: 0.2, measure: redness}

``kind`` is a reward registry name (:data:`cgrpo.rewards.REWARDS`), ``weight`` the reward's
static weight (default 1; the weighting strategy may change it per step, e.g. TDW for the
identity / prompt pair), every other key an option of the reward's factory. An entry set
to ``null`` removes a reward of a lower layer (e.g. of the defaults). Each reward gets its
own group advantage and is logged by its name (``reward/<name>/mean``). The same form is
``cgrpo eval``'s ``metrics:`` (``where="metrics"``).

Reading checks what can be checked without importing a backend (known kinds, finite
weights); the option names are checked against each factory's signature when the rewards
are built (:meth:`cgrpo.rewards.set.RewardSet.build`). Earlier spellings are refused with
one line naming the current one: a bare name (``rewards.identity=dino``), a separate
``rewards.<name>_options`` mapping, and ``reward:`` for ``kind:``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from cgrpo.config.errors import quoted, shorten
from cgrpo.rewards.base import REWARDS

__all__ = ["RewardSpec", "canonical_rewards", "parse_rewards"]

_RESERVED = ("kind", "weight")


@dataclass(frozen=True)
class RewardSpec:
    """One named reward: registry ``kind``, static ``weight``, factory ``options``."""

    name: str
    kind: str
    weight: float = 1.0
    options: dict[str, Any] = field(default_factory=dict)

    def entry(self) -> dict[str, Any]:
        """The canonical config entry ``{kind, weight, **options}``."""
        return {"kind": self.kind, "weight": self.weight, **self.options}


def _entry(name: str, value: Any, where: str) -> dict[str, Any]:
    """One entry as a mapping; ValueError naming the current spelling of a removed one."""
    key = f"{where}.{name}"
    if isinstance(value, str):
        raise ValueError(f"{key}={shorten(value)}: write {key}: {{kind: {shorten(value)}}}")
    if not isinstance(value, Mapping):
        raise ValueError(
            f"{key} must be a mapping {{kind: <reward>, weight: <float>, ...options}}, "
            f"got {quoted(value)}"
        )
    if name.endswith("_options") and "kind" not in value:
        base = f"{where}.{name[: -len('_options')]}"
        raise ValueError(
            f"{key}: write the options inside {base}: {{kind: ..., weight: ..., <option>: ...}}"
        )
    if "reward" in value:
        raise ValueError(
            f"{key}: reward: is now kind: (write {key}.kind={shorten(value['reward'])})"
        )
    return dict(value)


def _spec(name: str, entry: dict[str, Any], where: str) -> RewardSpec:
    kind = entry.get("kind")
    if kind not in REWARDS:
        raise ValueError(
            f"{where}.{name}.kind={quoted(kind)} is not a registered reward; "
            f"valid kinds: {', '.join(REWARDS.names())}"
        )
    weight = entry.get("weight", 1.0)
    if isinstance(weight, bool) or not isinstance(weight, (int, float)):
        raise ValueError(f"{where}.{name}.weight must be a number, got {quoted(weight)}")
    if not math.isfinite(weight):
        raise ValueError(f"{where}.{name}.weight must be finite, got {weight!r}")
    options = {k: v for k, v in entry.items() if k not in _RESERVED}
    return RewardSpec(name, kind, float(weight), options)


def parse_rewards(raw: Mapping[str, Any], where: str = "rewards") -> list[RewardSpec]:
    """Read a ``rewards`` mapping into specs, in order (``null`` entries dropped).

    Checks what can be checked without building anything: at least one reward, the
    current spelling, known kinds, finite weights. ValueError naming the key otherwise."""
    entries = {n: _entry(n, v, where) for n, v in raw.items() if v is not None}
    if not entries:
        raise ValueError(f"{where}: name at least one reward, e.g. {where}.identity.kind=...")
    return [_spec(name, e, where) for name, e in entries.items()]


def canonical_rewards(raw: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """``raw`` rewritten in the canonical form (what ``config.yaml`` of a run holds)."""
    return {s.name: s.entry() for s in parse_rewards(raw)}
