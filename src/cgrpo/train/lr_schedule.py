"""The learning rate of each training step: a linear warm-up, then constant or a cosine
decay (``optim.schedule``, ``optim.warmup``, ``optim.schedule_steps``).

For the update of training step ``s`` (counting from 0: ``s`` steps are done), base rate
``lr = optim.lr``, warm-up ``W`` steps and horizon ``N`` (``optim.schedule_steps``, 0:
``run.steps``)::

    s < W:              lr * (s + 1) / (W + 1)
    s >= W, constant:   lr
    s >= W, cosine:     lr * 0.5 * (1 + cos(pi * min(1, (s - W) / (N - W))))

so the warm-up rises linearly to ``lr`` at step ``W``, where the cosine starts, and the
cosine reaches 0 at step ``N`` (a run extended past ``N`` stays at 0). Every optimizer step
of a training step (``grpo.updates_per_rollout``) uses that step's rate.

The rate is a function of the step alone, and the step is in every checkpoint, so a
resumed run follows the schedule exactly (the optimizer's own ``lr`` is overwritten at
each step). ``constant`` with no warm-up never touches the optimizer.
"""

from __future__ import annotations

import math

import torch

from cgrpo.run.config import TrainConfig

__all__ = ["lr_factor", "scheduled", "set_lr"]


def lr_factor(step: int, *, schedule: str, warmup: int, horizon: int) -> float:
    """The factor of ``optim.lr`` for the update of training step ``step`` (from 0): the
    module docstring's formula."""
    if step < warmup:
        return (step + 1) / (warmup + 1)
    if schedule == "constant":
        return 1.0
    progress = min(1.0, (step - warmup) / (horizon - warmup))
    return 0.5 * (1.0 + math.cos(math.pi * progress))


def scheduled(cfg: TrainConfig) -> bool:
    """Whether the run's rate changes along training (anything but a constant rate)."""
    return cfg.optim.schedule != "constant" or cfg.optim.warmup > 0


def set_lr(optimizer: torch.optim.Optimizer, cfg: TrainConfig, step: int) -> float | None:
    """Give every parameter group the rate of training step ``step``; returns it (None, and
    the optimizer untouched, for a constant rate)."""
    if not scheduled(cfg):
        return None
    o = cfg.optim
    horizon = o.schedule_steps or cfg.run.steps
    lr = o.lr * lr_factor(step, schedule=o.schedule, warmup=o.warmup, horizon=horizon)
    for group in optimizer.param_groups:
        group["lr"] = lr
    return lr
