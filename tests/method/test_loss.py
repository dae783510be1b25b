"""Tests for cgrpo.method.loss: clipped GRPO loss and KL penalty."""

from __future__ import annotations

import math

import pytest
import torch

from cgrpo.method.loss import grpo_loss, kl_penalty


def _grad(log_prob: torch.Tensor, old: torch.Tensor, adv: torch.Tensor, **kw) -> torch.Tensor:
    lp = log_prob.clone().requires_grad_(True)
    loss, _ = grpo_loss(lp, old, adv, **kw)
    loss.backward()
    return lp.grad


def test_gradient_sign_follows_advantage() -> None:
    old = torch.tensor([-1.0, -1.0])
    lp = old.clone()  # ratio = 1, inside the trust region
    g = _grad(lp, old, torch.tensor([2.0, -3.0]))
    assert g[0] < 0, "positive advantage: descent must raise log_prob"
    assert g[1] > 0, "negative advantage: descent must lower log_prob"
    # d/dlp of -A * exp(lp - old) / B at ratio 1 is -A / B
    torch.testing.assert_close(g, torch.tensor([-1.0, 1.5]))


def test_clipping_stops_gradient_outside_trust_region() -> None:
    clip = 0.1
    old = torch.zeros(4)
    # ratios: 1.3 (A>0, above: clipped), 1.05 (A>0, inside), 0.7 (A<0, below: clipped),
    # 0.7 (A>0, below: not clipped, still pushed up)
    lp = torch.log(torch.tensor([1.3, 1.05, 0.7, 0.7]))
    adv = torch.tensor([1.0, 1.0, -1.0, 1.0])
    g = _grad(lp, old, adv, clip_range=clip)
    assert g[0] == 0
    assert g[1] != 0 and g[1] < 0
    assert g[2] == 0
    assert g[3] < 0
    # ratio above 1+clip with NEGATIVE advantage is not clipped (pessimistic bound)
    g2 = _grad(
        torch.log(torch.tensor([1.3])), torch.zeros(1), torch.tensor([-1.0]), clip_range=clip
    )
    assert g2[0] > 0


def test_adv_clip_clamps_advantages() -> None:
    old = torch.zeros(2)
    lp = torch.zeros(2)
    g = _grad(lp, old, torch.tensor([100.0, -100.0]), adv_clip=5.0)
    torch.testing.assert_close(g, torch.tensor([-2.5, 2.5]))  # -A/B with A clamped to +-5
    loss, _ = grpo_loss(lp, old, torch.tensor([100.0, 7.0]), adv_clip=5.0)
    assert loss.item() == pytest.approx(-5.0)


def test_loss_and_stats_hand_example() -> None:
    clip = 0.2
    ratios = [1.5, 1.1, 0.5, 1.0]
    adv = torch.tensor([1.0, -2.0, 1.0, 3.0])
    lp = torch.log(torch.tensor(ratios))
    old = torch.zeros(4)
    loss, stats = grpo_loss(lp, old, adv, clip_range=clip)
    # per element: max(-A r, -A clip(r)):
    # r=1.5,A=1: max(-1.5, -1.2) = -1.2 ; r=1.1,A=-2: max(2.2, 2.2) = 2.2
    # r=0.5,A=1: max(-0.5, -0.8) = -0.5 ; r=1.0,A=3: -3
    expected = (-1.2 + 2.2 - 0.5 - 3.0) / 4
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    assert set(stats) == {"clip_fraction", "approx_kl", "ratio_mean"}
    assert all(isinstance(v, float) for v in stats.values())
    assert stats["clip_fraction"] == pytest.approx(0.5)  # |r-1| > 0.2 for 1.5 and 0.5
    kl = 0.5 * sum(math.log(r) ** 2 for r in ratios) / 4
    assert stats["approx_kl"] == pytest.approx(kl, rel=1e-6)
    assert stats["ratio_mean"] == pytest.approx(sum(ratios) / 4, rel=1e-6)


def test_old_log_prob_and_advantages_are_constants() -> None:
    lp = torch.tensor([-1.0, -2.0], requires_grad=True)
    old = torch.tensor([-1.1, -1.9], requires_grad=True)
    adv = torch.tensor([1.0, -1.0], requires_grad=True)
    loss, _ = grpo_loss(lp, old, adv, clip_range=0.5)
    loss.backward()
    assert old.grad is None and adv.grad is None
    assert lp.grad is not None


def test_shape_mismatch_raises() -> None:
    with pytest.raises(ValueError, match="same shape"):
        grpo_loss(torch.zeros(3), torch.zeros(3, 1), torch.zeros(3))
    with pytest.raises(ValueError, match="empty"):
        grpo_loss(torch.zeros(0), torch.zeros(0), torch.zeros(0))


def test_kl_penalty_zero_positive_and_hand_formula() -> None:
    g = torch.Generator().manual_seed(0)
    mean = torch.randn(3, 2, 4, 4, generator=g)
    assert kl_penalty(mean, mean.clone(), 0.3).item() == 0.0
    ref = mean + 0.1 * torch.randn(3, 2, 4, 4, generator=g)
    std = torch.tensor([0.3, 0.5, 0.2]).reshape(3, 1, 1, 1)
    kl = kl_penalty(mean, ref, std)
    assert kl.ndim == 0 and kl.item() > 0
    hand = 0.0
    for b in range(3):
        s = float(std[b])
        hand += float(((mean[b] - ref[b]) ** 2).sum()) / (2 * s**2) / mean[b].numel()
    assert kl.item() == pytest.approx(hand / 3, rel=1e-5)
    # equals the Gaussian KL averaged over elements
    p = torch.distributions.Normal(mean, std.expand_as(mean))
    q = torch.distributions.Normal(ref, std.expand_as(ref))
    torch.testing.assert_close(kl, torch.distributions.kl_divergence(p, q).mean())


def test_kl_penalty_gradient_and_validation() -> None:
    mean = torch.zeros(2, 3, requires_grad=True)
    ref = torch.ones(2, 3)
    kl_penalty(mean, ref, 1.0).backward()
    assert mean.grad is not None and bool((mean.grad < 0).all())  # pulls mean toward ref
    with pytest.raises(ValueError, match="std > 0"):
        kl_penalty(mean, ref, 0.0)
    with pytest.raises(ValueError, match="shape"):
        kl_penalty(mean, ref[:, :2], 1.0)
