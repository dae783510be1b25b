"""Data parallelism through accelerate: where this process sits, and the few collectives.

``accelerate launch -m cgrpo train ...`` starts N processes; the trainer then does, per step:

- every process draws the same ``data.prompts_per_step`` pairs and the same noise (one
  seeded generator, identical on every process), and samples only its contiguous
  **shard** of the ``P * G`` samples: a group may straddle processes;
- each process scores its own images; rewards are **all-gathered with their group ids**,
  so every process computes the advantages of the whole step exactly as one process
  would (:func:`cgrpo.method.advantages.advantages_by_group`) and keeps its shard;
- the PPO loss is a mean over the process's samples; DDP (through accelerate) averages
  the gradients, which with equal shards is the mean over all samples;
- only the main process writes logs, images and checkpoints. Weights, optimizer and all
  RNG states are identical on every process, so a checkpoint resumes on any number of
  processes;
- a part of the step that raises on one process (sampling, rewards, a loss of the
  update) stops every process with the same one-line :class:`ProcessFailed`
  (:meth:`Dist.agree`), instead of leaving the others in the next collective.

The processes may sit on several machines (``accelerate launch --num_machines N
--machine_rank k``, configs/accelerate/two_node.yaml): nothing here depends on which.

With ``run.fsdp=true`` the policy's trainable network is **sharded** instead of
replicated: torch FSDP2 (``fully_shard``) makes one unit per transformer block
(:meth:`Shardable.shard_modules`) and one for the rest, so each process holds ``1/N`` of
the weights (frozen base and LoRA alike), gradients and AdamW state, and all-gathers a
block just before it runs. Everything above holds unchanged: every process runs the same
number of forward and backward passes (equal shards; evaluation pads its share), and
checkpoints hold full tensors (:meth:`Dist.full` gathers them tensor by tensor, the main
process keeps and writes them; :meth:`Dist.like` shards them again on load), so they
resume on any number of processes, with or without FSDP.

Without ``accelerate launch`` (one process) nothing here touches torch.distributed.
No process group is made here: accelerate creates it (gloo on CPU, NCCL on GPU), and
FSDP2 shards over it. accelerate's own FSDP plugin (``distributed_type: FSDP`` in an
accelerate config) is not used: it only runs on GPUs, wants model and optimizer in one
``prepare`` call, and knows nothing of the policy's block structure.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from typing import Any, TypeVar

import torch

from cgrpo.policies.base import Condition, Policy, Shardable
from cgrpo.policies.sharding import full_tensor, local_tensor, shard_like

__all__ = ["Dist", "ProcessFailed", "launched_world_size"]

T = TypeVar("T")

_FSDP_PLUGIN_ERROR = (
    "accelerate was launched with distributed_type FSDP (ACCELERATE_USE_FSDP=true): cgrpo "
    "does its own FSDP sharding. Launch with a plain multi-process config "
    "(configs/accelerate/multi_gpu.yaml, or --multi_gpu) and set run.fsdp=true"
)

_DEEPSPEED_ERROR = (
    "accelerate was launched with DeepSpeed (ACCELERATE_USE_DEEPSPEED=true), which cgrpo "
    "does not support. For sharded weights, gradients and optimizer state (as ZeRO-3) "
    "launch with configs/accelerate/multi_gpu.yaml and set run.fsdp=true"
)


class ProcessFailed(RuntimeError):
    """A part of a step raised on some process; every process raises this, with the same
    one-line message (see :meth:`Dist.agree`)."""


def _describe(e: BaseException) -> tuple[str, str, str]:
    """An exception in one line's parts: the notes that say where it arose (e.g.
    ``reward 'x'``, added by :meth:`cgrpo.rewards.set.RewardSet.score`), its type, and its
    message's first line."""
    notes = "".join(f", {n}" for n in getattr(e, "__notes__", ()))
    lines = [line.strip() for line in str(e).splitlines() if line.strip()]
    return notes, type(e).__name__, lines[0] if lines else "(no message)"


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

    def __init__(self, accelerator: Any | None = None, fsdp: bool = False) -> None:
        self.accelerator = accelerator
        self.rank = accelerator.process_index if accelerator else 0
        self.world = accelerator.num_processes if accelerator else 1
        self.is_main = self.rank == 0
        #: shard the policy with FSDP2 (only meaningful with several processes)
        self.fsdp = fsdp and self.world > 1
        self._ddp: torch.nn.Module | None = None
        self._sharded: torch.nn.Module | None = None

    @classmethod
    def from_env(
        cls,
        device: str,
        fsdp: bool = False,
        log_with: list[str] | None = None,
        *,
        logging_dir: str | None = None,
    ) -> Dist:
        """Accelerate's state when launched on several processes, else a single process.
        ``log_with`` / ``logging_dir``: the accelerator's trackers (see
        :class:`cgrpo.io.run_log.MetricsLog`)."""
        if os.environ.get("ACCELERATE_USE_FSDP", "false").lower() == "true":
            raise ValueError(_FSDP_PLUGIN_ERROR)
        if os.environ.get("ACCELERATE_USE_DEEPSPEED", "false").lower() == "true":
            raise ValueError(_DEEPSPEED_ERROR)
        if launched_world_size() <= 1:
            return cls(None)
        from accelerate import Accelerator
        from accelerate.utils import DistributedDataParallelKwargs

        # gradients as views of DDP's buckets: no second copy of the (large) LoRA gradients
        ddp = DistributedDataParallelKwargs(gradient_as_bucket_view=True)
        from accelerate.utils import ProjectConfiguration

        project = ProjectConfiguration(project_dir=logging_dir, logging_dir=logging_dir)
        accelerator = Accelerator(
            cpu=torch.device(device).type == "cpu",
            kwargs_handlers=[ddp],
            log_with=log_with or None,
            project_config=project,
        )
        return cls(accelerator, fsdp=fsdp)

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

    def agree(self, fn: Callable[[], T], what: str) -> T:
        """``fn()``; when it raises on any process, every process raises the same one-line
        :class:`ProcessFailed` (``what``, where and on which process it failed, its type and
        message) instead of going on to a collective that the failed process never joins.

        Costs one 1-element all-gather when nothing failed (nothing with one process, where
        ``fn``'s exception passes as it is). An error in the middle of ``fn``'s own
        collectives (FSDP's all-gathers in a forward) is not caught this way: the others
        wait in that collective."""
        if self.accelerator is None:
            return fn()
        err: Exception | None = None
        try:
            out = fn()
        except Exception as e:  # any failure: the other processes must hear of it
            err = e
        if not bool(self.gather(torch.tensor([err is not None])).any()):
            return out
        told = self.gather_objects([None if err is None else _describe(err)])
        failed = [r for r, d in enumerate(told) if d is not None]
        notes, kind, text = told[failed[0]]
        others = f" (and {len(failed) - 1} more)" if len(failed) > 1 else ""
        raise ProcessFailed(
            f"{what}{notes}: {kind} on rank {failed[0]} of {self.world}{others}: {text}"
        ) from err

    def padded_share(self, n: int) -> tuple[list[int], int]:
        """This process's items of ``n`` (every ``world``-th, from its rank), padded by
        repeating its last item so that every process has ``ceil(n / world)``; returns
        (indices, how many are real). Equal counts keep FSDP's collectives in step."""
        mine = list(range(self.rank, n, self.world))
        per = -(-n // self.world)
        real = len(mine)
        fill = mine[-1] if mine else 0
        return mine + [fill] * (per - real), real

    # -- sharding (FSDP2) ------------------------------------------------------------------

    def shard_policy(self, policy: Policy) -> None:
        """With ``fsdp``: ``fully_shard`` each unit of :meth:`Shardable.shard_modules`, then
        the root. The policy's parameters are replaced by sharded ones (DTensors): read
        ``policy.trainable_parameters()`` after this call."""
        if not self.fsdp:
            return
        if not isinstance(policy, Shardable):
            raise ValueError(
                f"run.fsdp=true but {type(policy).__name__} has no shard_modules(): "
                "implement it (root module, transformer blocks) or set run.fsdp=false"
            )
        from torch.distributed.device_mesh import init_device_mesh
        from torch.distributed.fsdp import fully_shard

        # one dimension over all processes (the default process group), on the policy's
        # device type: FSDP moves each unit there, then keeps this process's shard
        mesh = init_device_mesh(policy.device.type, (self.world,))
        root, units = policy.shard_modules()
        for unit in units:
            fully_shard(unit, mesh=mesh)
        self._sharded = fully_shard(root, mesh=mesh)

    full = staticmethod(full_tensor)
    local = staticmethod(local_tensor)
    like = staticmethod(shard_like)

    # -- the update ------------------------------------------------------------------------

    def velocity_fn(
        self, policy: Policy, params: list[torch.nn.Parameter]
    ) -> Callable[[torch.Tensor, torch.Tensor, Condition], torch.Tensor]:
        """The velocity the update differentiates: through DDP when several processes
        (FSDP's sharded modules reduce their own gradients)."""
        if self.accelerator is None or self.fsdp:
            return lambda x, sigma, condition: policy.velocity(x, sigma, condition)
        self._ddp = self.accelerator.prepare_model(_VelocityModule(policy, params))
        return self._ddp

    def no_sync(self, sync: bool) -> contextlib.AbstractContextManager[Any]:
        """Skip the gradient reduction for a backward that is not the last of an update."""
        if sync:
            return contextlib.nullcontext()
        if self._sharded is not None:
            return _fsdp_no_sync(self._sharded)
        if self._ddp is None:
            return contextlib.nullcontext()
        return self.accelerator.no_sync(self._ddp)

    def barrier(self) -> None:
        if self.accelerator is not None:
            self.accelerator.wait_for_everyone()


@contextlib.contextmanager
def _fsdp_no_sync(module: Any) -> Any:
    """FSDP2: accumulate unsharded gradients; the next synced backward reduce-scatters."""
    module.set_requires_gradient_sync(False)
    try:
        yield
    finally:
        module.set_requires_gradient_sync(True)
