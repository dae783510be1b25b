"""Training objectives (the *objective* family): what loss a rollout's samples train.
``method.objective: {kind: ...}``.

* ``grpo`` (the paper's): the PPO-clipped surrogate on the Gaussian log-probs of the
  recorded SDE transitions (:func:`cgrpo.method.loss.grpo_loss`); its constants are
  ``grpo.clip_range``, ``grpo.adv_clip`` and ``grpo.kl_coef``. Only SDE steps train.
* ``nft`` (DiffusionNFT, arXiv 2509.16117): likelihood-free. Each sample's shaped
  advantage becomes an optimality weight ``r = 0.5 + clip(A, -c, c) / (2c)``; its rewarded
  clean latent ``x0`` (``Rollout.rewarded``) is noised forward, ``x_s = (1 - s) x0 + s eps``,
  and the implicit positive / negative policies built from the current and the *old*
  policy regress ``x0`` (:func:`cgrpo.method.loss.nft_loss`). Any rollout trains, the ODE included.

**Noise levels and TDW (``nft``).** The training noise levels are the sampling schedule's
own sigmas: trained step ``t`` (a random ``grpo.timestep_fraction`` of ``0 .. T-1``) uses
``s = sigmas[t]``, so its position in the sampling schedule is ``t`` itself, and TDW
weights the advantages with ``step_weights(t, T)`` exactly as it weights GRPO's
transition ``t``. The noise ``eps`` of sample ``j`` at step ``t`` is seeded by (the
update's seed, ``t``, ``j``): it does not depend on the process count or micro-batches.

**The old policy (``nft``).** A soft-updated copy of the trained weights: after each
training step ``old <- d old + (1 - d) current`` with ``d = min(uphold, uprate *
max(0, step - flat))`` (DiffusionNFT's schedule; its default ``0, 0.001, 0.5``: the old
policy starts on-policy and lags more as training goes on). ``sample_old`` draws the
rollouts with it, as DiffusionNFT does. A policy holds it through
:class:`~cgrpo.policies.base.HasOldPolicy`: the embedded model as a frozen copy, FLUX as
a second LoRA adapter (``"old"``) on the same transformer.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from cgrpo.config.core import option
from cgrpo.config.lazy import lazy_import
from cgrpo.config.registry import Registry
from cgrpo.method.loss import grpo_loss, kl_penalty, nft_loss, optimality
from cgrpo.sampling.sde import sde_step

torch = lazy_import("torch")

if TYPE_CHECKING:
    from torch import Tensor

    from cgrpo.policies.base import Condition
    from cgrpo.sampling.rollout import Rollout

__all__ = ["OBJECTIVES", "Objective", "GRPOObjective", "NFTObjective", "LossContext"]

#: The objective family: kind name -> class.
OBJECTIVES = Registry("objective")

#: The trained velocity ``v(x, sigma, condition)`` (through DDP when several processes).
Velocity = Callable[["Tensor", "Tensor", "Condition"], "Tensor"]


@dataclass(kw_only=True)
class LossContext:
    """What an objective's loss needs besides the batch (built by the trainer per update)."""

    velocity: Velocity  # the trained velocity (through DDP when several processes)
    policy: Any  # the policy: reference_velocity, old_velocity
    sampler_kind: str
    eta: float
    clip_range: float  # grpo.*
    adv_clip: float
    kl_coef: float
    noise_seed: int  # nft: this update's seed of the forward noise
    offset: int  # global index of this process's first sample


class Objective:
    """Base of the objective family."""

    registry: ClassVar[Registry] = OBJECTIVES
    kind: ClassVar[str]
    #: whether the loss draws forward noise (the trainer then draws a seed per update)
    forward_noise: ClassVar[bool] = False

    def uses_old_policy(self) -> bool:
        return False

    def samples_with_old(self) -> bool:
        return False

    def needs_reference(self, grpo_kl_coef: float) -> bool:
        """Whether the frozen starting policy must be kept (for a KL term)."""
        return grpo_kl_coef > 0

    def trainable_steps(self, roll: Rollout) -> list[int]:
        """The TRUE step indices this objective can train on this rollout."""
        raise NotImplementedError

    def loss(
        self, ctx: LossContext, roll: Rollout, t: int, *, idx: Tensor, adv: Tensor
    ) -> tuple[Tensor, dict[str, float]]:
        """The loss of step ``t`` for local samples ``idx`` with shaped advantages ``adv``."""
        raise NotImplementedError

    def decay(self, step: int) -> float:
        """The old policy's soft-update decay after training step ``step`` (1-based)."""
        return 0.0

    def prepare(self, shaped: Tensor, group_ids: Tensor) -> Tensor:
        """The shaped advantages of a whole step as the loss takes them (default: as is)."""
        return shaped


@OBJECTIVES.register("grpo")
@dataclass(frozen=True)
class GRPOObjective(Objective):
    """PPO-clipped GRPO on recorded SDE transitions (constants in the ``grpo`` section)."""

    def trainable_steps(self, roll: Rollout) -> list[int]:
        return list(roll.sde_steps)

    def loss(
        self, ctx: LossContext, roll: Rollout, t: int, *, idx: Tensor, adv: Tensor
    ) -> tuple[Tensor, dict[str, float]]:
        s, s_next = float(roll.sigmas[t]), float(roll.sigmas[t + 1])
        x = roll.latents[t, idx]
        cond = roll.condition.index(idx)
        sig = torch.full((len(idx),), s, device=x.device)
        v = ctx.velocity(x, sig, cond)
        prev = roll.latents[t + 1, idx]
        kind, eta = ctx.sampler_kind, ctx.eta
        _, logp, mean, std = sde_step(
            x, v, s, sigma_next=s_next, eta=eta, prev_sample=prev, kind=kind
        )
        loss, stats = grpo_loss(
            logp, roll.log_probs[t, idx], adv, clip_range=ctx.clip_range, adv_clip=ctx.adv_clip
        )
        if ctx.kl_coef > 0:
            ref_v = ctx.policy.reference_velocity(x, sig, cond)
            _, _, ref_mean, _ = sde_step(
                x, ref_v, s, sigma_next=s_next, eta=eta, prev_sample=prev, kind=kind
            )
            kl = kl_penalty(mean, ref_mean.detach(), std)
            loss = loss + ctx.kl_coef * kl
            stats["kl"] = kl.item()
        stats["loss"] = loss.item()
        return loss, stats


