"""What a checkpoint holds besides the policy's weights: the step counters, the optimizer,
the EMA, and every random number generator the run draws from.

Tensors are written whole, so a checkpoint resumes on any number of processes, with or
without FSDP. The optimizer state goes through ``torch.distributed.checkpoint.state_dict``
(``get_optimizer_state_dict`` / ``set_optimizer_state_dict`` with ``full_state_dict`` and
``cpu_offload``): gathered into CPU memory on the main process, keyed by each parameter's
name in the policy's root module (not by its position in the optimizer), and sharded
again on load (a policy without a root module, i.e. not
:class:`~cgrpo.policies.base.Shardable`, keeps it by index, copied to CPU tensor by
tensor). The EMA is copied to CPU tensor by tensor (gathered when sharded,
:func:`~cgrpo.policies.sharding.cpu_copy`) and sharded again with
:meth:`~cgrpo.run.distributed.Dist.like` (it is not optimizer state): what a checkpoint
writes is in CPU memory, never a second copy on the device. A checkpoint an older cgrpo
wrote (optimizer state by index for a named policy, no ``train_seconds``) is refused with
one :class:`CheckpointError` naming it.
"""

from __future__ import annotations

import copy
import os
import random
from typing import Any

import torch

from cgrpo.io.atomic import CheckpointError
from cgrpo.io.rng_state import get_rng_state, random_state, set_random_state, set_rng_state
from cgrpo.policies.sharding import cpu_copy
from cgrpo.run.distributed import Dist
from cgrpo.train.ema import EMA

__all__ = ["ENTRIES", "TrainState"]

#: What :meth:`TrainState.state_dict` writes (a checkpoint without one is an older cgrpo's).
ENTRIES = (
    "step", "consecutive_skips", "total_skips", "train_seconds", "optimizer", "ema", "rng",
    "data_rng", "generator",
)  # fmt: skip


