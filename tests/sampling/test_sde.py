"""Tests for cgrpo.sampling.sde: schedule, Euler step, SDE step, its log-prob and its marginals."""

from __future__ import annotations

import math

import pytest
import torch

from cgrpo.sampling.sde import SDE_KINDS, euler_step, sde_step, sigma_schedule

# ---------------------------------------------------------------------------------------------
# sigma_schedule


@pytest.mark.parametrize("num_steps", [1, 2, 25, 50])
@pytest.mark.parametrize("shift", [1.0, 3.0, 0.5])
def test_sigma_schedule_endpoints_length_monotone(num_steps: int, shift: float) -> None:
    s = sigma_schedule(num_steps, shift)
    assert s.dtype == torch.float32
    assert s.shape == (num_steps + 1,)
    assert s[0].item() == 1.0
    assert s[-1].item() == 0.0
    assert bool((s[1:] < s[:-1]).all()), "sigmas must be strictly decreasing"


def test_sigma_schedule_shift_formula_at_one_point() -> None:
    # 10 steps: unshifted s_4 = 0.6; shift 3 -> 3 * 0.6 / (1 + 2 * 0.6) = 1.8 / 2.2
    s = sigma_schedule(10, shift=3.0)
    assert s[4].item() == pytest.approx(1.8 / 2.2, abs=1e-6)
    # shift = 1 is the plain linspace
    torch.testing.assert_close(sigma_schedule(10, shift=1.0), torch.linspace(1, 0, 11))
    # shift > 1 spends more steps at high noise
    assert bool((sigma_schedule(10, 3.0)[1:-1] > sigma_schedule(10, 1.0)[1:-1]).all())


@pytest.mark.parametrize("bad", [dict(num_steps=0), dict(num_steps=5, shift=0.0)])
def test_sigma_schedule_rejects_bad_args(bad: dict) -> None:
    with pytest.raises(ValueError):
        sigma_schedule(**bad)


# ---------------------------------------------------------------------------------------------
# single-step algebra


def _hand_mean_std(x, v, sigma, sigma_next, eta, kind):
    """Independent reference: Flow-GRPO's published closed form of the same step,
    mean = x * (1 + g^2 / (2 sigma) * dt) + v * (1 + g^2 (1 - sigma) / (2 sigma)) * dt."""
    if kind == "dance":
        g = eta
    else:
        denom = sigma_next if sigma == 1.0 else sigma
        g = eta * math.sqrt(sigma / (1.0 - denom))
    dt = sigma_next - sigma
    mean = x * (1 + g**2 / (2 * sigma) * dt) + v * (1 + g**2 * (1 - sigma) / (2 * sigma)) * dt
    std = g * math.sqrt(sigma - sigma_next)
    return mean, std


@pytest.mark.parametrize("kind", SDE_KINDS)
@pytest.mark.parametrize("sigma,sigma_next", [(1.0, 0.9), (0.7, 0.55), (0.2, 0.0)])
def test_sde_step_mean_std_and_log_prob_match_independent_gaussian(kind, sigma, sigma_next):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(4, 3, 5, 5, generator=g, dtype=torch.float64)
    v = torch.randn(4, 3, 5, 5, generator=g, dtype=torch.float64)
    eta = 0.7
    prev, log_prob, mean, std = sde_step(
        x, v, sigma, sigma_next=sigma_next, eta=eta, generator=g, kind=kind
    )

    ref_mean, ref_std = _hand_mean_std(x, v, sigma, sigma_next, eta, kind)
    torch.testing.assert_close(mean, ref_mean)
    assert float(std) == pytest.approx(ref_std, rel=1e-12)
    assert ref_std > 0  # also at sigma_next = 0 for both kinds

    normal = torch.distributions.Normal(ref_mean, torch.full_like(ref_mean, ref_std))
    ref_lp = normal.log_prob(prev).mean(dim=(1, 2, 3))
    assert log_prob.shape == (4,)
    torch.testing.assert_close(log_prob, ref_lp)

    # by hand with math, for one element's contribution in batch item 0
    z = ((prev[0] - ref_mean[0]) / ref_std) ** 2
    hand = (-0.5 * z - math.log(ref_std) - 0.5 * math.log(2 * math.pi)).mean()
    assert log_prob[0].item() == pytest.approx(hand.item(), rel=1e-10)


