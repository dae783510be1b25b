"""Per-denoising-step weights of the named rewards' advantages (the *weighting* family).

* :class:`StaticWeights`: every reward at its static weight (``rewards.<name>.weight``,
  optionally overridden by ``weights``) at every step.
* :class:`TimeAwareWeights` (TDW, time-aware dynamic weighting): early (high-noise) steps
  decide layout and semantics, so they lean on the prompt reward; middle steps, where the
  subject's details form, lean on identity; the last steps balance both. TDW sets the
  weights of the two roles (``method.pair``: identity, prompt) and leaves every other
  reward at its static weight.

Strategies are config sections (``method.weighting: {kind: tdw, early_w_prompt: 0.7}``)
registered in :data:`WEIGHTINGS`; all of TDW's constants are fields.

Step index convention: ``t = 0`` is the first step (from pure noise), ``t = num_steps - 1``
the last one. **The weight must be taken at the true step index of the transition being
trained**; see :func:`train_step_indices`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from cgrpo.config.core import option
from cgrpo.config.lazy import lazy_import
from cgrpo.config.registry import Registry
from cgrpo.method.pair import DEFAULT_PAIR, check_pair

torch = lazy_import("torch")

if TYPE_CHECKING:
    from torch import Tensor

__all__ = [
    "Weighting",
    "StaticWeights",
    "TimeAwareWeights",
    "WEIGHTINGS",
    "make_weighting",
    "train_step_indices",
]


def _check_num_steps(num_steps: int) -> None:
    if isinstance(num_steps, bool) or int(num_steps) != num_steps or num_steps < 1:
        raise ValueError(f"num_steps must be an integer >= 1, got {num_steps!r}")


def _check_step(step_index: int, num_steps: int) -> None:
    _check_num_steps(num_steps)
    if isinstance(step_index, bool) or int(step_index) != step_index:
        raise ValueError(f"step_index must be an integer, got {step_index!r}")
    if not 0 <= step_index < num_steps:
        raise ValueError(
            f"step_index must satisfy 0 <= t < num_steps={num_steps}, got {step_index}"
        )


def _check_steps_tensor(step_indices: Tensor, num_steps: int) -> Tensor:
    _check_num_steps(num_steps)
    t = torch.as_tensor(step_indices)
    if t.is_floating_point() or t.is_complex() or t.dtype == torch.bool:
        raise ValueError(f"step_indices must be an integer tensor, got dtype {t.dtype}")
    if t.numel() and not bool(((t >= 0) & (t < num_steps)).all()):
        bad = t[(t < 0) | (t >= num_steps)].flatten()[:10].tolist()
        raise ValueError(f"step_indices must satisfy 0 <= t < num_steps={num_steps}; got {bad}")
    return t


#: The weighting family: kind name -> strategy class.
WEIGHTINGS = Registry("weighting")


class Weighting:
    """Base of the weighting family: ``step_weights(t, T, base, pair) -> {name: weight}``.

    ``t``: the TRUE index of the trained transition (0 = from pure noise) of ``T`` steps;
    ``base``: every reward's static weight; ``pair``: the (identity, prompt) reward names."""

    registry: ClassVar[Registry] = WEIGHTINGS
    kind: ClassVar[str]

    def step_weights(
        self, step_index: int, num_steps: int, base: Mapping[str, float], *, pair: tuple[str, str]
    ) -> dict[str, float]:
        raise NotImplementedError

    def uses_pair(self) -> bool:
        """Whether this kind needs the two rewards of ``pair`` to exist."""
        return False


@WEIGHTINGS.register("static")
@dataclass(frozen=True)
class StaticWeights(Weighting):
    """Constant weights: each reward's static weight, or ``weights[name]`` where given."""

    weights: dict[str, float] = option(
        {}, "per-reward weights overriding rewards.<name>.weight (empty: the rewards' own)"
    )

    def step_weights(
        self,
        step_index: int,
        num_steps: int,
        base: Mapping[str, float],
        *,
        pair: tuple[str, str] = DEFAULT_PAIR,
    ) -> dict[str, float]:
        """``{name: weight}``; ``step_index`` is only validated (``0 <= t < num_steps``)."""
        _check_step(step_index, num_steps)
        self.check_names(base)
        return {k: float(self.weights.get(k, w)) for k, w in base.items()}

    def check_names(self, rewards: Iterable[str]) -> None:
        """ValueError unless every name in ``weights`` is one of ``rewards``."""
        rewards = list(rewards)
        unknown = sorted(set(self.weights) - set(rewards))
        if unknown:
            raise ValueError(
                f"method.weighting.weights names {unknown}, which are not rewards; "
                f"rewards: {rewards}"
            )


