"""What a checkpoint holds besides the policy's weights: the step counters, the optimizer,
the EMA, and every random number generator the run draws from.

Tensors are written whole (gathered from FSDP shards tensor by tensor into CPU memory on
the main process, :meth:`cgrpo.distributed.Dist.full`) and sharded again on load
(:meth:`~cgrpo.distributed.Dist.like`), so a checkpoint resumes on any number of processes,
with or without FSDP.
"""

from __future__ import annotations

import copy
import random
from typing import Any

import torch

from cgrpo import checkpoint as ckpt
from cgrpo.distributed import Dist
from cgrpo.ema import EMA

__all__ = ["TrainState"]


class TrainState:
    """Counters, optimizer, EMA and RNGs of a run (``seed`` seeds both generators:
    ``data_rng`` draws the pairs, ``generator`` the noise and step subsets)."""

    def __init__(
        self,
        params: list[torch.nn.Parameter],
        optimizer: torch.optim.Optimizer,
        ema: EMA | None,
        seed: int,
    ) -> None:
        self.params, self.optimizer, self.ema = params, optimizer, ema
        self.step = 0
        self.consecutive_skips = 0
        self.total_skips = 0
        self.data_rng = random.Random(seed)
        self.generator = torch.Generator(device="cpu").manual_seed(seed)

    # -- what a checkpoint holds --------------------------------------------------------

    def state_dict(self, dist: Dist, keep: bool = True) -> dict[str, Any]:
        """Full (unsharded) tensors; with FSDP every process must call it, and ``keep=False``
        ones only help gather (see :meth:`Dist.full`)."""
        py = self.data_rng.getstate()
        optim = self.optimizer.state_dict()
        optim["state"] = {
            i: {k: dist.full(v, keep) for k, v in s.items()} for i, s in optim["state"].items()
        }
        ema = None if self.ema is None else [dist.full(e, keep) for e in self.ema.shadow]
        return {
            "step": self.step,
            "consecutive_skips": self.consecutive_skips,
            "total_skips": self.total_skips,
            "optimizer": optim,
            "ema": ema,
            "rng": ckpt.get_rng_state(),
            "data_rng": [py[0], list(py[1]), py[2]],
            "generator": self.generator.get_state(),
        }

    def load_state_dict(self, state: dict[str, Any], dist: Dist) -> None:
        """Restore everything :meth:`state_dict` wrote (sharded as the parameters are)."""
        optim = state["optimizer"]
        for i, s in optim["state"].items():  # moments sharded as their parameter
            p = self.params[int(i)]
            optim["state"][i] = {
                k: dist.like(v, p) if torch.is_tensor(v) and v.dim() else v for k, v in s.items()
            }
        self.optimizer.load_state_dict(optim)
        ema = state["ema"]
        if (ema is None) != (self.ema is None):
            raise ValueError(
                "the checkpoint's EMA does not match optim.ema_decay (on in one, off in the "
                "other); resume with the run's own config"
            )
        if self.ema is not None:
            self.ema.shadow = [dist.like(e, p) for e, p in zip(ema, self.params, strict=True)]
        ckpt.set_rng_state(state["rng"])
        v, internal, gauss = state["data_rng"]
        self.data_rng.setstate((v, tuple(internal), gauss))
        self.generator.set_state(state["generator"])
        self.step = int(state["step"])
        self.consecutive_skips = int(state["consecutive_skips"])
        self.total_skips = int(state["total_skips"])

    # -- an update that may have to be undone --------------------------------------------

    def snapshot(self) -> tuple[list[torch.Tensor], dict[str, Any], list[torch.Tensor] | None]:
        """Copies of the weights, optimizer state and EMA (see :meth:`restore`)."""
        return (
            [p.detach().clone() for p in self.params],
            copy.deepcopy(self.optimizer.state_dict()),
            None if self.ema is None else [e.clone() for e in self.ema.shadow],
        )

    @torch.no_grad()
    def restore(self, snap: tuple[list[torch.Tensor], dict[str, Any], Any]) -> None:
        """Undo every optimizer step since :meth:`snapshot` (weights, moments, EMA)."""
        weights, optim, ema = snap
        for p, w in zip(self.params, weights, strict=True):
            p.copy_(w)
        self.optimizer.load_state_dict(optim)
        if self.ema is not None:
            self.ema.shadow = ema