def test_flow_kind_at_sigma_one_uses_sigma_next_in_denominator() -> None:
    x = torch.randn(2, 8)
    v = torch.randn(2, 8)
    eta, sn = 0.7, 0.95
    _, lp, _, std = sde_step(x, v, 1.0, sigma_next=sn, eta=eta, kind="flow")
    # g = eta * sqrt(1 / (1 - sn)), std = g * sqrt(1 - sn) = eta
    assert float(std) == pytest.approx(eta, rel=1e-6)
    assert torch.isfinite(lp).all()


def test_eta_zero_is_euler_and_has_no_log_prob() -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, 4, 4, generator=g)
    v = torch.randn(3, 4, 4, generator=g)
    for kind in SDE_KINDS:
        prev, lp, mean, std = sde_step(x, v, 0.6, sigma_next=0.4, eta=0.0, kind=kind)
        torch.testing.assert_close(prev, x + v * (0.4 - 0.6))
        torch.testing.assert_close(prev, euler_step(x, v, 0.6, sigma_next=0.4))
        assert lp is None
        assert float(std.abs().max()) == 0.0
    with pytest.raises(ValueError, match="log-prob is undefined"):
        sde_step(x, v, 0.6, sigma_next=0.4, eta=0.0, prev_sample=x)


def test_given_prev_sample_is_scored_deterministically() -> None:
    g = torch.Generator().manual_seed(3)
    x = torch.randn(5, 2, 6, generator=g)
    v = torch.randn(5, 2, 6, generator=g)
    for kind in SDE_KINDS:
        prev, lp, mean, _ = sde_step(x, v, 0.8, sigma_next=0.7, eta=0.5, generator=g, kind=kind)
        prev2, lp2, mean2, _ = sde_step(
            x, v, 0.8, sigma_next=0.7, eta=0.5, prev_sample=prev, kind=kind
        )
        prev3, lp3, _, _ = sde_step(x, v, 0.8, sigma_next=0.7, eta=0.5, prev_sample=prev, kind=kind)
        assert prev2 is prev
        torch.testing.assert_close(lp2, lp, rtol=0, atol=0)
        torch.testing.assert_close(lp3, lp2, rtol=0, atol=0)
        torch.testing.assert_close(mean2, mean)
        # a different sample gets a different score: scoring is not a constant
        _, lp_other, _, _ = sde_step(
            x, v, 0.8, sigma_next=0.7, eta=0.5, prev_sample=prev + 0.3, kind=kind
        )
        assert not torch.allclose(lp_other, lp)


def test_log_prob_gradient_flows_through_mean_not_through_the_sample() -> None:
    g = torch.Generator().manual_seed(5)
    x = torch.randn(3, 8, generator=g)
    v = torch.randn(3, 8, generator=g, requires_grad=True)
    prev, lp, _, _ = sde_step(x, v, 0.6, sigma_next=0.5, eta=0.8, generator=g)
    assert not prev.requires_grad
    (grad_sampled,) = torch.autograd.grad(lp.sum(), v)
    _, lp2, _, _ = sde_step(x, v, 0.6, sigma_next=0.5, eta=0.8, prev_sample=prev)
    (grad_scored,) = torch.autograd.grad(lp2.sum(), v)
    assert grad_sampled.abs().max() > 0
    torch.testing.assert_close(grad_sampled, grad_scored)


def test_sampling_is_reproducible_with_generator() -> None:
    x = torch.randn(2, 16)
    v = torch.randn(2, 16)
    a = sde_step(x, v, 0.5, sigma_next=0.4, eta=0.3, generator=torch.Generator().manual_seed(7))[0]
    b = sde_step(x, v, 0.5, sigma_next=0.4, eta=0.3, generator=torch.Generator().manual_seed(7))[0]
    c = sde_step(x, v, 0.5, sigma_next=0.4, eta=0.3, generator=torch.Generator().manual_seed(8))[0]
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert not torch.equal(a, c)


@pytest.mark.parametrize("kind", SDE_KINDS)
def test_per_sample_tensor_sigmas_match_scalar_calls(kind: str) -> None:
    g = torch.Generator().manual_seed(2)
    x = torch.randn(3, 2, 4, 4, generator=g)
    v = torch.randn(3, 2, 4, 4, generator=g)
    prev = torch.randn(3, 2, 4, 4, generator=g)
    sig = torch.tensor([1.0, 0.6, 0.3])
    sig_next = torch.tensor([0.9, 0.5, 0.0])
    _, lp, mean, std = sde_step(
        x, v, sig, sigma_next=sig_next, eta=0.6, prev_sample=prev, kind=kind
    )
    assert std.shape == (3, 1, 1, 1)
    for i in range(3):
        _, lp_i, mean_i, _ = sde_step(
            x[i : i + 1],
            v[i : i + 1],
            float(sig[i]),
            sigma_next=float(sig_next[i]),
            eta=0.6,
            prev_sample=prev[i : i + 1],
            kind=kind,
        )
        torch.testing.assert_close(lp[i : i + 1], lp_i)
        torch.testing.assert_close(mean[i : i + 1], mean_i)
    # euler_step accepts [B] sigmas too
    torch.testing.assert_close(
        euler_step(x, v, sig, sigma_next=sig_next), x + v * (sig_next - sig).reshape(3, 1, 1, 1)
    )


