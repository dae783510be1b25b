"""Combining the named rewards' advantages into one advantage (the *shaping* family).

* :func:`linear` / :func:`weighted_sum` is the naive multi-reward GRPO baseline: a
  weighted sum over all N rewards.
* :func:`sars` (Synergy-Aware Reward Shaping) adds a bounded interaction term for the
  competing pair (identity, prompt) that amplifies samples good on both and penalises
  conflicts and joint failures; other rewards enter the weighted sum only.

Advantages are group-normalised (see :mod:`cgrpo.method.advantages`); weights may be python
floats or tensors that broadcast against them (see :mod:`cgrpo.method.weighting`). The strategy
objects (:class:`LinearShaping`, :class:`SARSShaping`) are config sections
(``method.shaping: {kind: sars, gamma: 0.4}``) registered in :data:`SHAPINGS`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

from cgrpo.config.core import option
from cgrpo.config.lazy import lazy_import
from cgrpo.config.registry import Registry
from cgrpo.method.pair import DEFAULT_PAIR, check_pair

torch = lazy_import("torch")

if TYPE_CHECKING:
    from torch import Tensor

__all__ = [
    "SYNERGY",
    "CONFLICT",
    "JOINT_FAILURE",
    "RELATION_NAMES",
    "linear",
    "weighted_sum",
    "sars",
    "sars_bonus",
    "reward_relation",
    "relation_shares",
    "Shaping",
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
    a_id: Tensor, a_prompt: Tensor, w_id: float | Tensor, *, w_prompt: float | Tensor
) -> Tensor:
    """Naive weighted sum (GRPO multi-reward baseline)::

    A = w_id * a_id + w_prompt * a_prompt
    """
    return w_id * a_id + w_prompt * a_prompt


def sars(
    a_id: Tensor,
    a_prompt: Tensor,
    w_id: float | Tensor,
    *,
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
    return linear(a_id, a_prompt, w_id, w_prompt=w_prompt) + sars_bonus(a_id, a_prompt, gamma)


def sars_bonus(a_id: Tensor, a_prompt: Tensor, gamma: float = 0.4) -> Tensor:
    """The SARS interaction term alone::

    bonus = gamma * s * tanh(a_id * a_prompt),  s = +1 if a_id > 0 or a_prompt > 0 else -1
    """
    s = torch.where((a_id > 0) | (a_prompt > 0), 1.0, -1.0).to(torch.result_type(a_id, a_prompt))
    return gamma * s * torch.tanh(a_id * a_prompt)


def weighted_sum(advantages: Mapping[str, Tensor], weights: Mapping[str, float | Tensor]) -> Tensor:
    """``A = sum_k w_k * A_k`` over the named advantages, in their order (for two rewards,
    term by term the same floating-point operations as :func:`linear`)."""
    if not advantages:
        raise ValueError("shaping needs at least one named advantage, got none")
    missing = [k for k in advantages if k not in weights]
    if missing:
        raise ValueError(f"no weight for reward(s) {missing}; weights given: {sorted(weights)}")
    total: Tensor | None = None
    for name, adv in advantages.items():
        term = weights[name] * adv
        total = term if total is None else total + term
    assert total is not None
    return total


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


# ----------------------------------------------------------------------------- strategies

#: The shaping family: kind name -> strategy class.
SHAPINGS = Registry("shaping")


class Shaping:
    """Base of the shaping family: ``shaping(advantages, weights, pair) -> A``.

    ``advantages``: reward name -> (N,) group advantages; ``weights``: reward name -> this
    step's weight; ``pair``: the competing (identity, prompt) reward names."""

    registry: ClassVar[Registry] = SHAPINGS
    kind: ClassVar[str]

    def __call__(
        self,
        advantages: Mapping[str, Tensor],
        weights: Mapping[str, float | Tensor],
        pair: tuple[str, str],
    ) -> Tensor:
        raise NotImplementedError

    def uses_pair(self) -> bool:
        """Whether this kind needs the two rewards of ``pair`` to exist."""
        return False


@SHAPINGS.register("linear")
@dataclass(frozen=True)
class LinearShaping(Shaping):
    """Naive multi-reward GRPO: ``A = sum_k w_k A_k`` (:func:`weighted_sum`)."""

    def __call__(
        self,
        advantages: Mapping[str, Tensor],
        weights: Mapping[str, float | Tensor],
        pair: tuple[str, str] = DEFAULT_PAIR,
    ) -> Tensor:
        return weighted_sum(advantages, weights)


@SHAPINGS.register("sars")
@dataclass(frozen=True)
class SARSShaping(Shaping):
    """SARS: ``A = sum_k w_k A_k + gamma * s * tanh(A_a * A_b)`` for the pair ``(a, b)``
    (the bonus of :func:`sars_bonus`; other rewards enter the sum only); ``gamma >= 0``."""

    gamma: float = option(0.4, "SARS bonus scale gamma (bonus bounded by +- gamma)")

    def __post_init__(self) -> None:
        if not self.gamma >= 0:
            raise ValueError(f"SARS gamma must be >= 0, got {self.gamma!r}")

    def __call__(
        self,
        advantages: Mapping[str, Tensor],
        weights: Mapping[str, float | Tensor],
        pair: tuple[str, str] = DEFAULT_PAIR,
    ) -> Tensor:
        check_pair(pair, advantages, needed_by="method.shaping=sars")
        a, b = pair
        return weighted_sum(advantages, weights) + sars_bonus(
            advantages[a], advantages[b], self.gamma
        )

    def uses_pair(self) -> bool:
        return True


def make_shaping(kind: str, **params: float) -> Shaping:
    """The shaping strategy of kind ``kind`` (a key of :data:`SHAPINGS`) with ``params``
    (e.g. ``make_shaping("sars", gamma=0.4)``); ValueError naming the valid kinds."""
    return SHAPINGS.make(kind, **params)
