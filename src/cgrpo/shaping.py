"""Combining the identity advantage and the prompt advantage into one advantage.

* :func:`linear` is the naive multi-reward GRPO baseline: a weighted sum.
* :func:`sars` (Synergy-Aware Reward Shaping) adds a bounded interaction term that
  amplifies samples good on both rewards and penalises conflicts and joint failures.

``a_id`` and ``a_prompt`` are group-normalised advantages (see :mod:`cgrpo.advantages`);
weights may be python floats or tensors that broadcast against them (see
:mod:`cgrpo.weighting`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = [
    "SYNERGY",
    "CONFLICT",
    "JOINT_FAILURE",
    "RELATION_NAMES",
    "linear",
    "sars",
    "reward_relation",
    "relation_shares",
    "LinearShaping",
    "SARSShaping",
    "SHAPINGS",
    "make_shaping",
]

#: Both advantages > 0.
SYNERGY: int = 0
#: Exactly one advantage > 0.
CONFLICT: int = 1
#: Both advantages <= 0.
JOINT_FAILURE: int = 2
#: Names indexed by the relation codes above.
RELATION_NAMES: tuple[str, str, str] = ("synergy", "conflict", "joint_failure")


def linear(
    a_id: Tensor, a_prompt: Tensor, w_id: float | Tensor, w_prompt: float | Tensor
) -> Tensor:
    """Naive weighted sum (GRPO multi-reward baseline)::

    A = w_id * a_id + w_prompt * a_prompt
    """
    return w_id * a_id + w_prompt * a_prompt


def sars(
    a_id: Tensor,
    a_prompt: Tensor,
    w_id: float | Tensor,
    w_prompt: float | Tensor,
    gamma: float = 0.4,
) -> Tensor:
    """Synergy-Aware Reward Shaping::

        A = w_id * a_id + w_prompt * a_prompt + gamma * s * tanh(a_id * a_prompt)
        s = +1 where (a_id > 0) or (a_prompt > 0), else -1

    Cases for the bonus ``gamma * s * tanh(a_id * a_prompt)``:

    * both > 0 (synergy): ``s = +1``, product > 0 -> positive bonus (amplified);
    * signs differ (conflict): ``s = +1``, product < 0 -> negative bonus (penalised);
    * both < 0 (joint failure): ``s = -1``, product > 0 -> negative bonus (penalised more
      than the linear sum already does).

    A zero advantage makes the product 0, so the bonus vanishes. ``|A - linear| <= gamma``
    always; ``gamma = 0`` is exactly :func:`linear`. ``gamma = 0.4`` is the paper's released
    setting.
    """
    s = torch.where((a_id > 0) | (a_prompt > 0), 1.0, -1.0).to(torch.result_type(a_id, a_prompt))
    return linear(a_id, a_prompt, w_id, w_prompt) + gamma * s * torch.tanh(a_id * a_prompt)


def reward_relation(a_id: Tensor, a_prompt: Tensor) -> Tensor:
    """Per-element relation code (``torch.long``, broadcast shape of the inputs):

    * :data:`SYNERGY` (0): ``a_id > 0`` and ``a_prompt > 0``;
    * :data:`CONFLICT` (1): exactly one of them ``> 0`` (a zero counts as "not > 0");
    * :data:`JOINT_FAILURE` (2): both ``<= 0``.
    """
    pos_id = a_id > 0
    pos_prompt = a_prompt > 0
    both = pos_id & pos_prompt
    one = pos_id ^ pos_prompt
    out = torch.full(both.shape, JOINT_FAILURE, dtype=torch.long, device=both.device)
    out = torch.where(one, torch.full_like(out, CONFLICT), out)
    return torch.where(both, torch.full_like(out, SYNERGY), out)


def relation_shares(a_id: Tensor, a_prompt: Tensor) -> dict[str, float]:
    """Share (fraction in [0, 1], summing to 1) of each relation in :data:`RELATION_NAMES`,
    e.g. ``{"synergy": 0.5, "conflict": 0.25, "joint_failure": 0.25}``. Raises ValueError on
    empty input (a share of nothing is undefined)."""
    rel = reward_relation(a_id, a_prompt).flatten()
    if rel.numel() == 0:
        raise ValueError("relation_shares needs at least one advantage pair, got empty input")
    counts = torch.bincount(rel, minlength=len(RELATION_NAMES)).tolist()
    n = rel.numel()
    return {name: counts[code] / n for code, name in enumerate(RELATION_NAMES)}


@dataclass(frozen=True)
class LinearShaping:
    """Strategy object for :func:`linear` (config name ``"linear"``)."""

    def __call__(
        self, a_id: Tensor, a_prompt: Tensor, w_id: float | Tensor, w_prompt: float | Tensor
    ) -> Tensor:
        return linear(a_id, a_prompt, w_id, w_prompt)


@dataclass(frozen=True)
class SARSShaping:
    """Strategy object for :func:`sars` (config name ``"sars"``); ``gamma >= 0``."""

    gamma: float = 0.4

    def __post_init__(self) -> None:
        if not self.gamma >= 0:
            raise ValueError(f"SARS gamma must be >= 0, got {self.gamma!r}")

    def __call__(
        self, a_id: Tensor, a_prompt: Tensor, w_id: float | Tensor, w_prompt: float | Tensor
    ) -> Tensor:
        return sars(a_id, a_prompt, w_id, w_prompt, gamma=self.gamma)


#: Config name -> strategy class.
SHAPINGS: dict[str, type] = {"linear": LinearShaping, "sars": SARSShaping}


def make_shaping(name: str, **kwargs: float) -> LinearShaping | SARSShaping:
    """Build the shaping strategy called ``name`` (a key of :data:`SHAPINGS`) with ``kwargs``
    (e.g. ``make_shaping("sars", gamma=0.4)``)."""
    try:
        cls = SHAPINGS[name]
    except (KeyError, TypeError):
        raise ValueError(
            f"unknown shaping {name!r}; valid names: {', '.join(sorted(SHAPINGS))}"
        ) from None
    return cls(**kwargs)
