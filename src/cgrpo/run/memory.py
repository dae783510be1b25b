"""A rollout too large for the machine, refused before the first step: the trajectory a
step keeps (every sample's latent at every sampling step, :func:`rollout_bytes`) against
the memory free on the policy's device. A group size of 100,000 would otherwise end in an
allocator traceback after minutes (or the machine swapping)."""

from __future__ import annotations

import math
from pathlib import Path

import torch

from cgrpo.io.errors import ResourceError

__all__ = ["check_rollout_memory", "free_bytes", "rollout_bytes"]


def rollout_bytes(samples: int, steps: int, latent: tuple[int, ...]) -> int:
    """Bytes of the float32 trajectory a rollout keeps:
    ``samples x (steps + 1) x prod(latent) x 4`` (the latents; log-probs and the rest are
    far smaller)."""
    return samples * (steps + 1) * math.prod(latent) * 4


def free_bytes(device: torch.device) -> int | None:
    """Memory free for new tensors on ``device`` (CUDA: the driver's free bytes; CPU: Linux's
    MemAvailable), or None when it cannot be told."""
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    if device.type != "cpu":
        return None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def check_rollout_memory(
    samples: int, steps: int, latent: tuple[int, ...], *, device: torch.device
) -> None:
    """:class:`ResourceError` naming the keys to lower when a step's trajectory alone
    (:func:`rollout_bytes`) exceeds the free memory of ``device``."""
    need, free = rollout_bytes(samples, steps, latent), free_bytes(device)
    if free is None or need <= free:
        return
    raise ResourceError(
        f"one step keeps {samples} samples x {steps + 1} latents of {list(latent)}: about "
        f"{need / 1e9:.1f} GB, more than the {free / 1e9:.1f} GB free on {device}; lower "
        "grpo.group_size or data.prompts_per_step (or sampler.num_steps), or use more processes"
    )
