"""Exponential moving average of the trained weights: ``e <- d * e + (1 - d) * p`` after
each optimizer step (``optim.ema_decay = d``; 0: off). Evaluation, checkpoints' EMA
weights, ``cgrpo eval`` and ``cgrpo sample`` use it when it is on."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

__all__ = ["EMA"]


class EMA:
    """The EMA of ``params`` (tensors shaped, and with FSDP sharded, as the parameters)."""

    def __init__(self, params: list[torch.nn.Parameter], decay: float) -> None:
        if not 0 < decay < 1:
            raise ValueError(f"optim.ema_decay must be in (0, 1) (0 turns it off), got {decay}")
        self.params, self.decay = params, decay
        self.shadow = [p.detach().clone() for p in params]

    @torch.no_grad()
    def update(self) -> None:
        """``e <- e + (1 - d) * (p - e)`` for every parameter."""
        for e, p in zip(self.shadow, self.params, strict=True):
            e.lerp_(p.detach(), 1 - self.decay)

    @torch.no_grad()
    def _exchange(self) -> None:
        """Each parameter's values and its EMA's trade places, one tensor at a time (one
        temporary tensor, never a second copy of all weights)."""
        for p, e in zip(self.params, self.shadow, strict=True):
            t = p.detach().clone()
            p.copy_(e)
            e.copy_(t)

    @contextlib.contextmanager
    def swapped(self) -> Iterator[None]:
        """Within the block the parameters hold the EMA weights (and :attr:`shadow` the
        raw ones); both are back after."""
        self._exchange()
        try:
            yield
        finally:
            self._exchange()
