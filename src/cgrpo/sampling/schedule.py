"""Rollout schedules (the *schedule* family): which denoising steps of a rollout are SDE
steps (noise injected, a Gaussian log-prob, trainable) and which are deterministic ODE
(Euler) steps. ``sampler.schedule: {kind: ...}``.

* ``full`` (the paper's): SDE on every step but the last ``sampler.ode_tail``.
* ``window`` (MixGRPO): SDE on ``size`` consecutive steps from ``start``, ODE elsewhere;
  with ``every > 0`` the window moves ``stride`` steps later every ``every`` training steps
  (MixGRPO's progressive strategy), wrapping around to ``start``.
* ``branch`` (Flow-GRPO-Fast): the group shares an ODE prefix up to step ``at`` (computed
  once per group, not G times), branches with ``k`` SDE steps, then goes on with the ODE;
  ``at = -1`` draws the branch step for each training step (all groups of the step share
  it) uniformly from ``[lo, hi]``.

Only SDE steps are trained: ``grpo.timestep_fraction`` of them, a random subset at their
TRUE indices (so TDW weights each trained transition by its own step). The reward
differences within a group then come from those few steps' noise, so credit goes to the
steps that are trained.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from cgrpo.config.core import option
from cgrpo.config.lazy import lazy_import
from cgrpo.config.registry import Registry

torch = lazy_import("torch")

__all__ = [
    "SCHEDULES",
    "Schedule",
    "FullSchedule",
    "WindowSchedule",
    "BranchSchedule",
    "make_schedule",
]

#: The schedule family: kind name -> class.
SCHEDULES = Registry("schedule")


class Schedule:
    """Base of the schedule family: ``sde_mask(num_steps, ode_tail, train_step, generator)``
    -> one bool per denoising step (True: SDE, trainable)."""

    registry: ClassVar[Registry] = SCHEDULES
    kind: ClassVar[str]

    def sde_mask(
        self, num_steps: int, ode_tail: int, train_step: int, *, generator: torch.Generator
    ) -> list[bool]:
        raise NotImplementedError

    def validate(self, num_steps: int) -> None:
        """ValueError naming the key when this schedule cannot run with ``num_steps``."""


@SCHEDULES.register("full")
@dataclass(frozen=True)
class FullSchedule(Schedule):
    """SDE on steps ``0 .. T - ode_tail - 1``, ODE on the tail (the paper's sampler)."""

    def sde_mask(
        self, num_steps: int, ode_tail: int, train_step: int, *, generator: torch.Generator
    ) -> list[bool]:
        return [t < num_steps - ode_tail for t in range(num_steps)]


@SCHEDULES.register("window")
@dataclass(frozen=True)
class WindowSchedule(Schedule):
    """SDE on ``size`` consecutive steps, ODE elsewhere; fixed, or moving over training."""

    size: int = option(2, "SDE steps in the window", unit="steps")
    start: int = option(0, "first step of the window (0: from pure noise)", unit="steps")
    every: int = option(
        0,
        "move the window every N training steps (0: fixed; MixGRPO's progressive)",
        unit="steps",
    )
    stride: int = option(1, "how far the window moves each time", unit="steps")

    def validate(self, num_steps: int) -> None:
        if not 1 <= self.size <= num_steps or not 0 <= self.start <= num_steps - self.size:
            raise ValueError(
                f"sampler.schedule: a window of size {self.size} from {self.start} does not fit "
                f"in {num_steps} steps (need 1 <= size and start + size <= sampler.num_steps)"
            )
        if self.every < 0 or self.stride < 1:
            raise ValueError("sampler.schedule.every must be >= 0 and stride >= 1")

    def first(self, num_steps: int, train_step: int) -> int:
        """The window's first step at training step ``train_step`` (0-based)."""
        if not self.every:
            return self.start
        span = num_steps - self.size - self.start + 1  # window starts that fit
        return self.start + (train_step // self.every * self.stride) % span

    def sde_mask(
        self, num_steps: int, ode_tail: int, train_step: int, *, generator: torch.Generator
    ) -> list[bool]:
        lo = self.first(num_steps, train_step)
        return [lo <= t < lo + self.size for t in range(num_steps)]


@SCHEDULES.register("branch")
@dataclass(frozen=True)
class BranchSchedule(Schedule):
    """A shared ODE prefix to step ``at``, ``k`` SDE steps, ODE to the end."""

    k: int = option(1, "SDE steps after the branch point (Flow-GRPO-Fast: 1-2)", unit="steps")
    at: int = option(-1, "branch step (-1: drawn per training step from [lo, hi])", unit="steps")
    lo: int = option(0, "at = -1: earliest branch step", unit="steps")
    hi: int = option(-1, "at = -1: latest branch step (-1: the last one that fits)", unit="steps")

    def bounds(self, num_steps: int) -> tuple[int, int]:
        hi = num_steps - self.k if self.hi < 0 else self.hi
        return self.lo, hi

    def validate(self, num_steps: int) -> None:
        lo, hi = self.bounds(num_steps)
        if self.k < 1 or (self.at >= 0 and self.at + self.k > num_steps):
            raise ValueError(
                f"sampler.schedule: branch at {self.at} with k={self.k} SDE steps does not fit "
                f"in {num_steps} steps"
            )
        if self.at < 0 and not 0 <= lo <= hi <= num_steps - self.k:
            raise ValueError(
                f"sampler.schedule: branch range [{lo}, {hi}] with k={self.k} must lie in "
                f"[0, {num_steps - self.k}]"
            )

    def sde_mask(
        self, num_steps: int, ode_tail: int, train_step: int, *, generator: torch.Generator
    ) -> list[bool]:
        at = self.at
        if at < 0:
            lo, hi = self.bounds(num_steps)
            at = lo + int(torch.randint(hi - lo + 1, (1,), generator=generator))
        return [at <= t < at + self.k for t in range(num_steps)]


def make_schedule(kind: str, **params: int) -> Schedule:
    """The schedule of kind ``kind`` with ``params``; ValueError naming the valid kinds."""
    return SCHEDULES.make(kind, **params)
