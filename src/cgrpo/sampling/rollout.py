"""Rollouts: sample groups of G images per (reference, prompt) and record each step.

For every condition the policy draws ``group_size`` samples with the SDE sampler of
:mod:`cgrpo.sampling.sde`, from sigma = 1 to 0, optionally from one shared initial noise per
group (the paper's setting: the group differs only by the SDE's noise, so the
advantages compare like with like). Each step's latent and Gaussian log-prob are
recorded so the update can re-score exactly the transition that was sampled.

The image the rewards score is, by default, the model's clean prediction at the last step,
``x - sigma * v`` (as the paper's released code rewards its ``pred_original_sample``), not
the last SDE sample, which still carries that step's noise; with a deterministic last
step to sigma = 0 the two are the same.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from cgrpo.policies.base import Condition, Policy
from cgrpo.sampling.ode_solvers import check_solver, ode_step
from cgrpo.sampling.sde import clean_prediction, compute_dtype, draw_noise, sde_step

#: What the rewards score: the last step's clean prediction or the last sample.
REWARD_IMAGES: tuple[str, ...] = ("clean", "sample")


@dataclass
class Rollout:
    """What a group rollout records (N = number of conditions x group size).

    Attributes:
        latents: (T+1, N, *latent) the trajectory; ``latents[t]`` is the input of step t,
            ``latents[t+1]`` its sampled output; ``latents[-1]`` is the final sample.
        log_probs: (T, N) log-prob of each sampled transition under the sampling policy
            (NaN for the deterministic (ODE) steps, which are not trainable).
        sigmas: (T+1,) the noise levels; step t goes from ``sigmas[t]`` to ``sigmas[t+1]``.
        condition: the N samples' condition (each pair's condition repeated G times).
        group_ids: (N,) which (reference, prompt) pair each sample belongs to.
        sde_steps: the steps sampled with the SDE, which can be trained (true indices,
            ascending; carried explicitly: a NaN in a log-prob must not change them).
        rewarded: (N, *latent) the latents the rewards score: the last step's clean
            prediction ``latents[-2] - sigmas[-2] * v`` (``reward_image="clean"``) or the
            final sample ``latents[-1]`` (``"sample"``).
    """

    latents: torch.Tensor
    log_probs: torch.Tensor
    sigmas: torch.Tensor
    condition: Condition
    group_ids: torch.Tensor
    sde_steps: tuple[int, ...]
    rewarded: torch.Tensor

    @property
    def num_steps(self) -> int:
        return self.log_probs.shape[0]

    @property
    def num_sde_steps(self) -> int:
        return len(self.sde_steps)

    @property
    def final(self) -> torch.Tensor:
        return self.latents[-1]


def initial_noise(
    policy: Policy,
    num_groups: int,
    group_size: int,
    *,
    same_noise: bool,
    generator: torch.Generator | None,
) -> torch.Tensor:
    """(num_groups * group_size, *latent) standard normal noise, shared within a group if asked."""
    shape = policy.latent_shape()
    n = num_groups if same_noise else num_groups * group_size
    noise = draw_noise((n, *shape), torch.float32, generator, device=policy.device)
    return noise.repeat_interleave(group_size, dim=0) if same_noise else noise


@torch.no_grad()
def sample_groups(
    policy: Policy,
    condition: Condition,
    group_size: int,
    *,
    sigmas: torch.Tensor,
    eta: float,
    kind: str = "dance",
    same_noise: bool = True,
    generator: torch.Generator | None = None,
    micro_batch_size: int | None = None,
    ode_tail: int = 0,
    shard: slice | None = None,
    sde_mask: Sequence[bool] | None = None,
    reward_image: str = "clean",
    on_chunk: Callable[[slice, torch.Tensor], None] | None = None,
    ode_solver: str = "euler",
) -> Rollout:
    """Sample ``group_size`` trajectories for each of the B conditions.

    ``sde_mask`` (one bool per step; default: SDE on all but the last ``ode_tail`` steps)
    says which steps are SDE steps (noise, log-prob, trainable); the others are
    deterministic steps of ``ode_solver`` (:mod:`cgrpo.sampling.ode_solvers`; log-prob
    NaN). A second-order solver's history starts afresh in each run of consecutive ODE
    steps: the first ODE step after an SDE step is an Euler step. With ``same_noise`` the
    group's samples are identical up to the first SDE step, so that ODE prefix is computed
    once per group and shared (Flow-GRPO-Fast's branching). ``eta > 0`` is required.

    ``micro_batch_size`` bounds how many samples go through the model at once.
    ``shard``: this process draws only ``samples[shard]`` of the ``B * group_size`` samples
    (data parallelism; a group may straddle processes). The noise of every SDE step is drawn
    for all samples at once from ``generator`` and sliced, so a sample is the same whatever
    the number of processes or the micro-batch size; ``group_ids`` stay global.
    ``reward_image`` (:data:`REWARD_IMAGES`) picks :attr:`Rollout.rewarded`.

    ``on_chunk(rows, rewarded[rows])``: called as each micro-batch's samples are finished
    (the reward scoring overlap, :mod:`cgrpo.train.scoring_overlap`). The micro-batches are
    then sampled one after another through all steps instead of step by step; every step's
    noise is drawn up front, in the same order, so the rollout is the same either way.
    """
    _check(group_size, eta=eta, reward_image=reward_image, batch=condition.batch_size)
    check_solver(ode_solver)
    num_groups = condition.batch_size
    steps = len(sigmas) - 1
    mask = _sde_mask(steps, ode_tail, sde_mask)
    shard = shard or slice(0, num_groups * group_size)
    cond = condition.repeat_interleave(group_size).index(shard)
    x = initial_noise(policy, num_groups, group_size, same_noise=same_noise, generator=generator)
    total = x.shape[0]
    x = x[shard]
    n = x.shape[0]
    if n == 0:
        raise ValueError(f"shard {shard} of {total} samples is empty")
    mb = micro_batch_size or n
    group_ids = torch.arange(num_groups, device=x.device).repeat_interleave(group_size)[shard]
    latents = torch.empty((steps + 1, *x.shape), dtype=x.dtype, device=x.device)
    log_probs = torch.full((steps, n), float("nan"), dtype=torch.float32, device=x.device)
    latents[0] = x
    prefix = mask.index(True) if same_noise else 0
    if prefix:  # the group's shared ODE prefix, once per group of this shard
        groups, inverse = torch.unique(group_ids, return_inverse=True)
        first = torch.searchsorted(group_ids, groups)  # a sample of each group
        # as many groups on every process (equal shards of n samples overlap at most
        # ceil(n / G) + 1 groups; the last is repeated), so that a sharded (FSDP) policy
        # makes the same forward passes everywhere
        pad = -(-n // group_size) + 1 - len(groups)
        groups = torch.cat([groups, groups[-1:].repeat(pad)])
        first = torch.cat([first, first[-1:].repeat(pad)])
        xg = _ode(policy, condition.index(groups), sigmas, x=x[first], mb=mb, steps=prefix,
                  latents=latents, inverse=inverse, solver=ode_solver)  # fmt: skip
        latents[prefix] = xg[inverse]
    clean = latents[-1]  # filled at the last step (a view: no copy unless asked for)
    if reward_image == "clean":
        clean = torch.empty_like(x)

    def noise_of(t: int) -> torch.Tensor | None:  # one draw per step, all processes' samples
        full = (total, *x.shape[1:])
        if not mask[t]:
            return None
        return draw_noise(full, compute_dtype(x), generator, device=x.device)[shard]

    hist = torch.empty_like(x) if ode_solver == "dpm2m" else None  # each row's last x0_hat

    def advance(t: int, sl: slice, noise: torch.Tensor | None) -> None:  # step t of rows sl
        s, s_next = float(sigmas[t]), float(sigmas[t + 1])
        xb, cb = latents[t, sl], cond.index(sl)
        v = policy.velocity(xb, torch.full((xb.shape[0],), s, device=x.device), cb)
        if t == steps - 1 and reward_image == "clean":
            clean[sl] = clean_prediction(xb, v, s)
        if noise is None:  # history only from an ODE step just before (none past an SDE step)
            latents[t + 1, sl] = _solve(policy, xb, v, solver=ode_solver, condition=cb,
                                        sigmas=sigmas, t=t, hist=hist, rows=sl,
                                        fresh=t == 0 or mask[t - 1])  # fmt: skip
            return
        nxt, logp, _, _ = sde_step(xb, v, s, sigma_next=s_next, eta=eta, kind=kind, noise=noise[sl])
        latents[t + 1, sl] = nxt
        log_probs[t, sl] = logp

    chunks = [slice(lo, min(lo + mb, n)) for lo in range(0, n, mb)]
    if on_chunk is None:  # step by step
        for t in range(prefix, steps):
            noise = noise_of(t)
            for sl in chunks:
                advance(t, sl, noise)
    else:  # micro-batch by micro-batch, each handed on when finished
        noises = [noise_of(t) for t in range(prefix, steps)]
        for sl in chunks:
            for t in range(prefix, steps):
                advance(t, sl, noises[t - prefix])
            on_chunk(sl, clean[sl])
    sde_steps = tuple(t for t in range(steps) if mask[t])
    sigmas = sigmas.to(x.device)
    return Rollout(latents, log_probs, sigmas, cond, group_ids, sde_steps, rewarded=clean)


def _check(group_size: int, *, eta: float, reward_image: str, batch: int) -> None:
    """:func:`sample_groups`'s arguments, each bad one a ValueError naming it."""
    if group_size < 1:
        raise ValueError(f"group_size must be >= 1, got {group_size}")
    if reward_image not in REWARD_IMAGES:
        raise ValueError(f"reward_image must be one of {REWARD_IMAGES}, got {reward_image!r}")
    if eta <= 0:
        raise ValueError(
            "GRPO rollouts need eta > 0: with eta = 0 the step is deterministic (Euler)"
        )
    if batch == 0:
        raise ValueError("empty batch: a rollout needs at least one (reference, prompt) pair")


def _sde_mask(steps: int, ode_tail: int, sde_mask: Sequence[bool] | None) -> list[bool]:
    """One bool per step (default: SDE on all but the last ``ode_tail`` steps), checked."""
    if sde_mask is None:
        if not 0 <= ode_tail < steps:
            raise ValueError(f"ode_tail={ode_tail} must be in [0, {steps - 1}] for {steps} steps")
        sde_mask = [t < steps - ode_tail for t in range(steps)]
    mask = [bool(m) for m in sde_mask]
    if len(mask) != steps or not any(mask):
        raise ValueError(f"sde_mask needs {steps} entries with at least one SDE step: {mask}")
    return mask


def _ode(
    policy: Policy,
    condition: Condition,
    sigmas: torch.Tensor,
    *,
    x: torch.Tensor,
    mb: int,
    steps: int,
    latents: torch.Tensor,
    inverse: torch.Tensor,
    solver: str = "euler",
) -> torch.Tensor:
    """The first ``steps`` ODE steps (``solver``) of ``x`` (one latent per group); each
    step's result is recorded for every sample (``latents[t + 1] = x[inverse]``). Returns
    the last."""
    hist = torch.empty_like(x) if solver == "dpm2m" else None
    for t in range(steps):
        s = float(sigmas[t])
        out = torch.empty_like(x)
        for lo in range(0, x.shape[0], mb):
            sl = slice(lo, lo + mb)
            cb = condition.index(sl)
            v = policy.velocity(x[sl], torch.full((len(x[sl]),), s, device=x.device), cb)
            out[sl] = _solve(policy, x[sl], v, solver=solver, condition=cb, sigmas=sigmas,
                             t=t, hist=hist, rows=sl, fresh=t == 0)  # fmt: skip
        x = out
        if t + 1 < steps:
            latents[t + 1] = x[inverse]
    return x


@torch.no_grad()
def sample_ode(
    policy: Policy,
    condition: Condition,
    sigmas: torch.Tensor,
    *,
    noise: torch.Tensor,
    micro_batch_size: int | None = None,
    solver: str = "euler",
) -> torch.Tensor:
    """Deterministic sampling (eta = 0) from given noise with ``solver``
    (:data:`~cgrpo.sampling.ode_solvers.ODE_SOLVERS`; evaluation, ``cgrpo sample``)."""
    check_solver(solver)
    x = noise.to(policy.device)
    n = x.shape[0]
    mb = micro_batch_size or n
    out = torch.empty_like(x)
    hist = torch.empty_like(x) if solver == "dpm2m" else None
    for lo in range(0, n, mb):
        sl = slice(lo, lo + mb)
        xb, cb = x[sl], condition.index(sl)
        for t in range(len(sigmas) - 1):
            s = float(sigmas[t])
            v = policy.velocity(xb, torch.full((xb.shape[0],), s, device=x.device), cb)
            xb = _solve(policy, xb, v, solver=solver, condition=cb, sigmas=sigmas, t=t,
                        hist=hist, rows=sl, fresh=t == 0)  # fmt: skip
        out[sl] = xb
    return out


def _solve(
    policy: Policy,
    x: torch.Tensor,
    v: torch.Tensor,
    *,
    solver: str,
    condition: Condition,
    sigmas: torch.Tensor,
    t: int,
    hist: torch.Tensor | None,
    rows: slice,
    fresh: bool,
) -> torch.Tensor:
    """ODE step ``t`` of ``x`` (rows ``rows`` of the batch; ``v`` its velocity) with
    ``solver``. ``hist[rows]``: dpm2m's data predictions of step ``t - 1``, read unless
    ``fresh`` (the first step of an ODE run) and replaced by this step's."""
    s, s_next = float(sigmas[t]), float(sigmas[t + 1])

    def velocity_at(y: torch.Tensor, sigma: float) -> torch.Tensor:  # heun's second pass
        return policy.velocity(y, torch.full((y.shape[0],), sigma, device=y.device), condition)

    prev = None if fresh or hist is None else hist[rows]
    nxt, x0 = ode_step(
        solver, x, v, sigma=s, sigma_next=s_next, velocity_at=velocity_at, x0_prev=prev,
        sigma_prev=None if prev is None else float(sigmas[t - 1]),
    )  # fmt: skip
    if hist is not None and x0 is not None:
        hist[rows] = x0
    return nxt
