"""Data parallelism through accelerate: where this process sits, and the few collectives.

``accelerate launch -m cgrpo train ...`` starts N processes; the trainer then does, per step:

- every process draws the same ``data.prompts_per_step`` pairs and the same noise (one
  seeded generator, identical on every process), and samples only its contiguous
  **shard** of the ``P * G`` samples: a group may straddle processes;
- each process scores its own images; rewards are **all-gathered with their group ids**,
  so every process computes the advantages of the whole step exactly as one process
  would (:func:`cgrpo.advantages.advantages_by_group`) and keeps its shard;
- the PPO loss is a mean over the process's samples; DDP (through accelerate) averages
  the gradients, which with equal shards is the mean over all samples;
- only the main process writes logs, images and checkpoints. Weights, optimizer and all
  RNG states are identical on every process, so a checkpoint resumes on any number of
  processes.

Without ``accelerate launch`` (one process) nothing here touches torch.distributed.
No process group is made here: accelerate creates it (gloo on CPU, NCCL on GPU).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from typing import Any

import torch

from cgrpo.policies.base import Condition, Policy

__all__ = ["Dist", "launched_world_size"]


def launched_world_size() -> int:
    """Processes of this run as set by the launcher (1 without ``accelerate launch``)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


class _VelocityModule(torch.nn.Module):
    """The policy's velocity as an ``nn.Module`` whose parameters are the trainable ones,
    so DDP can hook their gradients (the parameters are shared, not copied)."""

    def __init__(self, policy: Policy, params: list[torch.nn.Parameter]) -> None:
        super().__init__()
        self.trainable = torch.nn.ParameterList(params)
        self._policy = [policy]  # a list: not registered as a submodule

    def forward(self, x: torch.Tensor, sigma: torch.Tensor, condition: Condition) -> torch.Tensor:
        return self._policy[0].velocity(x, sigma, condition)


class Dist:
    """This process's place in the run; a single process when ``accelerator`` is None."""

    def __init__(self, accelerator: Any | None = None) -> None:
        self.accelerator = accelerator
        self.rank = accelerator.process_index if accelerator else 0
        self.world = accelerator.num_processes if accelerator else 1
        self.is_main = self.rank == 0
        self._ddp: torch.nn.Module | None = None

    @classmethod
    def from_env(cls, device: str) -> Dist:
        """Accelerate's state when launched on several processes, else a single process."""
        if launched_world_size() <= 1:
            return cls(None)
        from accelerate import Accelerator
        from accelerate.utils import DistributedDataParallelKwargs

        # gradients as views of DDP's buckets: no second copy of the (large) LoRA gradients
        ddp = DistributedDataParallelKwargs(gradient_as_bucket_view=True)
        return cls(Accelerator(cpu=torch.device(device).type == "cpu", kwargs_handlers=[ddp]))

    @property
    def device(self) -> str | None:
        """The device accelerate gives this process (None: keep the configured one)."""
        return str(self.accelerator.device) if self.accelerator else None

    def shard(self, n: int) -> slice:
        """This process's contiguous share of ``n`` samples (``n`` must split evenly)."""
        if n % self.world:
            raise ValueError(
                f"{n} samples per step (data.prompts_per_step x grpo.group_size) do not split "
                f"evenly over {self.world} processes; make the product a multiple of "
                f"{self.world}"
            )
        k = n // self.world
        return slice(self.rank * k, (self.rank + 1) * k)

    def gather(self, t: torch.Tensor) -> torch.Tensor:
        """Concatenation over processes, in rank order (identity for one process)."""
        if self.accelerator is None:
            return t
        return self.accelerator.gather(t.contiguous().to(self.accelerator.device)).cpu()

    def gather_objects(self, items: list[Any]) -> list[Any]:
        """Python objects of every process, concatenated in rank order."""
        if self.accelerator is None:
            return items
        from accelerate.utils import gather_object

        return gather_object(items)

    def velocity_fn(
        self, policy: Policy, params: list[torch.nn.Parameter]
    ) -> Callable[[torch.Tensor, torch.Tensor, Condition], torch.Tensor]:
        """The velocity the update differentiates: through DDP when several processes."""
        if self.accelerator is None:
            return lambda x, sigma, condition: policy.velocity(x, sigma, condition)
        self._ddp = self.accelerator.prepare_model(_VelocityModule(policy, params))
        return self._ddp

    def no_sync(self, sync: bool) -> contextlib.AbstractContextManager[Any]:
        """Skip DDP's gradient all-reduce for a backward that is not the last of an update."""
        if sync or self._ddp is None:
            return contextlib.nullcontext()
        return self.accelerator.no_sync(self._ddp)

    def barrier(self) -> None:
        if self.accelerator is not None:
            self.accelerator.wait_for_everyone()