class TrainState:
    """Counters, optimizer, EMA and RNGs of a run (``seed`` seeds both generators:
    ``data_rng`` draws the pairs, ``generator`` the noise and step subsets)."""

    def __init__(
        self,
        params: list[torch.nn.Parameter],
        optimizer: torch.optim.Optimizer,
        ema: EMA | None,
        *,
        seed: int,
        module: torch.nn.Module | None = None,
    ) -> None:
        """``module``: the policy's root module holding every parameter (its names key the
        optimizer state); without one, the state is kept by index."""
        self.params, self.optimizer, self.ema = params, optimizer, ema
        self.module = module
        self.names: list[str] | None = None
        if module is not None:
            name_of = {id(p): n for n, p in module.named_parameters()}
            missing = [i for i, p in enumerate(params) if id(p) not in name_of]
            if missing:
                raise ValueError(
                    f"trainable parameters {missing} are not in {type(module).__name__}: the "
                    "policy's shard_modules() root must hold every trainable parameter"
                )
            self.names = [name_of[id(p)] for p in params]
        self.step = 0
        self.consecutive_skips = 0
        self.total_skips = 0
        self.train_seconds = 0.0  # rollout + reward + update time of the steps taken
        self.data_rng = random.Random(seed)
        self.generator = torch.Generator(device="cpu").manual_seed(seed)

    # -- what a checkpoint holds --------------------------------------------------------

    def state_dict(self, dist: Dist, keep: bool = True) -> dict[str, Any]:
        """Full (unsharded) tensors in CPU memory; with FSDP every process must call it,
        and ``keep=False`` ones only help gather (see :func:`cpu_copy`)."""
        ema = None if self.ema is None else [cpu_copy(e, keep) for e in self.ema.shadow]
        return {
            "step": self.step,
            "consecutive_skips": self.consecutive_skips,
            "total_skips": self.total_skips,
            "train_seconds": self.train_seconds,
            "optimizer": self._optimizer_state(dist, keep),
            "ema": ema,
            "rng": get_rng_state(),
            "data_rng": random_state(self.data_rng),
            "generator": self.generator.get_state(),
        }

    def load_state_dict(
        self, state: dict[str, Any], dist: Dist, source: str | os.PathLike[str]
    ) -> None:
        """Restore everything :meth:`state_dict` wrote (sharded as the parameters are);
        ``source``: the checkpoint it was read from (named by the errors)."""
        self._check_written_by_this_version(state, source)
        self._load_optimizer_state(state["optimizer"], dist)
        ema = state["ema"]
        if (ema is None) != (self.ema is None):
            raise ValueError(
                "the checkpoint's EMA does not match optim.ema_decay (on in one, off in the "
                "other); resume with the run's own config"
            )
        if self.ema is not None:
            self.ema.shadow = [dist.like(e, p) for e, p in zip(ema, self.params, strict=True)]
        set_rng_state(state["rng"])
        set_random_state(self.data_rng, state["data_rng"])
        self.generator.set_state(state["generator"])
        self.step = int(state["step"])
        self.consecutive_skips = int(state["consecutive_skips"])
        self.total_skips = int(state["total_skips"])
        self.train_seconds = float(state["train_seconds"])

    def _check_written_by_this_version(
        self, state: dict[str, Any], source: str | os.PathLike[str]
    ) -> None:
        """One clear error for a checkpoint an older cgrpo wrote (no ``train_seconds``, or
        the optimizer state keyed by index where this policy's parameters have names)."""
        keys = set(ENTRIES) - set(state)
        by_index = any(isinstance(k, int) for k in state.get("optimizer", {}).get("state", {}))
        if keys or (by_index and self.names is not None):
            what = f"no {sorted(keys)}" if keys else "optimizer state keyed by index"
            raise CheckpointError(
                f"checkpoint '{source}' was written by an older cgrpo ({what}) and cannot be "
                "resumed by this version: start the run again"
            )

    def _optimizer_state(self, dist: Dist, keep: bool) -> dict[str, Any]:
        """The full optimizer state, keyed by parameter name (by index without a module)."""
        if self.module is None or not self.optimizer.state:
            # (never stepped: DCP would give the optimizer a zero step, changing the run)
            optim = self.optimizer.state_dict()
            optim["state"] = {
                i: {k: cpu_copy(v, keep) if torch.is_tensor(v) else v for k, v in s.items()}
                for i, s in optim["state"].items()
            }
            return optim
        from torch.distributed.checkpoint.state_dict import (
            StateDictOptions,
            get_optimizer_state_dict,
        )

        opts = StateDictOptions(full_state_dict=True, cpu_offload=True)
        return get_optimizer_state_dict(self.module, self.optimizer, options=opts)

    def _load_optimizer_state(self, optim: dict[str, Any], dist: Dist) -> None:
        if not optim["state"]:
            self.optimizer.load_state_dict(optim)
            return
        if self.names is None:
            if not all(isinstance(k, int) for k in optim["state"]):
                raise ValueError(
                    "the checkpoint keys its optimizer state by parameter name, but this "
                    "policy has no root module (shard_modules) to name its parameters"
                )
            for i, s in optim["state"].items():  # moments sharded as their parameter
                p = self.params[int(i)]
                optim["state"][i] = {
                    k: dist.like(v, p) if torch.is_tensor(v) and v.dim() else v
                    for k, v in s.items()
                }
            self.optimizer.load_state_dict(optim)
            return
        unknown = sorted(set(optim["state"]) - set(self.names))
        if unknown:
            raise ValueError(
                f"the checkpoint's optimizer state names parameters this policy does not "
                f"train: {unknown[:5]}; resume with the run's own model config"
            )
        from torch.distributed.checkpoint.state_dict import (
            StateDictOptions,
            set_optimizer_state_dict,
        )

        opts = StateDictOptions(full_state_dict=True)
        set_optimizer_state_dict(self.module, self.optimizer, optim, options=opts)

    # -- the random state of the last complete step ----------------------------------------

    def rng_snapshot(self) -> tuple[dict[str, Any], Any, torch.Tensor]:
        """Copies of every generator a step draws from (global, ``data_rng``, ``generator``):
        what a checkpoint of this point holds, restored by :meth:`restore_rng` when a step
        is abandoned half-way (a stop signal), so the checkpoint resumes exactly."""
        return get_rng_state(), self.data_rng.getstate(), self.generator.get_state()

    def restore_rng(self, snap: tuple[dict[str, Any], Any, torch.Tensor]) -> None:
        """Put back the generators :meth:`rng_snapshot` copied."""
        rng, data, gen = snap
        set_rng_state(rng)
        self.data_rng.setstate(data)
        self.generator.set_state(gen)

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