def test_low_precision_inputs_upcast_log_prob() -> None:
    g = torch.Generator().manual_seed(4)
    x32 = torch.randn(2, 4, 8, 8, generator=g)
    v32 = torch.randn(2, 4, 8, 8, generator=g)
    x, v = x32.bfloat16(), v32.bfloat16()
    prev, lp, mean, _ = sde_step(x, v, 0.5, sigma_next=0.45, eta=0.7, generator=g)
    assert prev.dtype == torch.bfloat16
    assert lp.dtype == torch.float32
    assert mean.dtype == torch.float32
    assert torch.isfinite(lp).all()
    # re-scoring the returned (bf16) sample reproduces the recorded log-prob exactly
    _, lp2, _, _ = sde_step(x, v, 0.5, sigma_next=0.45, eta=0.7, prev_sample=prev)
    torch.testing.assert_close(lp2, lp, rtol=0, atol=0)
    # and equals the float32 density of the bf16 values under the float32 Gaussian
    ref = torch.distributions.Normal(mean, 0.7 * math.sqrt(0.05)).log_prob(prev.float())
    torch.testing.assert_close(lp, ref.mean(dim=(1, 2, 3)))


def test_sde_step_validation() -> None:
    x = torch.randn(2, 3)
    v = torch.randn(2, 3)
    with pytest.raises(ValueError, match="dance"):
        sde_step(x, v, 0.5, sigma_next=0.4, eta=0.3, kind="ddim")
    with pytest.raises(ValueError, match="eta"):
        sde_step(x, v, 0.5, sigma_next=0.4, eta=-0.1)
    with pytest.raises(ValueError, match="sigma > sigma_next"):
        sde_step(x, v, 0.4, sigma_next=0.5, eta=0.3)
    with pytest.raises(ValueError, match="shape"):
        sde_step(x, v[:, :2], 0.5, sigma_next=0.4, eta=0.3)


# ---------------------------------------------------------------------------------------------
# marginals: integrate from N(0, I) at sigma = 1 to sigma = 0 for a Gaussian target whose
# exact flow velocity is known, and compare the final mean / covariance with the target.

MU = torch.tensor([1.0, -1.5])
S_DIAG = torch.tensor([0.25, 1.0])  # target covariance diag(0.5^2, 1^2)
N_SAMPLES = 20_000
N_STEPS = 100


