"""The GRPO policy loss (PPO-style clipped surrogate) and the optional KL penalty to a frozen
reference policy."""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["grpo_loss", "kl_penalty"]


def grpo_loss(
    log_prob: Tensor,
    old_log_prob: Tensor,
    advantages: Tensor,
    clip_range: float = 1e-4,
    adv_clip: float = 5.0,
) -> tuple[Tensor, dict[str, float]]:
    """Clipped GRPO surrogate for one batch of transitions::

        A     = clamp(advantages, -adv_clip, adv_clip)
        ratio = exp(log_prob - old_log_prob)
        loss  = mean( max( -A * ratio, -A * clamp(ratio, 1 - clip_range, 1 + clip_range) ) )

    Minimising it raises ``log_prob`` where ``A > 0`` and lowers it where ``A < 0``, with zero
    gradient once the ratio has left the trust region in the direction the advantage pushes
    it. ``old_log_prob`` and ``advantages`` are treated as constants (detached).

    The defaults (``clip_range = 1e-4``, ``adv_clip = 5``) are DanceGRPO's.

    Args:
        log_prob: ``[B]`` log-probs of the transitions under the current policy (with grad).
        old_log_prob: ``[B]`` log-probs recorded at rollout time.
        advantages: ``[B]`` (shaped, weighted) advantages.
        clip_range: PPO ratio clip epsilon (>= 0).
        adv_clip: advantages are clamped to ``[-adv_clip, adv_clip]`` (> 0).

    Returns:
        ``(loss, stats)``: scalar loss; ``stats`` (python floats, computed under ``no_grad``):

        * ``clip_fraction``: share of elements with ``|ratio - 1| > clip_range``;
        * ``approx_kl``: ``0.5 * mean((log_prob - old_log_prob) ** 2)``;
        * ``ratio_mean``: ``mean(ratio)``.

    Raises:
        ValueError: mismatched shapes (no silent broadcasting of ``[B]`` against ``[B, 1]``),
            empty input, or invalid clip values.
    """
    if not (log_prob.shape == old_log_prob.shape == advantages.shape):
        raise ValueError(
            "log_prob, old_log_prob and advantages must have the same shape, got "
            f"{tuple(log_prob.shape)}, {tuple(old_log_prob.shape)}, {tuple(advantages.shape)}"
        )
    if log_prob.numel() == 0:
        raise ValueError("grpo_loss got an empty batch")
    if not clip_range >= 0:
        raise ValueError(f"clip_range must be >= 0, got {clip_range!r}")
    if not adv_clip > 0:
        raise ValueError(f"adv_clip must be > 0, got {adv_clip!r}")

    adv = advantages.detach().clamp(-adv_clip, adv_clip)
    log_ratio = log_prob - old_log_prob.detach()
    ratio = torch.exp(log_ratio)
    unclipped = -adv * ratio
    clipped = -adv * torch.clamp(ratio, 1.0 - clip_range, 1.0 + clip_range)
    loss = torch.maximum(unclipped, clipped).mean()

    with torch.no_grad():
        stats = {
            "clip_fraction": float(((ratio - 1.0).abs() > clip_range).float().mean()),
            "approx_kl": float(0.5 * (log_ratio**2).mean()),
            "ratio_mean": float(ratio.mean()),
        }
    return loss, stats


def kl_penalty(mean: Tensor, ref_mean: Tensor, std: Tensor | float) -> Tensor:
    """KL between the policy's and the reference policy's Gaussian transitions that share the
    same ``std`` (same sampler, same step), per element::

        KL(N(mean, std^2) || N(ref_mean, std^2)) = (mean - ref_mean)^2 / (2 std^2)

    averaged over all non-batch dims and then over the batch -> scalar. The mean over elements
    (not the sum) matches how :func:`cgrpo.sde.sde_step` averages ``log_prob`` over elements,
    so the KL coefficient lives on the same scale as the policy loss independent of latent
    size. Optional: the paper trains without it (coefficient 0). ``ref_mean`` should come
    from the frozen reference model (computed under ``no_grad``).

    Args:
        mean: ``[B, ...]`` policy transition means (from ``sde_step``).
        ref_mean: same shape, reference transition means.
        std: the step's std, broadcastable to ``mean`` (must be > 0).
    """
    if mean.shape != ref_mean.shape:
        raise ValueError(
            f"mean shape {tuple(mean.shape)} != ref_mean shape {tuple(ref_mean.shape)}"
        )
    if mean.ndim < 1 or mean.shape[0] == 0:
        raise ValueError(f"kl_penalty needs a non-empty batch, got shape {tuple(mean.shape)}")
    dtype = torch.float64 if mean.dtype == torch.float64 else torch.float32
    s = torch.as_tensor(std, dtype=dtype, device=mean.device)
    if not bool((s > 0).all()):
        raise ValueError("kl_penalty needs std > 0 everywhere (eta = 0 has no Gaussian to compare)")
    if torch.broadcast_shapes(s.shape, mean.shape) != mean.shape:
        raise ValueError(f"std shape {tuple(s.shape)} does not broadcast to {tuple(mean.shape)}")
    kl = (mean.to(dtype) - ref_mean.to(dtype)) ** 2 / (2.0 * s**2)
    return kl.reshape(mean.shape[0], -1).mean(dim=1).mean()
