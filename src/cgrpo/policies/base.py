"""The policy protocol: how a generator enters the trainer.

The trainer, the rollout and the evaluator see a generator only through this
protocol, so the embedded tiny transformer (:mod:`cgrpo.policies.embedded`) and the
FLUX adapters are interchangeable. The latent convention is the one of
:mod:`cgrpo.sampling.sde`: ``x_sigma = (1 - sigma) * x0 + sigma * noise``, velocity
``v = noise - x0``, sampling runs from sigma = 1 (noise) to sigma = 0.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AbstractContextManager
from typing import Protocol, runtime_checkable

import torch


class Condition(dict):
    """Per-sample conditioning tensors (prompt embeddings, reference tokens, ...).

    Every value has the batch on its first dimension, so a condition can be indexed
    and repeated like a tensor: ``cond.index(idx)``, ``cond.repeat_interleave(G)``.
    """

    def index(self, idx: torch.Tensor | slice) -> Condition:
        """The rows ``idx`` of every value (a tensor index moves to each value's device, so
        a condition may keep small bookkeeping tensors on the CPU)."""
        if isinstance(idx, torch.Tensor):
            return Condition({k: v[idx.to(v.device)] for k, v in self.items()})
        return Condition({k: v[idx] for k, v in self.items()})

    def repeat_interleave(self, repeats: int) -> Condition:
        return Condition({k: v.repeat_interleave(repeats, dim=0) for k, v in self.items()})

    def to(self, device: torch.device | str) -> Condition:
        return Condition({k: v.to(device) for k, v in self.items()})

    @property
    def batch_size(self) -> int:
        return next(iter(self.values())).shape[0]


@runtime_checkable
class Policy(Protocol):
    """A flow-matching generator conditioned on a reference image and a prompt."""

    device: torch.device

    def encode_condition(self, references: torch.Tensor, prompts: list[str]) -> Condition:
        """Condition for B (reference, prompt) pairs; references (B,3,H,W) in [0, 1]."""
        ...

    def latent_shape(self) -> tuple[int, ...]:
        """Shape of one sample's latent (no batch dimension)."""
        ...

    def velocity(self, x: torch.Tensor, sigma: torch.Tensor, condition: Condition) -> torch.Tensor:
        """The model's velocity v(x, sigma | condition); sigma has shape (B,)."""
        ...

    def reference_velocity(
        self, x: torch.Tensor, sigma: torch.Tensor, condition: Condition
    ) -> torch.Tensor:
        """Velocity of the frozen starting policy (for the optional KL penalty)."""
        ...

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Latents -> images (B,3,H,W) in [0, 1]."""
        ...

    def trainable_parameters(self) -> Iterator[torch.nn.Parameter]:
        """The parameters GRPO updates (all of the tiny model; LoRA weights for FLUX)."""
        ...

    def trainable_state_dict(self, copy: bool = True) -> dict[str, torch.Tensor]:
        """What a checkpoint stores of the policy: copies, or with ``copy=False`` the
        tensors themselves, detached (a checkpoint copies them to CPU one at a time)."""
        ...

    def load_trainable_state_dict(self, state: dict[str, torch.Tensor]) -> None: ...


@runtime_checkable
class Shardable(Protocol):
    """Optional: a policy that ``run.fsdp=true`` can shard (:mod:`cgrpo.run.distributed`)."""

    def shard_modules(self) -> tuple[torch.nn.Module, list[torch.nn.Module]]:
        """(root module, its repeated blocks): FSDP2 makes a unit of each block, then of the
        root, which holds every trainable parameter the velocity uses."""
        ...


@runtime_checkable
class HasGuidance(Protocol):
    """Optional: a guidance-distilled policy (FLUX.1-dev, Kontext, UNO) whose guidance
    embedding value can be set for a while, e.g. for an evaluation only."""

    def guidance_set_to(self, value: float) -> AbstractContextManager[None]:
        """Within the context every forward gets guidance ``value``; the policy's own value
        afterwards. ValueError when the model has no guidance embedding."""
        ...


@runtime_checkable
class HasOldPolicy(Protocol):
    """Optional: a policy that keeps an *old policy*, a soft-updated copy of its trainable
    weights (``method.objective.kind=nft``, :mod:`cgrpo.method.objective`). It never holds a
    second copy of a large model: FLUX keeps it as a second LoRA adapter."""

    def enable_old_policy(self) -> None:
        """Create the old policy as a copy of the current trainable weights (before FSDP
        sharding; calling it again is a no-op)."""
        ...

    def old_velocity(
        self, x: torch.Tensor, sigma: torch.Tensor, condition: Condition
    ) -> torch.Tensor:
        """The old policy's velocity (no gradient)."""
        ...

    def soft_update_old(self, decay: float) -> None:
        """``old <- decay * old + (1 - decay) * current``, weight by weight."""
        ...

    def old_state_dict(self, copy: bool = True) -> dict[str, torch.Tensor]:
        """The old policy's weights (for checkpoints; sharded tensors stay sharded):
        copies, or with ``copy=False`` the tensors themselves, detached."""
        ...

    def load_old_state_dict(self, state: dict[str, torch.Tensor]) -> None: ...


class OldPolicyView:
    """``policy`` with its old policy's velocity as ``velocity``: what a rollout drawn with
    the old policy samples from (everything else is the policy's own)."""

    def __init__(self, policy: HasOldPolicy) -> None:
        self._policy = policy

    def velocity(self, x: torch.Tensor, sigma: torch.Tensor, condition: Condition) -> torch.Tensor:
        return self._policy.old_velocity(x, sigma, condition)

    def __getattr__(self, name: str) -> object:
        return getattr(self._policy, name)