def _exact_velocity(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """v(x, sigma) = E[eps - x0 | x_sigma = x] for x0 ~ N(MU, diag(S)), eps ~ N(0, I):
    C = (1-sigma)^2 S + sigma^2 I, E[eps|x] = sigma C^-1 (x - (1-sigma) MU),
    E[x0|x] = MU + (1-sigma) S C^-1 (x - (1-sigma) MU)."""
    c = (1 - sigma) ** 2 * S_DIAG + sigma**2
    d = (x - (1 - sigma) * MU) / c
    return sigma * d - (MU + (1 - sigma) * S_DIAG * d)


def _sample(kind: str, eta: float, shift: float, v_scale: float = 1.0, seed: int = 0):
    # These tensors are tiny: one intra-op thread is ~50x faster than two on a busy 2-core box.
    n_threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        g = torch.Generator().manual_seed(seed)
        x = torch.randn(N_SAMPLES, 2, generator=g)
        sig = sigma_schedule(N_STEPS, shift).tolist()
        for i in range(N_STEPS):
            v = v_scale * _exact_velocity(x, sig[i])
            x, lp, _, _ = sde_step(
                x, v, sig[i], sigma_next=sig[i + 1], eta=eta, generator=g, kind=kind
            )
            assert (lp is None) == (eta == 0.0)
        return x.mean(0), torch.cov(x.T, correction=0)
    finally:
        torch.set_num_threads(n_threads)


# Tolerances: the sampling error of the mean is ~ 1/sqrt(20k) ~ 0.007 and of a variance
# ~ var * 0.01; the Euler(-Maruyama) discretisation error at 100 steps plus the final
# "dance" noise (variance eta^2 * sigma_last) measured <= 0.01 in the mean and <= 3% in the
# variances. Wrong samplers tried offline (no 0.5 on the score term, flipped score sign,
# std without sqrt, velocity * 0.9) are off by >= 0.1 in a mean or >= 20% in a variance.
MEAN_ATOL = 0.05
VAR_RTOL = 0.08
COV_ATOL = 0.03


def _assert_matches_target(mean: torch.Tensor, cov: torch.Tensor) -> None:
    torch.testing.assert_close(mean, MU, atol=MEAN_ATOL, rtol=0)
    torch.testing.assert_close(torch.diagonal(cov), S_DIAG, atol=0, rtol=VAR_RTOL)
    assert abs(cov[0, 1].item()) < COV_ATOL


@pytest.mark.parametrize(
    "kind,eta,shift",
    [("dance", 0.4, 1.0), ("dance", 0.4, 3.0), ("flow", 0.7, 1.0), ("flow", 0.7, 3.0)],
)
def test_sde_samples_the_target_distribution(kind: str, eta: float, shift: float) -> None:
    _assert_matches_target(*_sample(kind, eta, shift))


@pytest.mark.parametrize("kind,eta", [("dance", 0.4), ("flow", 0.7)])
@pytest.mark.parametrize("v_scale", [0.5, 0.9])
def test_wrong_velocity_fails_the_same_tolerance(kind: str, eta: float, v_scale: float) -> None:
    mean, cov = _sample(kind, eta, 1.0, v_scale=v_scale)
    with pytest.raises(AssertionError):
        _assert_matches_target(mean, cov)


def test_sde_and_ode_give_the_same_final_distribution() -> None:
    mean_ode, cov_ode = _sample("dance", 0.0, 1.0)
    _assert_matches_target(mean_ode, cov_ode)
    for kind, eta in [("dance", 0.4), ("flow", 0.7)]:
        mean_sde, cov_sde = _sample(kind, eta, 1.0, seed=1)
        torch.testing.assert_close(mean_sde, mean_ode, atol=MEAN_ATOL, rtol=0)
        torch.testing.assert_close(cov_sde, cov_ode, atol=COV_ATOL + 0.03, rtol=VAR_RTOL)


def _release_flux_step(x, v, sigma, sigma_next, eta, prev):
    """The released code's ``flux_step`` (Safeoffellow/Customized-GRPO,
    train/train_customized_grpo.py) with ``sde_solver=True``, transcribed: its mean through
    the score estimate, and its log-prob, whose ``- log(std) - log sqrt(2 pi)`` line is a
    separate statement there and so never subtracted."""
    dsigma = sigma_next - sigma
    x0 = x - sigma * v
    score = -(x - x0 * (1 - sigma)) / sigma**2
    mean = x + dsigma * v + (-0.5 * eta**2 * score) * dsigma
    std = eta * math.sqrt(sigma - sigma_next)
    log_prob = (-((prev - mean) ** 2) / (2 * std**2)).mean(dim=(1, 2, 3))
    return mean, log_prob


@pytest.mark.parametrize("sigma,sigma_next", [(1.0, 0.96), (0.5, 0.45), (0.111, 0.0)])
def test_dance_step_is_the_released_step_and_its_ratio(sigma: float, sigma_next: float) -> None:
    """sampler.kind=dance has the release's mean; the log-prob differs from the release's
    only by the constant -log(std) - log sqrt(2 pi) it drops (a bug there, kept fixed
    here), so the PPO ratio of two velocities is the release's."""
    g = torch.Generator().manual_seed(3)
    x, v, v_new = (torch.randn(2, 4, 3, 3, generator=g, dtype=torch.float64) for _ in range(3))
    prev, lp, mean, std = sde_step(
        x, v, sigma, sigma_next=sigma_next, eta=0.4, generator=g, kind="dance"
    )
    ref_mean, ref_lp = _release_flux_step(x, v, sigma, sigma_next, 0.4, prev)
    torch.testing.assert_close(mean, ref_mean)
    const = -math.log(float(std)) - 0.5 * math.log(2 * math.pi)
    torch.testing.assert_close(lp, ref_lp + const)
    lp_new = sde_step(
        x, v_new, sigma, sigma_next=sigma_next, eta=0.4, prev_sample=prev, kind="dance"
    )[1]
    ref_new = _release_flux_step(x, v_new, sigma, sigma_next, 0.4, prev)[1]
    torch.testing.assert_close(torch.exp(lp_new - lp), torch.exp(ref_new - ref_lp))
