"""The run's named, weighted rewards (TRL's ``reward_funcs`` + ``reward_weights``).

A config names any number of rewards, each ``{kind, weight, ...options}``::

    rewards:
      identity: {kind: dino_seg, weight: 1.0, path: /weights/dinov2-base}
      prompt:   {kind: hpsv3,    weight: 1.0, python: /venvs/hpsv3/bin/python}
      colour:   {kind: colour,   weight: 0.2, measure: redness}

``kind`` is a reward registry name (:mod:`cgrpo.rewards`), ``weight`` the reward's static
weight (default 1; the weighting strategy may change it per step, e.g. TDW for the
identity / prompt pair), every other key an option of the reward's factory. An entry set
to ``null`` removes a reward of a lower layer (e.g. of the defaults). Each reward gets its
own group advantage and is logged by its name (``reward/<name>/mean``).

Deprecated for one release (a warning says how to rewrite it): a bare registry name
(``rewards.identity=colour``) and a separate ``rewards.<name>_options`` mapping.
"""

from __future__ import annotations

import inspect
import math
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch

from cgrpo.data.references import ReferenceBatch, References, reward_view
from cgrpo.rewards import RewardModel
from cgrpo.rewards.base import make_reward_on, reward_factory, reward_kinds

__all__ = ["RewardSpec", "RewardSet", "parse_rewards", "canonical_rewards"]

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


def _deprecated(message: str) -> None:
    warnings.warn(message + " (deprecated; removed in the next release)", FutureWarning, 3)


def parse_rewards(raw: Mapping[str, Any], where: str = "rewards") -> list[RewardSpec]:
    """Read a ``rewards`` mapping (canonical or deprecated shorthand) into specs, in order.

    Checks what can be checked without building anything: at least one reward, known
    kinds, finite weights. ValueError naming the key otherwise."""
    entries: dict[str, dict[str, Any]] = {}
    extra: dict[str, dict[str, Any]] = {}
    for name, value in raw.items():
        if value is None:
            continue
        if name.endswith("_options") and isinstance(value, Mapping):
            base = name[: -len("_options")]
            _deprecated(
                f"{where}.{name}: write the options inside {where}.{base} "
                f"({{kind: ..., weight: ..., <option>: ...}})"
            )
            extra[base] = dict(value)
            continue
        if isinstance(value, str):
            _deprecated(f"{where}.{name}={value}: write {where}.{name}: {{kind: {value}}}")
            value = {"kind": value}
        if not isinstance(value, Mapping):
            raise ValueError(
                f"{where}.{name} must be a mapping {{kind: <reward>, weight: <float>, "
                f"...options}}, got {value!r}"
            )
        entries[name] = dict(value)
    for base, opts in extra.items():
        if base not in entries:
            raise ValueError(f"{where}.{base}_options given, but there is no reward {base!r}")
        entries[base] = {**entries[base], **opts}
    if not entries:
        raise ValueError(f"{where}: name at least one reward, e.g. {where}.identity.kind=...")
    kinds = reward_kinds()
    specs = []
    for name, e in entries.items():
        kind = e.get("kind")
        if kind not in kinds:
            raise ValueError(
                f"{where}.{name}.kind={kind!r} is not a registered reward; "
                f"valid kinds: {', '.join(kinds)}"
            )
        weight = e.get("weight", 1.0)
        if isinstance(weight, bool) or not isinstance(weight, (int, float)):
            raise ValueError(f"{where}.{name}.weight must be a number, got {weight!r}")
        if not math.isfinite(weight):
            raise ValueError(f"{where}.{name}.weight must be finite, got {weight!r}")
        options = {k: v for k, v in e.items() if k not in _RESERVED}
        specs.append(RewardSpec(name, kind, float(weight), options))
    return specs


def canonical_rewards(raw: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """``raw`` rewritten in the canonical form (what ``config.yaml`` of a run holds)."""
    return {s.name: s.entry() for s in parse_rewards(raw)}


def _check_options(spec: RewardSpec, where: str) -> None:
    """Option names against the factory's signature, before anything is built."""
    params = inspect.signature(reward_factory(spec.kind)).parameters
    if any(p.kind is p.VAR_KEYWORD for p in params.values()):
        return
    valid = [n for n, p in params.items() if p.kind is not p.VAR_POSITIONAL and n != "device"]
    bad = [k for k in spec.options if k not in params]
    if bad:
        raise ValueError(
            f"{where}.{spec.name}: reward {spec.kind!r} has no option(s) {bad}; "
            f"its options: {', '.join(valid) or '(none)'}"
        )


class RewardSet:
    """Named reward models with their static weights, scored together."""

    def __init__(self, models: Mapping[str, RewardModel], weights: Mapping[str, float]) -> None:
        if not models:
            raise ValueError("a RewardSet needs at least one reward")
        if set(models) != set(weights):
            raise ValueError(f"rewards {sorted(models)} and weights {sorted(weights)} differ")
        self.models = dict(models)
        self.weights = {k: float(weights[k]) for k in models}

    @classmethod
    def build(cls, specs: list[RewardSpec], device: str, where: str = "rewards") -> RewardSet:
        """Every reward of ``specs`` on ``device`` (unless its options name one); all
        option names are checked before the first model is built."""
        for s in specs:
            _check_options(s, where)
        models = {s.name: make_reward_on(s.kind, device, **s.options) for s in specs}
        return cls(models, {s.name: s.weight for s in specs})

    @property
    def names(self) -> list[str]:
        return list(self.models)

    @torch.no_grad()
    def score(
        self, images: torch.Tensor, prompts: list[str], references: References
    ) -> dict[str, torch.Tensor]:
        """Each reward of a batch, as float32 CPU tensors, by name (in config order).

        Rewards read the square view of each image's reference
        (:func:`cgrpo.data.references.reward_view`). When an image has several references (UNO's
        multi-subject pairs), a reward that reads references (``uses_references``, true
        unless the reward says otherwise) scores it against each and gets the mean.
        """
        view = reward_view(references).to(images.device)
        multi = isinstance(references, ReferenceBatch) and max(references.counts) > 1
        out = {}
        for name, m in self.models.items():
            if not multi or not getattr(m, "uses_references", True):
                out[name] = m(images, prompts, view).float().cpu()
                continue
            assert isinstance(references, ReferenceBatch)
            total = torch.zeros(len(prompts))
            for k in range(max(references.counts)):
                rows, ref_k = references.views(k)
                score = m(images[rows.to(images.device)], [prompts[i] for i in rows.tolist()],
                          ref_k.to(images.device))  # fmt: skip
                total[rows] += score.float().cpu()
            out[name] = total / torch.tensor(references.counts, dtype=torch.float32)
        return out
