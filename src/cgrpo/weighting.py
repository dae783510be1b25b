"""Per-denoising-step weights of the identity and prompt advantages.

* :class:`StaticWeights`: the same ``(w_id, w_prompt)`` at every step.
* :class:`TimeAwareWeights` (TDW, time-aware dynamic weighting): early (high-noise) steps
  decide layout and semantics, so they lean on the prompt reward; middle steps, where the
  subject's details form, lean on identity; the last steps balance both.

Step index convention: ``t = 0`` is the first step (from pure noise), ``t = num_steps - 1``
the last one. **The weight must be taken at the true step index of the transition being
trained**; see :func:`train_step_indices`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = [
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


@dataclass(frozen=True)
class StaticWeights:
    """Constant weights: ``(w_id, w_prompt)`` at every step."""

    w_id: float = 1.0
    w_prompt: float = 1.0

    def weights(self, step_index: int, num_steps: int) -> tuple[float, float]:
        """``(w_id, w_prompt)``; ``step_index`` is only validated (``0 <= t < num_steps``)."""
        _check_step(step_index, num_steps)
        return float(self.w_id), float(self.w_prompt)

    def weights_tensor(self, step_indices: Tensor, num_steps: int) -> tuple[Tensor, Tensor]:
        """Vectorised :meth:`weights`: float32 tensors shaped like ``step_indices``."""
        t = _check_steps_tensor(step_indices, num_steps)
        kw = {"dtype": torch.float32, "device": t.device}
        return torch.full(t.shape, float(self.w_id), **kw), torch.full(
            t.shape, float(self.w_prompt), **kw
        )


@dataclass(frozen=True)
class TimeAwareWeights:
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

    reference_steps: int = 25
    early_end: float = 6
    late_start: float = 22
    early_w_prompt: float = 0.7
    late_w_prompt: float = 0.5
    low: float = 0.3
    span: float = 0.4
    slope: float = 0.8
    center: float = 10

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


#: Config name -> weighting class.
WEIGHTINGS: dict[str, type] = {"static": StaticWeights, "tdw": TimeAwareWeights}


def make_weighting(name: str, **kwargs: float) -> StaticWeights | TimeAwareWeights:
    """Build the weighting called ``name`` (a key of :data:`WEIGHTINGS`) with ``kwargs``."""
    try:
        cls = WEIGHTINGS[name]
    except (KeyError, TypeError):
        raise ValueError(
            f"unknown weighting {name!r}; valid names: {', '.join(sorted(WEIGHTINGS))}"
        ) from None
    return cls(**kwargs)


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
