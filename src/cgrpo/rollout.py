"""Rollouts: sample groups of G images per (reference, prompt) and record each step.

For every condition the policy draws ``group_size`` samples with the SDE sampler of
:mod:`cgrpo.sde`, from sigma = 1 to 0, optionally from one shared initial noise per
group (the paper's setting: the group differs only by the SDE's noise, so the
advantages compare like with like). Each step's latent and Gaussian log-prob are
recorded so the update can re-score exactly the transition that was sampled.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from cgrpo.policies.base import Condition, Policy
from cgrpo.sde import compute_dtype, draw_noise, euler_step, sde_step


@dataclass
class Rollout:
    """What a group rollout records (N = number of conditions x group size).

    Attributes:
        latents: (T+1, N, *latent) the trajectory; ``latents[t]`` is the input of step t,
            ``latents[t+1]`` its sampled output; ``latents[-1]`` is the final sample.
        log_probs: (T, N) log-prob of each sampled transition under the sampling policy
            (NaN for the deterministic tail steps, which are not trainable).
        sigmas: (T+1,) the noise levels; step t goes from ``sigmas[t]`` to ``sigmas[t+1]``.
        condition: the N samples' condition (each pair's condition repeated G times).
        group_ids: (N,) which (reference, prompt) pair each sample belongs to.
        num_sde_steps: steps ``0..num_sde_steps-1`` were sampled with the SDE and can be
            trained; the rest are the deterministic tail (carried explicitly: a NaN in a
            log-prob must not shrink the trained range).
    """

    latents: torch.Tensor
    log_probs: torch.Tensor
    sigmas: torch.Tensor
    condition: Condition
    group_ids: torch.Tensor
    num_sde_steps: int

    @property
    def num_steps(self) -> int:
        return self.log_probs.shape[0]

    @property
    def final(self) -> torch.Tensor:
        return self.latents[-1]


def initial_noise(
    policy: Policy,
    num_groups: int,
    group_size: int,
    same_noise: bool,
    generator: torch.Generator | None,
) -> torch.Tensor:
    """(num_groups * group_size, *latent) standard normal noise, shared within a group if asked."""
    shape = policy.latent_shape()
    n = num_groups if same_noise else num_groups * group_size
    noise = draw_noise((n, *shape), torch.float32, generator, policy.device)
    return noise.repeat_interleave(group_size, dim=0) if same_noise else noise


@torch.no_grad()
def sample_groups(
    policy: Policy,
    condition: Condition,
    group_size: int,
    sigmas: torch.Tensor,
    eta: float,
    kind: str = "dance",
    same_noise: bool = True,
    generator: torch.Generator | None = None,
    micro_batch_size: int | None = None,
    ode_tail: int = 0,
    shard: slice | None = None,
) -> Rollout:
    """Sample ``group_size`` trajectories for each of the B conditions with the SDE sampler.

    ``eta > 0`` is required: a deterministic step has no log-prob to train on.
    The last ``ode_tail`` steps are deterministic Euler steps (log-prob NaN): the final
    sample then carries no SDE noise, at the price of not training those steps.
    ``micro_batch_size`` bounds how many samples go through the model at once.

    ``shard``: this process draws only ``samples[shard]`` of the ``B * group_size`` samples
    (data parallelism; a group may straddle processes). The noise of every step is drawn
    for all samples at once from ``generator`` and sliced, so a sample is the same whatever
    the number of processes or the micro-batch size; ``group_ids`` stay global.
    """
    if group_size < 1:
        raise ValueError(f"group_size must be >= 1, got {group_size}")
    if eta <= 0:
        raise ValueError(
            "GRPO rollouts need eta > 0: with eta = 0 the step is deterministic (Euler)"
        )
    num_groups = condition.batch_size
    if num_groups == 0:
        raise ValueError("empty batch: a rollout needs at least one (reference, prompt) pair")
    shard = shard or slice(0, num_groups * group_size)
    cond = condition.repeat_interleave(group_size).index(shard)
    x = initial_noise(policy, num_groups, group_size, same_noise, generator)
    total = x.shape[0]
    x = x[shard]
    n = x.shape[0]
    if n == 0:
        raise ValueError(f"shard {shard} of {total} samples is empty")
    mb = micro_batch_size or n
    steps = len(sigmas) - 1
    if not 0 <= ode_tail < steps:
        raise ValueError(f"ode_tail={ode_tail} must be in [0, {steps - 1}] for {steps} steps")
    latents = torch.empty((steps + 1, *x.shape), dtype=x.dtype, device=x.device)
    log_probs = torch.empty((steps, n), dtype=torch.float32, device=x.device)
    latents[0] = x
    for t in range(steps):
        s, s_next = float(sigmas[t]), float(sigmas[t + 1])
        noise = None
        if t < steps - ode_tail:  # one draw for the whole step, all processes' samples
            full = (total, *x.shape[1:])
            noise = draw_noise(full, compute_dtype(x), generator, x.device)[shard]
        for lo in range(0, n, mb):
            sl = slice(lo, lo + mb)
            xb = latents[t, sl]
            v = policy.velocity(xb, torch.full((xb.shape[0],), s, device=x.device), cond.index(sl))
            if t >= steps - ode_tail:
                latents[t + 1, sl] = euler_step(xb, v, s, s_next)
                log_probs[t, sl] = float("nan")
                continue
            nxt, logp, _, _ = sde_step(xb, v, s, s_next, eta, kind=kind, noise=noise[sl])
            latents[t + 1, sl] = nxt
            log_probs[t, sl] = logp
    group_ids = torch.arange(num_groups, device=x.device).repeat_interleave(group_size)[shard]
    return Rollout(latents, log_probs, sigmas.to(x.device), cond, group_ids, steps - ode_tail)


@torch.no_grad()
def sample_ode(
    policy: Policy,
    condition: Condition,
    sigmas: torch.Tensor,
    noise: torch.Tensor,
    micro_batch_size: int | None = None,
) -> torch.Tensor:
    """Deterministic Euler sampling (eta = 0) from given noise (evaluation, ``cgrpo sample``)."""
    x = noise.to(policy.device)
    n = x.shape[0]
    mb = micro_batch_size or n
    out = torch.empty_like(x)
    for lo in range(0, n, mb):
        sl = slice(lo, lo + mb)
        xb, cb = x[sl], condition.index(sl)
        for t in range(len(sigmas) - 1):
            s, s_next = float(sigmas[t]), float(sigmas[t + 1])
            v = policy.velocity(xb, torch.full((xb.shape[0],), s, device=x.device), cb)
            xb = euler_step(xb, v, s, s_next)
        out[sl] = xb
    return out
