"""The policy losses as pure tensor functions: GRPO's PPO-style clipped surrogate, the
optional KL penalty to a frozen reference policy, and DiffusionNFT's forward-process loss
(:func:`optimality`, :func:`nft_loss`). The strategies that call them are in
:mod:`cgrpo.method.objective`."""

from __future__ import annotations

from typing import TYPE_CHECKING

from cgrpo.config.lazy import lazy_import

torch = lazy_import("torch")

if TYPE_CHECKING:
    from torch import Tensor


__all__ = ["grpo_loss", "kl_penalty", "nft_loss", "optimality"]


def grpo_loss(
    log_prob: Tensor,
    old_log_prob: Tensor,
    advantages: Tensor,
    *,
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
    (not the sum) matches how :func:`cgrpo.sampling.sde.sde_step` averages ``log_prob`` over
    elements, so the KL coefficient lives on the same scale as the policy loss independent
    of latent size. Optional: the paper trains without it (coefficient 0). ``ref_mean`` should come
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


def optimality(advantages: Tensor, adv_clip: float) -> Tensor:
    """DiffusionNFT's optimality weight of each sample, in ``[0, 1]``::

        r = 0.5 + clamp(A, -c, c) / (2 c)        (c = adv_clip > 0)

    ``r = 1``: the sample is as good as the clip allows (train the positive policy on
    it); ``r = 0``: as bad (train the negative policy on it); ``r = 0.5``: average."""
    if not adv_clip > 0:
        raise ValueError(f"adv_clip must be > 0, got {adv_clip!r}")
    return 0.5 + advantages.clamp(-adv_clip, adv_clip) / (2.0 * adv_clip)


def nft_loss(
    v: Tensor,
    v_old: Tensor,
    x_s: Tensor,
    *,
    x0: Tensor,
    sigma: Tensor | float,
    r: Tensor,
    beta: float = 1.0,
    adaptive: bool = True,
) -> tuple[Tensor, Tensor]:
    """DiffusionNFT's negative-aware fine-tuning loss on forward-noised clean samples.

    With ``x_s = (1 - s) x0 + s eps`` (the flow-matching forward process at noise level
    ``s``), ``v`` the current velocity (with grad) and ``v_old`` the old policy's (a
    constant)::

        v+      = (1 - beta) v_old + beta v          the implicit positive policy
        v-      = (1 + beta) v_old - beta v          the implicit negative policy
        x0(u)   = x_s - s u                          the clean sample a velocity predicts
        d(u)    = mean_elements |x0(u) - x0|         (detached; adaptive normalisation)
        L+      = mean_elements (x0(v+) - x0)^2 / d(v+)
        L-      = mean_elements (x0(v-) - x0)^2 / d(v-)
        loss_i  = (r_i L+_i + (1 - r_i) L-_i) / beta

    per sample ``i`` (``d`` is clamped to >= 1e-5; ``adaptive=False`` uses ``d = 1``). With
    ``r = 1`` and ``v = v_old`` the gradient in ``v`` is ``-2 s (x0 - x0(v)) / d``: the plain
    flow-matching (x0-regression) gradient scaled by ``s / d > 0``.

    Args:
        v, v_old, x_s, x0: ``[B, ...]``, one shape.
        sigma: the noise level ``s`` of each sample, ``[B]`` or a float.
        r: ``[B]`` optimality weights in ``[0, 1]`` (:func:`optimality`).
        beta: the guidance strength ``beta > 0`` of the implicit policies.

    Returns:
        ``(loss, per_sample)``: the batch mean and the ``[B]`` values of ``loss_i``.
    """
    if not (v.shape == v_old.shape == x_s.shape == x0.shape):
        raise ValueError(
            "v, v_old, x_s and x0 must have one shape, got "
            f"{[tuple(t.shape) for t in (v, v_old, x_s, x0)]}"
        )
    if v.ndim < 2 or v.shape[0] == 0:
        raise ValueError(f"nft_loss needs a non-empty batch [B, ...], got {tuple(v.shape)}")
    if r.shape != v.shape[:1]:
        raise ValueError(f"r must be [B] = {tuple(v.shape[:1])}, got {tuple(r.shape)}")
    if not beta > 0:
        raise ValueError(f"beta must be > 0, got {beta!r}")
    b = v.shape[0]
    s = torch.as_tensor(sigma, dtype=v.dtype, device=v.device).reshape(-1)
    s = s.expand(b).reshape(b, *([1] * (v.ndim - 1)))
    v_old = v_old.detach()
    x0 = x0.detach()
    dims = tuple(range(1, v.ndim))

    def term(u: Tensor) -> Tensor:
        err = x_s - s * u - x0
        if adaptive:
            with torch.no_grad():
                d = err.double().abs().mean(dim=dims, keepdim=True).clamp(min=1e-5)
            return (err**2 / d.to(err.dtype)).mean(dim=dims)
        return (err**2).mean(dim=dims)

    positive = term((1.0 - beta) * v_old + beta * v)
    negative = term((1.0 + beta) * v_old - beta * v)
    r = r.detach().to(v.dtype)
    per_sample = (r * positive + (1.0 - r) * negative) / beta
    return per_sample.mean(), per_sample