def forward_noise(shape: tuple[int, ...], seed: int, t: int, *, samples: Tensor) -> Tensor:
    """``eps`` for each global sample index in ``samples`` at step ``t`` (CPU, float32):
    sample ``j``'s noise is drawn from its own generator seeded by ``(seed, t, j)``."""
    out = torch.empty((len(samples), *shape))
    g = torch.Generator()
    for row, j in enumerate(samples.tolist()):
        g.manual_seed((seed * 1_000_003 + t * 10_007 + j) % (2**63 - 1))
        out[row] = torch.randn(shape, generator=g)
    return out


@OBJECTIVES.register("nft")
@dataclass(frozen=True)
class NFTObjective(Objective):
    """DiffusionNFT: forward-process, negative-aware fine-tuning with a soft-updated old
    policy (the defaults are DiffusionNFT's released SD3 setting)."""

    forward_noise: ClassVar[bool] = True

    beta: float = option(1.0, "strength of the implicit positive/negative policies (> 0)")
    adv_clip: float = option(5.0, "c of the optimality weight r = 0.5 + clip(A, -c, c) / (2c)")
    adaptive: bool = option(True, "adaptive per-sample normalisation of the x0 regression")
    kl_coef: float = option(
        1e-4, "weight of mean ||v - v_ref||^2 to the starting policy (0: off, no reference kept)"
    )
    decay_flat: int = option(0, "old-policy decay: 0 up to this training step", unit="steps")
    decay_rate: float = option(0.001, "old-policy decay: rise per training step after flat")
    decay_max: float = option(0.5, "old-policy decay: its ceiling (0: the old policy is on-policy)")
    sample_old: bool = option(True, "draw the rollouts with the old policy (DiffusionNFT's)")
    center: bool = option(
        False,
        "subtract each group's mean of the shaped advantage before r: SARS's bonus is not "
        "zero-mean, and a non-zero mean of 2r - 1 is a net pull toward (or push away from) "
        "the model's own samples",
    )

    def __post_init__(self) -> None:
        if not self.beta > 0 or not self.adv_clip > 0:
            raise ValueError("method.objective: nft needs beta > 0 and adv_clip > 0")
        if not 0 <= self.decay_max < 1 or self.decay_rate < 0 or self.kl_coef < 0:
            raise ValueError(
                "method.objective: nft needs 0 <= decay_max < 1, decay_rate >= 0, kl_coef >= 0"
            )

    def uses_old_policy(self) -> bool:
        return True

    def samples_with_old(self) -> bool:
        return self.sample_old

    def needs_reference(self, grpo_kl_coef: float) -> bool:
        return self.kl_coef > 0

    def trainable_steps(self, roll: Rollout) -> list[int]:
        return list(range(roll.num_steps))

    def decay(self, step: int) -> float:
        return min(self.decay_max, self.decay_rate * max(0, step - self.decay_flat))

    def prepare(self, shaped: Tensor, group_ids: Tensor) -> Tensor:
        if not self.center:
            return shaped
        _, inverse, counts = torch.unique(group_ids, return_inverse=True, return_counts=True)
        sums = torch.zeros(len(counts), dtype=shaped.dtype, device=shaped.device)
        sums.index_add_(0, inverse, shaped)
        return shaped - (sums / counts.to(shaped.dtype))[inverse]

    def loss(
        self, ctx: LossContext, roll: Rollout, t: int, *, idx: Tensor, adv: Tensor
    ) -> tuple[Tensor, dict[str, float]]:
        x0 = roll.rewarded[idx]
        s = float(roll.sigmas[t])
        eps = forward_noise(tuple(x0.shape[1:]), ctx.noise_seed, t, samples=idx.cpu() + ctx.offset)
        eps = eps.to(x0.device, x0.dtype)
        x_s = (1.0 - s) * x0 + s * eps
        cond = roll.condition.index(idx)
        sig = torch.full((len(idx),), s, device=x0.device)
        with torch.no_grad():
            v_old = ctx.policy.old_velocity(x_s, sig, cond)
        v = ctx.velocity(x_s, sig, cond)
        r = optimality(adv, self.adv_clip)
        loss, _ = nft_loss(
            v, v_old, x_s, x0=x0, sigma=s, r=r, beta=self.beta, adaptive=self.adaptive
        )
        stats = {
            "nft_loss": loss.item(),
            "old_deviation": float((v.detach() - v_old).pow(2).mean()),
        }
        if self.kl_coef > 0:
            with torch.no_grad():
                ref_v = ctx.policy.reference_velocity(x_s, sig, cond)
            kl = (v - ref_v).pow(2).reshape(len(idx), -1).mean(1).mean()
            loss = loss + self.kl_coef * kl
            stats["kl"] = kl.item()
        stats["loss"] = loss.item()
        return loss, stats
