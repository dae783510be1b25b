"""``sampler.ode_solver`` in the rollouts and the evaluation: which steps it changes, where
the multistep history starts afresh, and that the SDE steps and their log-probs stay the
SDE's."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
import torch

from cgrpo.data.base import EmbeddedData
from cgrpo.eval.config import EvalConfig
from cgrpo.eval.evaluator import EvalPairs, build_evaluator
from cgrpo.eval.protocol import evaluator_for
from cgrpo.policies.embedded import EmbeddedPolicy
from cgrpo.run import build
from cgrpo.sampling.ode_solvers import dpm2m_step, heun_step
from cgrpo.sampling.rollout import sample_groups, sample_ode
from cgrpo.sampling.sde import clean_prediction, euler_step, sde_step, sigma_schedule
from tests.conftest import fast_config


@pytest.fixture()
def setup(tiny_weights: Path):
    policy = EmbeddedPolicy(weights=tiny_weights)
    torch.manual_seed(1)  # a non-zero output layer, so that samples depend on the model
    torch.nn.init.normal_(policy.model.head[-1].weight, std=0.05)
    refs, prompts = EmbeddedData().sample(3, random.Random(0))
    return policy, policy.encode_condition(refs, prompts)


class Counting:
    """The wrapped policy, counting its velocity passes (samples x passes)."""

    def __init__(self, policy) -> None:  # noqa: ANN001
        self._policy, self.passes = policy, 0

    def velocity(self, x, sigma, condition):  # noqa: ANN001, ANN201
        self.passes += x.shape[0]
        return self._policy.velocity(x, sigma, condition)

    def __getattr__(self, name: str) -> object:
        return getattr(self._policy, name)


class Curved(Counting):
    """The wrapped policy plus ``sigma^2 x``: trajectories that bend, so that a
    second-order step differs clearly from Euler's (the tiny model's velocity barely
    changes from step to step)."""

    def velocity(self, x, sigma, condition):  # noqa: ANN001, ANN201
        bend = sigma.reshape(-1, *([1] * (x.ndim - 1))) ** 2 * x
        return super().velocity(x, sigma, condition) + bend


def _v(policy, x, sigma: float, cond):  # noqa: ANN001, ANN202
    return policy.velocity(x, torch.full((x.shape[0],), sigma), cond)


def test_sample_ode_dpm2m_is_the_multistep_loop(setup) -> None:
    policy, cond = setup
    noise = torch.randn(3, *policy.latent_shape(), generator=torch.Generator().manual_seed(0))
    sig = sigma_schedule(5)
    x, prev = noise, None
    for t in range(5):
        s, sn = float(sig[t]), float(sig[t + 1])
        v = _v(policy, x, s, cond)
        x0 = clean_prediction(x, v, s)
        if prev is None or sn == 0:
            x = euler_step(x, v, s, sigma_next=sn)
        else:
            x = dpm2m_step(x, x0, s, sigma_next=sn, x0_prev=prev, sigma_prev=float(sig[t - 1]))
        prev = x0
    got = sample_ode(policy, cond, sig, noise=noise, solver="dpm2m")
    torch.testing.assert_close(got, x, rtol=0, atol=1e-6)
    # micro-batches do not change the images (up to the model's batch rounding); the
    # solver does
    split = sample_ode(policy, cond, sig, noise=noise, solver="dpm2m", micro_batch_size=2)
    torch.testing.assert_close(split, got, rtol=0, atol=1e-6)
    assert (got - sample_ode(policy, cond, sig, noise=noise)).abs().max() > 1e-4


def test_heun_takes_two_passes_per_step_but_the_last(setup) -> None:
    policy, cond = setup
    noise = torch.randn(3, *policy.latent_shape(), generator=torch.Generator().manual_seed(0))
    sig = sigma_schedule(4)
    for solver, passes in (("euler", 4), ("dpm2m", 4), ("heun", 7)):
        counting = Counting(policy)
        out = sample_ode(counting, cond, sig, noise=noise, solver=solver)
        assert counting.passes == 3 * passes and torch.isfinite(out).all()
    # the first Heun step by hand
    s, sn = float(sig[0]), float(sig[1])
    v = _v(policy, noise, s, cond)
    v_pred = _v(policy, euler_step(noise, v, s, sigma_next=sn), sn, cond)
    x1 = heun_step(noise, v, s, sigma_next=sn, velocity_next=v_pred)
    one = sample_ode(policy, cond, sig[:2], noise=noise, solver="heun")
    torch.testing.assert_close(one, x1, rtol=0, atol=1e-6)


@pytest.mark.parametrize("same_noise", [True, False])
def test_rollout_history_starts_afresh_after_an_sde_step(setup, same_noise: bool) -> None:
    """ODE x3, SDE, ODE x3: steps 0 and 1 are first order (no history; a history at sigma 1
    has lambda = -inf), step 2 uses step 1's x0_hat (in the shared prefix with same_noise);
    step 4, just after the SDE step, is Euler's; step 5 uses step 4's; step 6 (to sigma 0)
    is Euler's. The SDE step's recorded log-prob re-scores exactly."""
    policy, cond = setup
    policy = Curved(policy)
    sig = sigma_schedule(7)
    mask = [False, False, False, True, False, False, False]
    roll = sample_groups(
        policy, cond, 2, sigmas=sig, eta=0.7, kind="flow", same_noise=same_noise,
        generator=torch.Generator().manual_seed(0), sde_mask=mask, ode_solver="dpm2m",
    )  # fmt: skip
    lat, c = roll.latents, roll.condition
    s = [float(x) for x in sig]
    v = [_v(policy, lat[t], s[t], c) for t in range(7)]
    x0 = [clean_prediction(lat[t], v[t], s[t]) for t in range(7)]

    def euler(t: int) -> torch.Tensor:
        return euler_step(lat[t], v[t], s[t], sigma_next=s[t + 1])

    def dpm(t: int) -> torch.Tensor:
        return dpm2m_step(lat[t], x0[t], s[t], sigma_next=s[t + 1], x0_prev=x0[t - 1],
                          sigma_prev=s[t - 1])  # fmt: skip

    want = {0: euler(0), 1: euler(1), 2: dpm(2), 4: euler(4), 5: dpm(5), 6: euler(6)}
    for t, w in want.items():
        torch.testing.assert_close(lat[t + 1], w, rtol=0, atol=1e-5, msg=f"step {t}")
    # the second-order steps are not Euler's (by far more than the tolerance)
    for t in (2, 5):
        assert (lat[t + 1] - euler(t)).abs().max() > 1e-2, t
    assert roll.sde_steps == (3,) and torch.isnan(roll.log_probs[[0, 1, 2, 4, 5, 6]]).all()
    _, logp, _, _ = sde_step(
        lat[3], v[3], s[3], sigma_next=s[4], eta=0.7, kind="flow", prev_sample=lat[4]
    )
    torch.testing.assert_close(logp, roll.log_probs[3], rtol=0, atol=1e-5)


def test_rollout_solver_leaves_an_all_sde_rollout_alone(setup) -> None:
    """With SDE on every step there is nothing for the solver to do: the same rollout."""
    policy, cond = setup
    runs = [
        sample_groups(
            policy,
            cond,
            2,
            sigmas=sigma_schedule(4),
            eta=0.4,
            generator=torch.Generator().manual_seed(0),
            ode_solver=solver,
        )  # fmt: skip
        for solver in ("euler", "dpm2m", "heun")
    ]
    for other in runs[1:]:
        assert torch.equal(other.latents, runs[0].latents)
        assert torch.equal(other.log_probs, runs[0].log_probs)
    with pytest.raises(ValueError, match="unknown ODE solver"):
        sample_groups(policy, cond, 2, sigmas=sigma_schedule(4), eta=0.4, ode_solver="rk4")


def test_evaluator_takes_the_runs_solver_unless_eval_sets_one(
    tmp_path: Path, tiny_weights: Path
) -> None:
    pairs = EvalPairs.from_lists(torch.rand(2, 3, 8, 8), ["a", "b"], ["s", "t"])
    for run_key in ("euler", "dpm2m"):
        cfg = fast_config(tmp_path, tiny_weights, f"sampler.ode_solver={run_key}")
        rewards = build.build_rewards(cfg)
        assert build_evaluator(cfg, pairs, rewards).solver == run_key
        for key, want in ((None, run_key), ("heun", "heun")):
            ev = evaluator_for(EvalConfig(ode_solver=key), cfg, pairs, metrics=rewards, shift=1)
            assert ev.solver == want
    with pytest.raises(ValueError, match="ode_solver"):
        fast_config(tmp_path, tiny_weights, "sampler.ode_solver=rk4")