@WEIGHTINGS.register("tdw")
@dataclass(frozen=True)
class TimeAwareWeights(Weighting):
    """Time-aware dynamic weighting (TDW). With ``t' = reference_steps * t / num_steps``
    (``t' = t`` at the paper's 25 steps)::

        w_prompt = early_w_prompt                                  if t' < early_end
                 = low + span * (1 - sigmoid(slope * (t' - center)))  if t' < late_start
                 = late_w_prompt                                   otherwise
        w_id     = 1 - w_prompt

    Defaults (the paper's 25-step schedule): ``w_prompt`` = 0.70 for t = 0..5, 0.684 (6),
    0.633 (8), 0.50 (10), 0.367 (12), 0.316 (14), ~0.30 for 16..21, 0.50 for 22..24.
    Other step counts evaluate the same curve at the same fraction ``u = t / num_steps`` of
    the trajectory.
    """

    reference_steps: int = option(25, "step count the constants below are given for", unit="steps")
    early_end: float = option(6, "t' below this: the early phase (w_prompt = early_w_prompt)")
    late_start: float = option(22, "t' from this on: the late phase (w_prompt = late_w_prompt)")
    early_w_prompt: float = option(0.7, "prompt weight of the early (high-noise) steps")
    late_w_prompt: float = option(0.5, "prompt weight of the last steps")
    low: float = option(0.3, "middle phase: lowest prompt weight (low + span at t' = -inf)")
    span: float = option(0.4, "middle phase: height of the sigmoid")
    slope: float = option(0.8, "middle phase: sigmoid slope", unit="1/step")
    center: float = option(
        10, "middle phase: sigmoid centre (w_prompt = low + span/2)", unit="steps"
    )

    def __post_init__(self) -> None:
        if self.reference_steps < 1:
            raise ValueError(f"reference_steps must be >= 1, got {self.reference_steps!r}")
        if not self.early_end <= self.late_start:
            raise ValueError(
                f"need early_end <= late_start, got {self.early_end} > {self.late_start}"
            )

    def _ref_time(self, step_index: float, num_steps: int) -> float:
        return self.reference_steps * step_index / num_steps

    def weights(self, step_index: int, num_steps: int) -> tuple[float, float]:
        """``(w_id, w_prompt)`` as python floats for step ``t = step_index`` of ``num_steps``."""
        _check_step(step_index, num_steps)
        tr = self._ref_time(int(step_index), int(num_steps))
        if tr < self.early_end:
            wp = self.early_w_prompt
        elif tr < self.late_start:
            z = self.slope * (tr - self.center)
            # 1 - sigmoid(z) == sigmoid(-z) == 1 / (1 + exp(z))
            wp = self.low + self.span / (1.0 + math.exp(z))
        else:
            wp = self.late_w_prompt
        wp = float(wp)
        return 1.0 - wp, wp

    def weights_tensor(self, step_indices: Tensor, num_steps: int) -> tuple[Tensor, Tensor]:
        """Vectorised :meth:`weights`: ``(w_id, w_prompt)`` float32 tensors shaped like the
        integer tensor ``step_indices`` (computed in float64, then cast)."""
        t = _check_steps_tensor(step_indices, num_steps)
        tr = self.reference_steps * t.to(torch.float64) / int(num_steps)
        mid = self.low + self.span * torch.sigmoid(-self.slope * (tr - self.center))
        wp = torch.where(
            tr < self.early_end,
            torch.full_like(tr, self.early_w_prompt),
            torch.where(tr < self.late_start, mid, torch.full_like(tr, self.late_w_prompt)),
        )
        return (1.0 - wp).to(torch.float32), wp.to(torch.float32)

    def step_weights(
        self,
        step_index: int,
        num_steps: int,
        base: Mapping[str, float],
        *,
        pair: tuple[str, str] = DEFAULT_PAIR,
    ) -> dict[str, float]:
        """``base`` with the pair's weights replaced by :meth:`weights` at step ``t``:
        ``pair[0]`` (identity) gets ``w_id``, ``pair[1]`` (prompt) gets ``w_prompt``."""
        check_pair(pair, base, needed_by="method.weighting=tdw")
        w_id, w_prompt = self.weights(step_index, num_steps)
        return {**dict(base), pair[0]: w_id, pair[1]: w_prompt}

    def uses_pair(self) -> bool:
        return True


def make_weighting(kind: str, **params: Any) -> Weighting:
    """The weighting of kind ``kind`` (a key of :data:`WEIGHTINGS`) with ``params``."""
    return WEIGHTINGS.make(kind, **params)


def train_step_indices(
    num_steps: int, fraction: float, generator: torch.Generator | None = None
) -> Tensor:
    """Which denoising steps to train on this iteration: a random subset of the TRUE step
    indices ``0..num_steps-1``, of size ``max(1, round(fraction * num_steps))`` (python
    ``round``: halves go to the even integer), in random order, as a ``torch.long`` CPU tensor.

    Use the returned values themselves wherever a per-step quantity is needed (sigma, stored
    latents/log-probs, and the TDW weight): iterate ``for t in train_step_indices(...)`` and
    call ``weighting.weights(int(t), num_steps)``. Weighting by the loop counter ``j`` of the
    permuted loop instead of ``perm[j]`` (a bug in a public implementation) silently applies
    the weights of the wrong steps.
    """
    _check_num_steps(num_steps)
    if not (0.0 < fraction <= 1.0):
        raise ValueError(f"fraction must be in (0, 1], got {fraction!r}")
    k = max(1, round(fraction * num_steps))
    device = generator.device if generator is not None else torch.device("cpu")
    perm = torch.randperm(int(num_steps), generator=generator, device=device)
    return perm[:k].to(device="cpu", dtype=torch.long)
